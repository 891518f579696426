"""Truncated SVD (plain or data-aware) of a dense matrix into LowRankLinear's factors U, V."""

from __future__ import annotations

import math

import numpy as np

from ._common import _array, _check_int, _check_reg, _leading_left
from .calibration import _calibration_rows

__all__ = ["svd"]


def _linear_target(W, X, reg):
    """A with A A^T = W (C + ridge) W^T, C = X^T X / n: the matrix whose leading left singular
    vectors span the output subspace that keeps most of E||W x||^2."""
    reg = _check_reg(reg)
    n, d = X.shape
    C0 = X.T @ X / n
    scale = float(np.trace(C0)) / d
    if not scale > 0:
        raise ValueError("calibration inputs are all zero: no output error to minimize")
    lam = reg * scale
    if n <= d:
        return np.hstack([W @ X.T / math.sqrt(n), math.sqrt(lam) * W])
    if lam == 0:  # reg=0: no ridge, C0 may be singular (no Cholesky): its symmetric square root
        e, Q = np.linalg.eigh(C0)
        return W @ (Q * np.sqrt(np.maximum(e, 0.0)))
    L = np.linalg.cholesky(C0 + lam * np.eye(d))
    return W @ L


def _split(Ur, W):
    """U = Ur D, V = D^-1 Ur^T W with D balancing the column norms of U and the row norms of V
    (for the plain SVD this is U sqrt(s), sqrt(s) V^T: the singular values split evenly)."""
    P = Ur.T @ W
    d = np.sqrt(np.linalg.norm(P, axis=1))
    d[d == 0] = 1.0
    return Ur * d, P / d[:, None]


def _svd64(W, rank, X=None, reg=1e-6):
    if X is None:
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        r = np.sqrt(s[:rank])
        return U[:, :rank] * r, r[:, None] * Vt[:rank]
    return _split(_leading_left(_linear_target(W, X, reg), rank), W)


def svd(W, rank, *, calibration=None, reg=1e-6):
    """Rank-`rank` factors (U (out, rank), V (rank, in)) of a matrix W (out, in), float32.

    Without calibration: the truncated SVD W ~ U_r diag(s_r) V_r^T (optimal in the Frobenius
    and spectral norms, Eckart-Young), split evenly: U = U_r sqrt(s_r), V = sqrt(s_r) V_r^T.

    With ``calibration=X`` (n, in) (or any (..., in)): minimizes the output error
    ||(W - U V) X^T||_F instead. With C = X^T X / n + ridge (reg times the mean eigenvalue; a
    tie-break for directions X does not reach), the optimum is U V = P W, P the projector on
    the leading left singular vectors of W C^(1/2) (computed as W L, L the Cholesky factor of C,
    or [W X^T / sqrt(n), sqrt(ridge) W] when n <= in): nothing is inverted. U and V are balanced
    (equal column/row norms).

    rank must be an integer in [1, min(out, in)] (ValueError otherwise); reg a finite number >= 0
    (0: no ridge).
    """
    W = _array(W, "W", 2)
    rank = _check_int(rank, "rank", 1, min(W.shape), f"the matrix rank bound min{W.shape}")
    X = None if calibration is None else _calibration_rows(calibration, W.shape[1])
    U, V = _svd64(W, rank, X, reg)
    return U.astype(np.float32), V.astype(np.float32)
