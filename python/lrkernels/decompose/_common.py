"""Checks and linear algebra the decompositions share (private to lrkernels.decompose)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..rank import _base as _rank

_TINY = 1e-300


class ConvergenceWarning(UserWarning):
    """An iterative decomposition diverged (error rising, non-finite, or degenerate components);
    the best iterate found is returned."""


class CalibrationWarning(UserWarning):
    """The calibration data are too few for a reliable data-aware fit (fewer positions than a few
    times the layer's input dimension): the fit may overfit them."""


# Input checks: the rank module's, so that every message reads the same.
_array = _rank._real_array
_check_int = _rank._check_int


def _pair(value, name, minimum=0):
    """An int >= minimum or a pair of them (the layers re-check stride/padding/dilation; the
    calibration needs them first: stride and dilation >= 1, else a division by zero)."""
    if np.ndim(value) == 0:
        v = _check_int(value, name, minimum)
        return (v, v)
    items = tuple(value)
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return tuple(_check_int(v, name, minimum) for v in items)


def _check_layout(layout):
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def _check_reg(reg):
    """reg (the ridge of the calibration statistics) as a float, finite and >= 0."""
    if isinstance(reg, (bool, np.bool_)) or not isinstance(reg, numbers.Real):
        raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
    if not (reg >= 0 and math.isfinite(reg)):
        raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
    return float(reg)


def _check_iter(n_iter_max, tol):
    n_iter_max = _check_int(n_iter_max, "n_iter_max", 0)
    if not (isinstance(tol, numbers.Real) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return n_iter_max, float(tol)


def _leading_left(A, r):
    """The r leading left singular vectors of A (orthonormal columns), completed to r columns
    deterministically when A has fewer than r singular vectors. A wide A (the unfoldings of a
    conv weight are) goes through the eigenvectors of A A^T: much faster, and the leading
    subspace is as accurate as the reconstruction needs."""
    m, n = A.shape
    if n >= m:
        e, Q = np.linalg.eigh(A @ A.T)
        return Q[:, ::-1][:, :r]
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    if r <= U.shape[1]:
        return U[:, :r]
    Q, _ = np.linalg.qr(np.hstack([U, np.eye(A.shape[0])]))
    Q[:, : U.shape[1]] = U
    return Q[:, :r]


def _rel_err(T, That, norm):
    return float(np.linalg.norm((T - That).ravel()) / norm) if norm > 0 else 0.0
