"""Asymmetric layer targets (Zhang et al. 2016, "Accelerating Very Deep Convolutional Networks
for Classification and Detection", section 3.2): a layer of the model being compressed sees the
*compressed* model's inputs X_c, but should reproduce the *dense* model's output W X_d. The least
squares weight W_eff = argmin ||W X_d - W' X_c||^2 + lam ||W' - W||^2 (shrunk toward the dense
weight, so with little data it falls back to the dense weight) is computed here; the layer is
then factorized data-aware from W_eff on X_c: since X_c W_eff^T is the projection of the target
on the span of X_c, the rank-r fit of W_eff in the X_c metric is the rank-r fit of the target
(reduced-rank regression). The ridge lam is chosen by 4-fold cross-validated error.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Ridges tried, relative to the mean eigenvalue of X_c^T X_c / n.
_REG_GRID = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Rows (pixels) of a convolution used for the regression: enough for a well-posed solve (many
# more than the in_channels x kh x kw unknowns of a row of W_eff) at a bounded cost.
_MAX_CONV_ROWS = 8192


def _solve(G, R, W, lam):
    """W_eff with W_eff^T = (G + lam I)^-1 (R + lam W^T); G = X^T X, R = X^T Y."""
    d = G.shape[0]
    A = G + lam * np.eye(d)
    return np.linalg.solve(A, R + lam * W.T).T


def _fit(X, Y, W):
    """W_eff for rows X (n, d) -> targets Y (n, out), shrunk toward W (out, d); the ridge by
    4-fold cross-validation (one eigendecomposition per fold serves every ridge of the grid).
    Returns (W_eff, details)."""
    n, d = X.shape
    scale = float(np.einsum("ij,ij->", X, X)) / max(n * d, 1) or 1.0
    G, R = X.T @ X, X.T @ Y
    folds = np.array_split(np.arange(n), 4) if n >= 8 else []
    errors = np.zeros(len(_REG_GRID))
    for held in folds:
        Xh, Yh = X[held], Y[held]
        evals, Q = np.linalg.eigh(G - Xh.T @ Xh)
        Rk = R - Xh.T @ Yh
        for i, alpha in enumerate(_REG_GRID):
            lam = alpha * scale * (n - len(held))
            Wk_T = Q @ ((Q.T @ (Rk + lam * W.T)) / (np.maximum(evals, 0) + lam)[:, None])
            errors[i] += float(np.sum((Yh - Xh @ Wk_T) ** 2))
    alpha = _REG_GRID[int(np.argmin(errors))] if folds else _REG_GRID[-1]
    W_eff = _solve(G, R, W, alpha * scale * n)
    return W_eff, {"asymmetric_reg": alpha, "asymmetric_rows": n}


def asymmetric_target(module, x_dense, x_compressed):
    """A copy of ``module`` (nn.Linear or nn.Conv2d, groups=1) whose weight is W_eff for the
    dense inputs ``x_dense`` and the compressed model's inputs ``x_compressed`` (float arrays as
    compress captures them: rows (n, in) / images (N, C, H, W), aligned one to one), and the
    details of the fit. ValueError when the captures do not align."""
    xd = np.asarray(x_dense, np.float64)
    xc = np.asarray(x_compressed, np.float64)
    if xd.shape != xc.shape:
        raise ValueError(
            f"asymmetric fit: dense inputs {xd.shape} and compressed inputs {xc.shape} differ"
        )
    W = module.weight.detach().double().cpu().numpy()
    if isinstance(module, nn.Linear):
        X, Y = xc, xd @ W.T
        W_eff, details = _fit(X, Y, W)
    else:
        conv = dict(
            kernel_size=module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,
            stride=module.stride,
        )
        with torch.no_grad():
            td = torch.from_numpy(xd)
            tc = torch.from_numpy(xc)
            Y = F.conv2d(
                td, torch.from_numpy(W), None, module.stride, module.padding, module.dilation
            )
            Y = Y.permute(0, 2, 3, 1).reshape(-1, W.shape[0])
            P = F.unfold(tc, **conv).permute(0, 2, 1).reshape(-1, W[0].size)
        if P.shape[0] > _MAX_CONV_ROWS:  # an even subset of the pixels, the same for both
            pick = torch.from_numpy(
                np.linspace(0, P.shape[0] - 1, _MAX_CONV_ROWS).round().astype(np.int64)
            )
            P, Y = P[pick], Y[pick]
        W_eff, details = _fit(P.numpy(), Y.numpy(), W.reshape(W.shape[0], -1))
        W_eff = W_eff.reshape(W.shape)
    target = copy.deepcopy(module)
    with torch.no_grad():
        target.weight.copy_(torch.from_numpy(W_eff).to(target.weight.dtype))
    return target, details


def asymmetric_error(dense, factorized, x_dense, x_compressed, rows=256):
    """||factorized(X_c) - dense(X_d)|| / ||dense(X_d)|| on the first ``rows`` items."""
    with torch.no_grad():
        xd = torch.as_tensor(np.asarray(x_dense[:rows]), dtype=torch.float32)
        xc = torch.as_tensor(np.asarray(x_compressed[:rows]), dtype=torch.float32)
        yd = dense(xd).double()
        yf = factorized(xc).double()
    denom = float(torch.linalg.vector_norm(yd))
    return float(torch.linalg.vector_norm(yf - yd)) / denom if denom > 0 else 0.0
