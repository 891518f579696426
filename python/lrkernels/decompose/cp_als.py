"""CP-ALS (plain or data-aware) of a conv weight into CPConv2d's factors. The rank search of the
energy criterion, built on `_cp_als` (warm starts, target, deadline), is in ``cp_search``."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..rank import unfold
from ._common import _TINY, ConvergenceWarning, _array, _check_int, _check_iter, _rel_err
from .calibration import _make_calib

__all__ = ["cp"]


def _khatri_rao(mats):
    R = mats[0].shape[1]
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, R)
    return out


def _cp_lstsq(G, MT):
    """The ALS update F = MT G^+ for a singular G (symmetric PSD, R x R): the minimum-norm
    least-squares solution."""
    return np.linalg.lstsq(G, MT.T, rcond=None)[0].T


def _cp_solve(G, MT):
    """The ALS update F = MT G^+ for a G that should be positive definite: one LU solve, ~5x
    faster than lstsq's SVD at ranks in the hundreds and a single LAPACK call (each one is costly
    when OpenBLAS threads compete for a busy machine); lstsq if it fails."""
    try:
        F = np.linalg.solve(G, MT.T)
        if np.all(np.isfinite(F)):
            return F.T
    except np.linalg.LinAlgError:
        pass
    return _cp_lstsq(G, MT)


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
    """unfold(T, n) @ khatri_rao(the other factors), without forming the Khatri-Rao product
    (prod(other dims) x R, large for the kh and kw modes): one GEMM contracts the largest other
    mode (BLAS does the bulk of the work; a single einsum over all modes ran unblocked and was
    ~20x slower at ranks in the hundreds), then the two small modes left are contracted."""
    R = factors[0].shape[1]
    others = [m for m in range(4) if m != n]
    big = max(others, key=lambda m: T.shape[m])
    rest = [m for m in range(4) if m != big]  # n and the two small modes, in order
    P = (factors[big].T @ unfold(T, big)).reshape((R,) + tuple(T.shape[m] for m in rest))
    letters = "abcd"
    small = [m for m in rest if m != n]
    subs = "r" + "".join(letters[m] for m in rest) + "," + ",".join(letters[m] + "r" for m in small)
    return np.einsum(subs + "->" + letters[n] + "r", P, *(factors[m] for m in small))


def _cp_sweep(T, factors, R):
    """One ALS sweep: each factor in turn is the least-squares fit given the other three."""
    grams = [f.T @ f for f in factors]  # each updated once its factor changes
    for n in range(4):
        G = np.ones((R, R))
        for m in range(4):
            if m != n:
                G *= grams[m]
        # G's rank is at most the product of the other modes' sizes: above it, G is singular
        singular = R > np.prod([T.shape[m] for m in range(4) if m != n])
        factors[n] = (_cp_lstsq if singular else _cp_solve)(G, _mttkrp(T, factors, n))
        if not np.all(np.isfinite(factors[n])):
            break
        grams[n] = factors[n].T @ factors[n]
    return _cp_balance(factors)


def _unreachable(errors, target, sweeps_left):
    """True when even twice the mean decrease of the last 4 sweeps, kept up for every sweep left,
    would not bring the error down to target. ALS mostly slows down as it goes, so the guess is
    optimistic; the factor 2 leaves room for the line search's jumps and for fits that speed up
    again after a plateau."""
    if len(errors) < 5 or not all(map(math.isfinite, errors[-5:])):
        return False
    rate = max((errors[-5] - errors[-1]) / 4, 0.0)
    return errors[-1] - 2 * rate * sweeps_left > target


def _cp_als(
    T,
    R,
    n_iter_max,
    tol,
    seed,
    degeneracy=1e4,
    linesearch=True,
    *,
    init=None,
    target=None,
    deadline=None,
):
    """CP-ALS with extrapolation (line search every other sweep, accepted only if it lowers the
    error; Bro 1998, Acar et al. 2011) and divergence detection; returns the best iterate.

    For the rank search: init (4 factors) replaces the SVD start; with target (a relative error)
    the run stops as soon as the error is <= target ("target") or cannot get there in the sweeps
    left at its current pace ("unreachable"); at time.monotonic() >= deadline it stops after the
    sweep under way ("max_seconds")."""
    norm = float(np.linalg.norm(T.ravel()))
    rng = np.random.default_rng(seed)
    factors = _cp_init(T, R, rng) if init is None else [np.array(f, dtype=np.float64) for f in init]
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
        if target is not None:
            if err <= target:
                stop = "target"
                break
            if _unreachable(errors, target, n_iter_max - it):
                stop = "unreachable"
                break
        if deadline is not None and time.monotonic() >= deadline:
            stop = "max_seconds"
            break
        prev = err
    if best is None:  # diverged on the first sweep: fall back on the start
        start = _cp_init(T, R, np.random.default_rng(seed)) if init is None else init
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
    A = T if calib is None else calib.whiten(T)
    return _cp_finish(T, *_cp_als(A, R, n_iter_max, tol, seed), calib)


def _cp_finish(T, als_factors, info, calib):
    """The ALS factors (of T, or of the whitened weight with calib) as CPConv2d's (first,
    vertical, horizontal, last), float64, and info with the weight (and output) error."""
    last, first_t, vertical_t, horizontal_t = als_factors
    info = dict(info)
    if calib is None:
        first = first_t.T
    else:
        first = first_t.T @ calib.Sinv
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
