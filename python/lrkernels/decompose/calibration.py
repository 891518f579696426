"""Calibration data for the data-aware decompositions: input checks, second moments, and the
conv calibration object (channel whitening, streamed least squares on receptive-field patches).

Public: channel_second_moment(X, layout), patch_second_moment(X, kernel_size, stride, padding,
dilation, layout).
"""

from __future__ import annotations

import math

import numpy as np

from ..reference import _output_hw, _windows
from ._common import _array, _check_layout, _check_reg, _leading_left, _pair

__all__ = ["channel_second_moment", "patch_second_moment"]


def _calibration_rows(X, in_features):
    """Calibration inputs of a linear layer as float64 (n, in_features)."""
    X = _array(X, "calibration")
    if X.ndim == 0:  # a scalar has no feature axis
        raise ValueError(
            f"calibration must be an array of inputs (n, {in_features}), got a scalar {X.item()!r}"
        )
    if X.shape[-1] != in_features:
        raise ValueError(
            f"calibration has {X.shape[-1]} features in its last axis (shape {X.shape}), "
            f"the weight expects {in_features}"
        )
    return X.reshape(-1, in_features)


def _calibration_images(X, in_channels, layout):
    """Calibration images as float64 (N, Cin, H, W)."""
    X = _array(X, "calibration", 4)
    X = X if layout == "NCHW" else X.transpose(0, 3, 1, 2)
    if X.shape[1] != in_channels:
        raise ValueError(
            f"calibration images have {X.shape[1]} channels ({layout} shape "
            f"{X.shape if layout == 'NCHW' else X.transpose(0, 2, 3, 1).shape}), "
            f"the weight expects {in_channels}"
        )
    return X


# --------------------------------------------------------------------------------------------
# second moments of the inputs (the statistics data-aware factorization needs)
# --------------------------------------------------------------------------------------------


def channel_second_moment(X, layout="NCHW"):
    """C = E[x x^T] over all pixels of images X, x the Cin-vector of one pixel: (Cin, Cin)."""
    _check_layout(layout)
    X = _array(X, "calibration", 4)
    X = X if layout == "NCHW" else X.transpose(0, 3, 1, 2)
    pix = X.transpose(0, 2, 3, 1).reshape(-1, X.shape[1])
    return pix.T @ pix / pix.shape[0]


def _patches(X, kernel, stride, padding, dilation):
    """im2col of float64 (N, Cin, H, W): rows (n, i, j), columns (c, ky, kx) like weight[o]."""
    n, cin, h, w = X.shape
    (kh, kw), (ph, pw) = kernel, padding
    ho, wo = _output_hw(
        (h, w),
        kernel,
        stride,
        padding,
        dilation,
        lambda ho, wo: (
            f"calibration images of size {(h, w)} give no output position for kernel {kernel}"
        ),
    )
    xp = np.pad(X, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, ho, wo, cin, kh, kw))
    for ky, kx, window in _windows(xp, kernel, stride, dilation, (ho, wo)):
        cols[:, :, :, :, ky, kx] = window.transpose(0, 2, 3, 1)
    return cols.reshape(n * ho * wo, cin * kh * kw)


def patch_second_moment(X, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """E[p p^T] over the receptive-field patches p (Cin kh kw, ordered like weight[o]) of X."""
    _check_layout(layout)
    X = _array(X, "calibration", 4)
    X = X if layout == "NCHW" else X.transpose(0, 3, 1, 2)
    geo = [
        _pair(v, nm, lo)
        for v, nm, lo in (
            (kernel_size, "kernel_size", 1),
            (stride, "stride", 1),
            (padding, "padding", 0),
            (dilation, "dilation", 1),
        )
    ]
    d = X.shape[1] * geo[0][0] * geo[0][1]
    C = np.zeros((d, d))
    count = 0
    step = max(1, 8192 // max(1, X.shape[2] * X.shape[3]))
    for i in range(0, X.shape[0], step):  # in chunks of images: bounded memory
        P = _patches(X[i : i + step], *geo)
        C += P.T @ P
        count += P.shape[0]
    return C / count


def _ridge(C, reg):
    """C + reg * (mean eigenvalue) * I; ValueError if C is zero (calibration all zeros)."""
    scale = float(np.trace(C)) / C.shape[0]
    if not scale > 0:
        raise ValueError("calibration inputs are all zero: no output error to minimize")
    return C + (reg * scale) * np.eye(C.shape[0])


def _sqrt_and_inv_sqrt(C):
    """Symmetric square root of an SPD matrix and its inverse."""
    e, Q = np.linalg.eigh(C)
    e = np.maximum(e, e.max() * 1e-15)
    r = np.sqrt(e)
    return (Q * r) @ Q.T, (Q / r) @ Q.T


class _Calib:
    """Conv calibration images: the channel whitening, and streamed least-squares statistics on
    the receptive-field patches (in chunks of images: bounded memory, no (Cin kh kw)^2 matrix)."""

    def __init__(self, X, weight_shape, stride, padding, dilation, layout, reg):
        cout, cin, kh, kw = weight_shape
        self.X = _calibration_images(X, cin, _check_layout(layout))
        self.shape = tuple(weight_shape)
        self.geo = ((kh, kw), stride, padding, dilation)
        self.reg = _check_reg(reg)
        pix = self.X.transpose(0, 2, 3, 1).reshape(-1, cin)
        self.C = _ridge(pix.T @ pix / pix.shape[0], reg)
        self.S, self.Sinv = _sqrt_and_inv_sqrt(self.C)
        # ValueError now if there is no output position; the patch count (n Ho Wo) otherwise
        self.positions = _patches(self.X[:1], *self.geo).shape[0] * self.X.shape[0]

    def subset(self, index, reg):
        """The calibration of the images X[index] with ridge reg (held-out splits, refits)."""
        return _Calib(self.X[index], self.shape, *self.geo[1:], "NCHW", reg)

    def _chunks(self, rows=2048):
        n, _, h, w = self.X.shape
        step = max(1, rows // max(1, h * w))
        for i in range(0, n, step):
            yield self.X[i : i + step]

    def whiten(self, T):
        """T x_1 S: weight[o, :, y, x] S, whose Frobenius error is the output error when the
        taps see uncorrelated inputs with channel second moment C."""
        return np.einsum("ocyx,cd->odyx", T, self.S, optimize=True)

    def output_error(self, T, That):
        """||y^ - y|| / ||y|| over the calibration outputs (no bias), y = T * x, y^ = That * x."""
        A, B = T.reshape(T.shape[0], -1), That.reshape(T.shape[0], -1)
        num = den = 0.0
        for xc in self._chunks():
            P = _patches(xc, *self.geo)
            Y = P @ A.T
            num += float(np.sum((P @ B.T - Y) ** 2))
            den += float(np.sum(Y**2))
        return math.sqrt(num / den) if den > 0 else 0.0

    def _features_fit(self, T, features):
        """Least squares of the dense outputs y on features(x chunk) -> (n, F): returns M (Cout, F)
        minimizing sum ||y - M f||^2 (ridge-regularized), and the feature second moment."""
        A = T.reshape(T.shape[0], -1)
        G = None
        for xc in self._chunks():
            Fc = features(xc)
            Y = _patches(xc, *self.geo) @ A.T
            if G is None:
                G, FY = Fc.T @ Fc, Fc.T @ Y
            else:
                G += Fc.T @ Fc
                FY += Fc.T @ Y
        G = _ridge(G, self.reg)
        return np.linalg.solve(G, FY).T, G

    def refit_tucker(self, T, first, r_out):
        """Given `first` (orthonormal rows), the (core, last) minimizing the output error on the
        calibration images: least squares of the output on the patches of t = first x, then the
        data-aware rank-r_out projection (the exact optimum for this first, up to the ridge)."""
        kh, kw = self.geo[0]

        def features(xc):
            return _patches(np.einsum("nchw,rc->nrhw", xc, first, optimize=True), *self.geo)

        M, G = self._features_fit(T, features)  # M: (Cout, r_in kh kw)
        last = _leading_left(M @ np.linalg.cholesky(G), r_out)
        core = (last.T @ M).reshape(r_out, first.shape[0], kh, kw)
        return core, last

    def refit_cp_last(self, T, first, vertical, horizontal):
        """Given the first three CP factors, the `last` minimizing the output error (least squares
        of the outputs on the R depthwise outputs)."""
        r = first.shape[0]
        taps = np.einsum("ry,rx->ryx", vertical, horizontal).reshape(r, -1)

        def features(xc):
            Pt = _patches(np.einsum("nchw,rc->nrhw", xc, first, optimize=True), *self.geo)
            return np.einsum("nrk,rk->nr", Pt.reshape(Pt.shape[0], r, -1), taps)

        return self._features_fit(T, features)[0]


def _make_calib(calibration, shape, stride, padding, dilation, layout, reg):
    """The calibration of a conv weight of `shape`, or None without calibration data."""
    if calibration is None:
        return None
    return _Calib(
        calibration,
        shape,
        _pair(stride, "stride", 1),
        _pair(padding, "padding"),
        _pair(dilation, "dilation", 1),
        layout,
        reg,
    )
