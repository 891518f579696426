"""Tucker-2 (HOSVD / HOOI, plain or data-aware) of a conv weight into TuckerConv2d's factors."""

from __future__ import annotations

import numpy as np

from ..rank import unfold
from ._common import _TINY, _array, _check_int, _check_iter, _leading_left, _rel_err
from .calibration import _make_calib

__all__ = ["tucker2"]


def _tucker_core(T, first, last):
    return np.einsum("ocyx,os,rc->sryx", T, last, first, optimize=True)


def _tucker_full(first, core, last):
    return np.einsum("os,sryx,rc->ocyx", last, core, first, optimize=True)


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


def _check_ranks(ranks, cin, cout, name="ranks"):
    """(r_in, r_out) from an int (both) or a pair; name: the keyword the caller used."""
    if np.ndim(ranks) == 0:
        ranks = (ranks, ranks)
    ranks = tuple(ranks)
    if len(ranks) != 2:
        raise ValueError(f"{name} must be an int or a pair (r_in, r_out), got {ranks!r}")
    r_in = _check_int(ranks[0], "r_in", 1, cin, f"Cin={cin} (r_in maps Cin -> r_in)")
    r_out = _check_int(ranks[1], "r_out", 1, cout, f"Cout={cout} (r_out maps r_out -> Cout)")
    return r_in, r_out


def _check_method(method):
    if method not in ("hooi", "hosvd"):
        raise ValueError(f"method must be 'hooi' or 'hosvd', got {method!r}")


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
