"""Decompose trained dense weights into the factors of the lrkernels layers (numpy only).

Decompositions (float64 inside, float32 factors out, deterministic for a given seed)
----------------------------------------------------------------------------------
svd(W, rank)                 -> U (out, rank), V (rank, in)          for LowRankLinear
tucker2(weight, ranks)       -> first (R_in, Cin), core (R_out, R_in, kh, kw), last (Cout, R_out)
                                                                      for TuckerConv2d
cp(weight, rank)             -> first (R, Cin), vertical (R, kh), horizontal (R, kw), last (Cout, R)
                                                                      for CPConv2d

Each takes ``calibration=X`` (sample inputs of the layer) to minimize the error of the layer's
outputs on X instead of the weight error ("data-aware" factorization, see `svd`).

Layers from dense weights (exactly one criterion: rank(s)=, energy=, ratio=, vbmf=True)
--------------------------------------------------------------------------------------
LowRankLinear.from_dense(W, bias=None, *, rank=None, energy=None, ratio=None, vbmf=False,
                         calibration=None)
TuckerConv2d.from_dense(weight, bias=None, *, ranks=None, energy=None, ratio=None, vbmf=False,
                        calibration=None, stride=1, padding=0, dilation=1, layout="NCHW")
CPConv2d.from_dense(weight, bias=None, *, rank=None, energy=None, ratio=None, calibration=None,
                    stride=1, padding=0, dilation=1, layout="NCHW")

The same as functions: `lowrank_linear_from_dense`, `tucker_conv2d_from_dense`,
`cp_conv2d_from_dense`; `linear_factors`, `tucker2_factors`, `cp_factors` return the factors and
the :class:`lrkernels.rank.RankChoice` that says which rank was used and why. See
:mod:`lrkernels.rank` for the criteria and :mod:`lrkernels.report` for the error/size report.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings

import numpy as np

from . import _core
from . import rank as _rank
from .rank import RankChoice, RankWarning, unfold

__all__ = [
    "ConvergenceWarning",
    "RankChoice",
    "RankWarning",
    "channel_second_moment",
    "cp",
    "cp_conv2d_from_dense",
    "cp_factors",
    "linear_factors",
    "lowrank_linear_from_dense",
    "patch_second_moment",
    "svd",
    "tucker2",
    "tucker2_factors",
    "tucker_conv2d_from_dense",
]

_TINY = 1e-300


class ConvergenceWarning(UserWarning):
    """An iterative decomposition diverged (error rising, non-finite, or degenerate components);
    the best iterate found is returned."""


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------

_array = _rank._real_array
_check_int = _rank._check_int


def _pair(value, name):
    """An int >= 0 or a pair of them (stride/padding/dilation are re-checked by the layers)."""
    if np.ndim(value) == 0:
        v = _check_int(value, name, 0)
        return (v, v)
    items = tuple(value)
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return tuple(_check_int(v, name, 0) for v in items)


def _check_layout(layout):
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def _calibration_rows(X, in_features):
    """Calibration inputs of a linear layer as float64 (n, in_features)."""
    X = _array(X, "calibration")
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
    from . import reference as _ref

    n, cin, h, w = X.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho = _ref.output_size(h, kh, sh, ph, dh)
    wo = _ref.output_size(w, kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"calibration images of size {(h, w)} give no output position for kernel {kernel}, "
            f"stride {stride}, padding {padding}, dilation {dilation}"
        )
    xp = np.pad(X, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, ho, wo, cin, kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            sl = xp[
                :,
                :,
                ky * dh : ky * dh + sh * (ho - 1) + 1 : sh,
                kx * dw : kx * dw + sw * (wo - 1) + 1 : sw,
            ]
            cols[:, :, :, :, ky, kx] = sl.transpose(0, 2, 3, 1)
    return cols.reshape(n * ho * wo, cin * kh * kw)


def patch_second_moment(X, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """E[p p^T] over the receptive-field patches p (Cin kh kw, ordered like weight[o]) of X."""
    _check_layout(layout)
    X = _array(X, "calibration", 4)
    X = X if layout == "NCHW" else X.transpose(0, 3, 1, 2)
    geo = [
        _pair(v, nm)
        for v, nm in (
            (kernel_size, "kernel_size"),
            (stride, "stride"),
            (padding, "padding"),
            (dilation, "dilation"),
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


# --------------------------------------------------------------------------------------------
# SVD (LowRankLinear)
# --------------------------------------------------------------------------------------------


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


def _linear_target(W, X, reg):
    """A with A A^T = W (C + ridge) W^T, C = X^T X / n: the matrix whose leading left singular
    vectors span the output subspace that keeps most of E||W x||^2."""
    n, d = X.shape
    C0 = X.T @ X / n
    lam = reg * float(np.trace(C0)) / d
    if not lam > 0:
        raise ValueError("calibration inputs are all zero: no output error to minimize")
    if n <= d:
        return np.hstack([W @ X.T / math.sqrt(n), math.sqrt(lam) * W])
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

    rank must be an integer in [1, min(out, in)] (ValueError otherwise).
    """
    W = _array(W, "W", 2)
    rank = _check_int(rank, "rank", 1, min(W.shape), f"the matrix rank bound min{W.shape}")
    X = None if calibration is None else _calibration_rows(calibration, W.shape[1])
    U, V = _svd64(W, rank, X, reg)
    return U.astype(np.float32), V.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Tucker-2 (TuckerConv2d)
# --------------------------------------------------------------------------------------------


def _tucker_core(T, first, last):
    return np.einsum("ocyx,os,rc->sryx", T, last, first, optimize=True)


def _tucker_full(first, core, last):
    return np.einsum("os,sryx,rc->ocyx", last, core, first, optimize=True)


def _rel_err(T, That, norm):
    return float(np.linalg.norm((T - That).ravel()) / norm) if norm > 0 else 0.0


def _hooi(T, r_in, r_out, method, n_iter_max, tol):
    """HOSVD start, then HOOI sweeps; returns the best (first, last) seen and the info dict."""
    norm = float(np.linalg.norm(T.ravel()))
    last = _leading_left(unfold(T, 0), r_out)
    first = _leading_left(unfold(T, 1), r_in).T
    err = _rel_err(T, _tucker_full(first, _tucker_core(T, first, last), last), norm)
    errors = [err]
    best = (err, first, last)
    stop = "hosvd"
    if method == "hooi":
        stop = "n_iter_max"
        for _ in range(n_iter_max):
            if err <= 1e-14:
                stop = "exact"
                break
            Y = np.einsum("ocyx,rc->oryx", T, first, optimize=True)
            last = _leading_left(Y.reshape(T.shape[0], -1), r_out)
            Z = np.einsum("ocyx,os->scyx", T, last, optimize=True)
            first = _leading_left(unfold(Z, 1), r_in).T
            new = _rel_err(T, _tucker_full(first, _tucker_core(T, first, last), last), norm)
            errors.append(new)
            if new < best[0]:
                best = (new, first, last)
            if abs(err - new) <= tol * max(err, _TINY):
                stop = "tol"
                err = new
                break
            err = new
    info = {
        "errors": errors,
        "iterations": len(errors) - 1,
        "stop": stop,
        "hosvd_error": errors[0],
        "error": best[0],
    }
    return best[1], best[2], info


def _check_ranks(ranks, cin, cout):
    if np.ndim(ranks) == 0:
        ranks = (ranks, ranks)
    ranks = tuple(ranks)
    if len(ranks) != 2:
        raise ValueError(f"ranks must be an int or a pair (r_in, r_out), got {ranks!r}")
    r_in = _check_int(ranks[0], "r_in", 1, cin, f"Cin={cin} (r_in maps Cin -> r_in)")
    r_out = _check_int(ranks[1], "r_out", 1, cout, f"Cout={cout} (r_out maps r_out -> Cout)")
    return r_in, r_out


def _check_method(method):
    if method not in ("hooi", "hosvd"):
        raise ValueError(f"method must be 'hooi' or 'hosvd', got {method!r}")


def _check_iter(n_iter_max, tol):
    n_iter_max = _check_int(n_iter_max, "n_iter_max", 0)
    if not (isinstance(tol, numbers.Real) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return n_iter_max, float(tol)


class _Calib:
    """Conv calibration images: the channel whitening, and streamed least-squares statistics on
    the receptive-field patches (in chunks of images: bounded memory, no (Cin kh kw)^2 matrix)."""

    def __init__(self, X, weight_shape, stride, padding, dilation, layout, reg):
        cout, cin, kh, kw = weight_shape
        self.X = _calibration_images(X, cin, _check_layout(layout))
        self.geo = ((kh, kw), stride, padding, dilation)
        self.reg = reg
        pix = self.X.transpose(0, 2, 3, 1).reshape(-1, cin)
        self.C = _ridge(pix.T @ pix / pix.shape[0], reg)
        self.S, self.Sinv = _sqrt_and_inv_sqrt(self.C)
        _patches(self.X[:1], *self.geo)  # ValueError now if there is no output position

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
    return _Calib(calibration, shape, _pair(stride, "stride"), _pair(padding, "padding"),
                  _pair(dilation, "dilation"), layout, reg)


def _tucker2_64(T, r_in, r_out, method, n_iter_max, tol, calib):
    if calib is None:
        first, last, info = _hooi(T, r_in, r_out, method, n_iter_max, tol)
        core = _tucker_core(T, first, last)
    else:
        first_w, _, info = _hooi(calib.whiten(T), r_in, r_out, method, n_iter_max, tol)
        first = np.linalg.qr((first_w @ calib.Sinv).T)[0].T  # the same row space, orthonormal
        core, last = calib.refit_tucker(T, first, r_out)
        info["whitened_error"] = info.pop("error")
        info["output_error"] = calib.output_error(T, _tucker_full(first, core, last))
    norm = float(np.linalg.norm(T.ravel()))
    info["error"] = _rel_err(T, _tucker_full(first, core, last), norm)
    return first, core, last, info


def tucker2(
    weight,
    ranks,
    *,
    method="hooi",
    n_iter_max=100,
    tol=1e-7,
    seed=0,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    reg=1e-6,
    return_info=False,
):
    """Tucker-2 of a conv weight (Cout, Cin, kh, kw) on its two channel modes, float32 out.

    Returns (first (r_in, Cin), core (r_out, r_in, kh, kw), last (Cout, r_out)) with
    weight ~ sum_{s,r} last[:, s] core[s, r] first[r, :] (TuckerConv2d's factors); ranks is
    (r_in, r_out) (an int means both), r_in <= Cin, r_out <= Cout.

    method "hosvd": leading left singular vectors of the mode-1 (-> first) and mode-0 (-> last)
    unfoldings. method "hooi" (default): that start, then alternating updates of last and first
    until the relative error changes by <= tol (relative) or n_iter_max sweeps; the best iterate
    is kept, so the error is never larger than the HOSVD error. The computation is deterministic;
    `seed` is accepted for a signature uniform with `cp` and not needed.

    With ``calibration=X`` (images in `layout`, with the layer's stride/padding/dilation): the
    Cin mode is whitened with the channel second moment C (weight x_1 C^(1/2), HOOI on that, the
    row space of first mapped back), then core and last are fitted to minimize the output error
    on the receptive-field patches of X given first (least squares + data-aware projection).

    ``return_info=True`` also returns a dict: errors per sweep, stop reason, relative weight
    error, and the relative output error on X when calibrated.
    """
    T = _array(weight, "weight", 4)
    cout, cin, kh, kw = T.shape
    r_in, r_out = _check_ranks(ranks, cin, cout)
    _check_method(method)
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    calib = _make_calib(calibration, T.shape, stride, padding, dilation, layout, reg)
    first, core, last, info = _tucker2_64(T, r_in, r_out, method, n_iter_max, tol, calib)
    out = tuple(a.astype(np.float32) for a in (first, core, last))
    return (out + (info,)) if return_info else out


# --------------------------------------------------------------------------------------------
# CP (CPConv2d)
# --------------------------------------------------------------------------------------------


def _khatri_rao(mats):
    R = mats[0].shape[1]
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, R)
    return out


def _cp_solve(G, MT):
    """Least-squares ALS update: F = MT G^+ (G symmetric PSD, R x R)."""
    return np.linalg.lstsq(G, MT.T, rcond=None)[0].T


def _cp_full(factors):
    A = factors[0]
    return (A @ _khatri_rao(factors[1:]).T).reshape(tuple(f.shape[0] for f in factors))


def _cp_balance(factors):
    """Rescale the columns so that each component's norm is split evenly over the four factors."""
    norms = [np.linalg.norm(f, axis=0) for f in factors]
    w = np.prod(norms, axis=0)
    target = w ** (1.0 / len(factors))
    out = []
    for f, n in zip(factors, norms):
        scale = np.where(n > 0, target / np.where(n > 0, n, 1.0), 1.0)
        out.append(f * scale)
    return out, w


def _cp_init(T, R, rng):
    """SVD start: the R leading left singular vectors of each unfolding (seeded normal columns
    where a mode has fewer than R), the first factor scaled by its singular values."""
    factors = []
    for n in range(T.ndim):
        U, s, _ = np.linalg.svd(unfold(T, n), full_matrices=False)
        k = min(R, U.shape[1])
        F = U[:, :k] * (s[:k] if n == 0 else 1.0)
        if k < R:
            extra = rng.standard_normal((T.shape[n], R - k)) / math.sqrt(T.shape[n])
            F = np.hstack([F, extra * (s[0] if n == 0 and len(s) else 1.0)])
        factors.append(F)
    return factors


def _mttkrp(T, factors, n):
    """unfold(T, n) @ khatri_rao(the other factors), by contractions (no Khatri-Rao product: that
    is prod(other dims) x R, huge for the kh and kw modes)."""
    letters = "abcd"
    subs = [letters[m] + "r" for m in range(4) if m != n]
    ops = [factors[m] for m in range(4) if m != n]
    return np.einsum("abcd," + ",".join(subs) + "->" + letters[n] + "r", T, *ops, optimize=True)


def _cp_sweep(T, factors, R):
    """One ALS sweep: each factor in turn is the least-squares fit given the other three."""
    for n in range(4):
        G = np.ones((R, R))
        for m in range(4):
            if m != n:
                G *= factors[m].T @ factors[m]
        factors[n] = _cp_solve(G, _mttkrp(T, factors, n))
        if not np.all(np.isfinite(factors[n])):
            break
    return _cp_balance(factors)


def _cp_als(T, R, n_iter_max, tol, seed, degeneracy=1e4, linesearch=True):
    """CP-ALS with extrapolation (line search every other sweep, accepted only if it lowers the
    error; Bro 1998, Acar et al. 2011) and divergence detection; returns the best iterate."""
    norm = float(np.linalg.norm(T.ravel()))
    rng = np.random.default_rng(seed)
    factors = _cp_init(T, R, rng)
    errors = []
    best = None
    stop = "n_iter_max"
    rising = 0
    prev = None
    acc_pow, acc_fail = 2.0, 0

    def error_of(fs):
        if not all(np.all(np.isfinite(f)) for f in fs):
            return math.inf
        e = _rel_err(T, _cp_full(fs), norm)
        return e if math.isfinite(e) else math.inf

    for it in range(1, max(n_iter_max, 1) + 1):
        old = [f.copy() for f in factors]
        try:
            factors, weights = _cp_sweep(T, factors, R)
        except np.linalg.LinAlgError as exc:
            stop = f"diverged: the least-squares update failed ({exc})"
            errors.append(math.inf)
            break
        err = error_of(factors)
        if linesearch and math.isfinite(err) and it > 5 and it % 2 == 0:
            jump = it ** (1.0 / acc_pow)
            trial, tweights = _cp_balance([o + (f - o) * jump for o, f in zip(old, factors)])
            terr = error_of(trial)
            if terr < err:
                factors, weights, err, acc_fail = trial, tweights, terr, 0
            else:
                acc_fail += 1
                if acc_fail == 4:
                    acc_pow, acc_fail = acc_pow + 1.0, 0
        errors.append(err)
        if not math.isfinite(err):
            stop = "diverged: non-finite factors or error"
            break
        if norm > 0 and float(weights.max()) > degeneracy * norm:
            stop = (
                f"diverged: degenerate components (a component norm {weights.max():.3g} is "
                f"> {degeneracy:g} x ||weight||, i.e. components cancel each other)"
            )
            break
        if best is None or err < best[0]:
            best = (err, [f.copy() for f in factors])
        if prev is not None and err > prev * (1 + 1e-9) + 1e-15:
            rising += 1
            if rising >= 3:
                stop = "diverged: the error rose in 3 consecutive sweeps"
                break
        else:
            rising = 0
        if err <= 1e-14:
            stop = "exact"
            break
        if prev is not None and abs(prev - err) <= tol * max(prev, _TINY):
            stop = "tol"
            break
        prev = err
    if best is None:  # diverged on the first sweep: fall back on the start
        start = _cp_init(T, R, np.random.default_rng(seed))
        best = (_rel_err(T, _cp_full(start), norm), _cp_balance(start)[0])
    if stop.startswith("diverged"):
        warnings.warn(
            f"CP-ALS (rank {R}) {stop} after {len(errors)} sweeps; returning the best iterate "
            f"(relative error {best[0]:.4g})",
            ConvergenceWarning,
            stacklevel=3,
        )
    info = {
        "errors": errors,
        "iterations": len(errors),
        "stop": stop,
        "error": best[0],
        "diverged": stop.startswith("diverged"),
    }
    return best[1], info


def _max_cp_rank(shape):
    return int(np.prod(shape)) // max(shape)


def _cp_64(T, R, n_iter_max, tol, seed, calib):
    if calib is None:
        (last, first_t, vertical_t, horizontal_t), info = _cp_als(T, R, n_iter_max, tol, seed)
        first = first_t.T
    else:
        (last, first_w, vertical_t, horizontal_t), info = _cp_als(
            calib.whiten(T), R, n_iter_max, tol, seed
        )
        first = first_w.T @ calib.Sinv
        last = calib.refit_cp_last(T, first, vertical_t.T, horizontal_t.T)
        info["whitened_error"] = info.pop("error")
    factors = [last, first.T, vertical_t, horizontal_t]
    factors, _ = _cp_balance(factors)
    last, first_t, vertical_t, horizontal_t = factors
    That = _cp_full(factors)
    info["error"] = _rel_err(T, That, float(np.linalg.norm(T.ravel())))
    if calib is not None:
        info["output_error"] = calib.output_error(T, That)
    return (first_t.T, vertical_t.T, horizontal_t.T, last), info


def cp(
    weight,
    rank,
    *,
    n_iter_max=500,
    tol=1e-9,
    seed=0,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    reg=1e-6,
    return_info=False,
):
    """CP decomposition of a conv weight (Cout, Cin, kh, kw) into CPConv2d's factors, float32.

    Returns (first (R, Cin), vertical (R, kh), horizontal (R, kw), last (Cout, R)) with
    weight[o, c, y, x] ~ sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c].

    CP-ALS on the 4-way tensor from an SVD start (leading left singular vectors of each
    unfolding; columns beyond a mode's size are normal with the given `seed`). Each sweep solves
    the four least-squares problems; the components are then rebalanced (equal norms across the
    four factors). Stops when the relative error changes by <= tol (relative), reaches ~0, or after
    n_iter_max sweeps. Divergence - a non-finite error, the error rising 3 sweeps in a row, or
    degenerate components (a component norm > 1e4 ||weight||: terms that cancel, which float32
    kernels cannot reproduce) - stops it with a :class:`ConvergenceWarning`; the best iterate is
    returned. rank must be in [1, prod(shape) / max(shape)] (the largest CP rank there is).

    With ``calibration=X`` (images in `layout`): ALS on the Cin-whitened weight, first mapped
    back, then `last` refitted by least squares on the receptive-field patches of X.
    """
    T = _array(weight, "weight", 4)
    R = _check_int(
        rank, "rank", 1, _max_cp_rank(T.shape), f"the largest CP rank of a {T.shape} tensor"
    )
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    calib = _make_calib(calibration, T.shape, stride, padding, dilation, layout, reg)
    factors, info = _cp_64(T, R, n_iter_max, tol, seed, calib)
    out = tuple(f.astype(np.float32) for f in factors)
    return (out + (info,)) if return_info else out


# --------------------------------------------------------------------------------------------
# criteria -> factors -> layers
# --------------------------------------------------------------------------------------------


def _criterion(where, rank_name, rank, energy, ratio, vbmf, allow_vbmf=True):
    if not isinstance(vbmf, (bool, np.bool_)):
        raise ValueError(f"{where}: vbmf must be True or False, got {vbmf!r}")
    options = [f"{rank_name}=", "energy=", "ratio="] + (["vbmf=True"] if allow_vbmf else [])
    given = [
        n for n, v in ((rank_name, rank), ("energy", energy), ("ratio", ratio)) if v is not None
    ]
    if vbmf:
        if not allow_vbmf:
            raise ValueError(
                f"{where}: vbmf=True is not available (there is no analytic VBMF for a CP rank); "
                f"give exactly one of {', '.join(options)}"
            )
        given.append("vbmf")
    if len(given) != 1:
        got = "none" if not given else ", ".join(given)
        raise ValueError(f"{where}: give exactly one criterion of {', '.join(options)} (got {got})")
    return given[0]


def linear_factors(
    W, *, rank=None, energy=None, ratio=None, vbmf=False, calibration=None, reg=1e-6
):
    """(U, V, RankChoice) for LowRankLinear from a dense W (out, in) by exactly one criterion.

    rank: that rank (1 <= rank <= min(out, in)). energy: the smallest rank keeping that fraction
    of ||W||_F^2 (with calibration: of the output energy E||W x||^2, i.e. of the spectrum of
    W C^(1/2)). ratio: the largest rank with rank (out + in) <= ratio out in. vbmf=True:
    EVBMF on W (with calibration: on W C^(1/2)). calibration: see `svd`.
    """
    W = _array(W, "W", 2)
    which = _criterion("LowRankLinear.from_dense", "rank", rank, energy, ratio, vbmf)
    X = None if calibration is None else _calibration_rows(calibration, W.shape[1])
    A = W if X is None else _linear_target(W, X, reg)
    data = " of the output energy on the calibration data" if X is not None else ""
    if which == "rank":
        r = _check_int(rank, "rank", 1, min(W.shape), f"the matrix rank bound min{W.shape}")
        choice = RankChoice(r, "given rank", {})
    elif which == "energy":
        choice = _rank.by_energy(A, energy)
    elif which == "ratio":
        choice = _rank.by_ratio(W.shape, ratio, "linear")
    else:
        choice = _rank.vbmf(A)
    if data and which in ("energy", "vbmf"):
        choice = RankChoice(choice.rank, choice.reason + data, choice.details)
    U, V = _svd64(W, min(choice.rank, min(W.shape)), X, reg)
    return U.astype(np.float32), V.astype(np.float32), choice


def lowrank_linear_from_dense(
    W, bias=None, *, rank=None, energy=None, ratio=None, vbmf=False, calibration=None,
    layer_class=None,
):
    """LowRankLinear(U, V, bias) from a dense weight W (out, in), by exactly one criterion.

    rank=r (1 <= r <= min(out, in)); energy=e in (0, 1] (smallest rank keeping e of ||W||_F^2);
    ratio=q > 0 (largest rank with r (out + in) <= q out in); vbmf=True (empirical VBMF).
    calibration=X (n, in): minimize the output error on X instead of the weight error (energy and
    vbmf then apply to the output spectrum). None or several criteria: ValueError. The rank and
    its reason: `linear_factors`; errors and costs: `lrkernels.report.layer_report`.
    """
    U, V, _ = linear_factors(
        W, rank=rank, energy=energy, ratio=ratio, vbmf=vbmf, calibration=calibration
    )
    return (layer_class or _core.LowRankLinear)(U, V, bias)


def tucker2_factors(
    weight,
    *,
    ranks=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    method="hooi",
    n_iter_max=100,
    tol=1e-7,
    reg=1e-6,
):
    """(first, core, last, RankChoice) for TuckerConv2d from a conv weight, one criterion.

    ranks: (r_in, r_out) (an int: both). energy: `rank.by_energy_tucker2` (the HOSVD bound, so
    the kept fraction of ||weight||^2 is >= energy; with calibration applied to the Cin-whitened
    weight). ratio: `rank.by_ratio(shape, ratio, "tucker2")` (r_in/r_out ~ Cin/Cout).
    vbmf=True: `rank.vbmf_tucker2` (with calibration on the whitened weight). See `tucker2`.
    """
    T = _array(weight, "weight", 4)
    which = _criterion("TuckerConv2d.from_dense", "ranks", ranks, energy, ratio, vbmf)
    _check_method(method)
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    calib = _make_calib(calibration, T.shape, stride, padding, dilation, layout, reg)
    A = T if calib is None else calib.whiten(T)
    if which == "ranks":
        choice = RankChoice(_check_ranks(ranks, T.shape[1], T.shape[0]), "given ranks", {})
    elif which == "energy":
        choice = _rank.by_energy_tucker2(A, energy)
    elif which == "ratio":
        choice = _rank.by_ratio(T.shape, ratio, "tucker2")
    else:
        choice = _rank.vbmf_tucker2(A)
    if calib is not None and which in ("energy", "vbmf"):
        choice = RankChoice(
            choice.rank, choice.reason + " (of the channel-whitened weight)", choice.details
        )
    first, core, last, info = _tucker2_64(T, *choice.rank, method, n_iter_max, tol, calib)
    choice.details["decomposition"] = info
    return first.astype(np.float32), core.astype(np.float32), last.astype(np.float32), choice


def tucker_conv2d_from_dense(
    weight,
    bias=None,
    *,
    ranks=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    method="hooi",
    layer_class=None,
):
    """TuckerConv2d from a dense conv weight (Cout, Cin, kh, kw), by exactly one criterion.

    ranks=(r_in, r_out) (first maps Cin -> r_in, last maps r_out -> Cout; an int means both);
    energy=e (cheapest ranks whose HOSVD bound keeps e of ||weight||^2); ratio=q (largest ranks,
    r_in/r_out ~ Cin/Cout, with <= q x the dense parameters); vbmf=True (EVBMF on the two
    unfoldings). calibration=X: images in `layout` for the data-aware fit. stride, padding,
    dilation, layout: the layer's. method: "hooi" (default) or "hosvd". See `tucker2_factors`.
    """
    first, core, last, _ = tucker2_factors(
        weight,
        ranks=ranks,
        energy=energy,
        ratio=ratio,
        vbmf=vbmf,
        calibration=calibration,
        stride=stride,
        padding=padding,
        dilation=dilation,
        layout=layout,
        method=method,
    )
    return (layer_class or _core.TuckerConv2d)(
        first, core, last, bias, stride=stride, padding=padding, dilation=dilation, layout=layout
    )


def _cp_energy_search(T, energy, n_iter_max, tol, seed, calib):
    """The smallest CP rank (doubling, then bisection) whose ALS fit keeps >= energy."""
    target = math.sqrt(max(1.0 - energy, 0.0))
    top = _max_cp_rank(T.shape)
    runs = {}

    def fit(R):
        if R not in runs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                runs[R] = _cp_64(T, R, n_iter_max, tol, seed, calib)
        err = runs[R][1]["error"] if calib is None else runs[R][1]["whitened_error"]
        return err <= target * (1 + 1e-12) or err <= 1e-14

    hi = 1
    while not fit(hi):
        if hi == top:
            raise ValueError(
                f"energy={energy!r}: CP-ALS did not reach it even at the largest rank {top}"
            )
        hi = min(2 * hi, top)
    lo = hi // 2  # fit(lo) is False (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fit(mid):
            hi = mid
        else:
            lo = mid
    factors, info = runs[hi]
    kept = 1.0 - (info["error"] if calib is None else info["whitened_error"]) ** 2
    return (
        factors,
        info,
        RankChoice(
            hi,
            f"smallest CP rank whose ALS fit keeps >= {energy:.6g} of the squared Frobenius norm "
            f"(keeps {kept:.6g}; ranks tried: {sorted(runs)})",
            {"energy": energy, "kept": kept, "tried": sorted(runs)},
        ),
    )


def cp_factors(
    weight,
    *,
    rank=None,
    energy=None,
    ratio=None,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    n_iter_max=500,
    tol=1e-9,
    seed=0,
    reg=1e-6,
    vbmf=False,
):
    """(first, vertical, horizontal, last, RankChoice) for CPConv2d, one criterion.

    rank: that CP rank. ratio: `rank.by_ratio(shape, ratio, "cp")`. energy: the smallest rank
    (doubling, then bisection, one ALS fit per rank tried) whose fit keeps >= energy of
    ||weight||^2 (with calibration: of the Cin-whitened weight). See `cp`.
    """
    T = _array(weight, "weight", 4)
    which = _criterion("CPConv2d.from_dense", "rank", rank, energy, ratio, vbmf, allow_vbmf=False)
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    calib = _make_calib(calibration, T.shape, stride, padding, dilation, layout, reg)
    if which == "energy":
        energy = _rank._check_energy(energy)
        factors, info, choice = _cp_energy_search(T, energy, n_iter_max, tol, seed, calib)
        if info["diverged"]:
            warnings.warn(
                f"CP-ALS (rank {choice.rank}) {info['stop']}; the best iterate is used",
                ConvergenceWarning,
                stacklevel=2,
            )
    else:
        if which == "rank":
            R = _check_int(
                rank, "rank", 1, _max_cp_rank(T.shape), f"the largest CP rank of a {T.shape} tensor"
            )
            choice = RankChoice(R, "given rank", {})
        else:
            choice = _rank.by_ratio(T.shape, ratio, "cp")
        factors, info = _cp_64(T, choice.rank, n_iter_max, tol, seed, calib)
    choice.details["decomposition"] = info
    return tuple(f.astype(np.float32) for f in factors) + (choice,)


def cp_conv2d_from_dense(
    weight,
    bias=None,
    *,
    rank=None,
    energy=None,
    ratio=None,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    n_iter_max=500,
    tol=1e-9,
    seed=0,
    vbmf=False,
    layer_class=None,
):
    """CPConv2d from a dense conv weight (Cout, Cin, kh, kw), by exactly one criterion.

    rank=R; ratio=q (largest R with R (Cin + kh + kw + Cout) <= q x the dense parameters);
    energy=e (smallest R whose CP-ALS fit keeps e of ||weight||^2, searched). vbmf=True is refused
    (ValueError): no analytic VBMF exists for a CP rank. calibration=X: images in `layout` for
    the data-aware fit. n_iter_max, tol, seed: CP-ALS (see `cp`). See `cp_factors`.
    """
    first, vertical, horizontal, last, _ = cp_factors(
        weight,
        rank=rank,
        energy=energy,
        ratio=ratio,
        calibration=calibration,
        stride=stride,
        padding=padding,
        dilation=dilation,
        layout=layout,
        n_iter_max=n_iter_max,
        tol=tol,
        seed=seed,
        vbmf=vbmf,
    )
    return (layer_class or _core.CPConv2d)(
        first,
        vertical,
        horizontal,
        last,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        layout=layout,
    )


# --------------------------------------------------------------------------------------------
# LowRankLinear.from_dense, TuckerConv2d.from_dense, CPConv2d.from_dense
# --------------------------------------------------------------------------------------------


def _as_classmethod(func, cls_name):
    @functools.wraps(func)
    def method(cls, *args, **kwargs):
        return func(*args, layer_class=cls, **kwargs)

    sig = inspect.signature(func)
    cls_param = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_ONLY)
    params = [p for p in sig.parameters.values() if p.name != "layer_class"]
    method.__signature__ = sig.replace(parameters=[cls_param, *params])
    method.__qualname__ = f"{cls_name}.from_dense"
    method.__name__ = "from_dense"
    return classmethod(method)


def _install():
    targets = [
        ("LowRankLinear", lowrank_linear_from_dense),
        ("TuckerConv2d", tucker_conv2d_from_dense),
        ("CPConv2d", cp_conv2d_from_dense),
    ]
    for name, func in targets:
        cls = getattr(_core, name, None)
        if cls is not None:
            cls.from_dense = _as_classmethod(func, name)


_install()
