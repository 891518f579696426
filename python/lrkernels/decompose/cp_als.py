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


def _contract01(T, factors):
    """P[r, y, x] = sum_{o, c} T[o, c, y, x] factors[0][o, r] factors[1][c, r]: one GEMM over the
    larger of modes 0 and 1, then the other (the MTTKRPs of modes 2 and 3 both start from it)."""
    R = factors[0].shape[1]
    I0, I1, I2, I3 = T.shape
    if I0 >= I1:
        P = (factors[0].T @ T.reshape(I0, -1)).reshape(R, I1, I2, I3)
        return np.einsum("rcyx,cr->ryx", P, factors[1])
    P = (factors[1].T @ unfold(T, 1)).reshape(R, I0, I2, I3)
    return np.einsum("royx,or->ryx", P, factors[0])


def _cp_sweep(T, factors, R, fit=None):
    """One ALS sweep: each factor in turn is the least-squares fit given the other three.
    With fit (a list), appends (<T, T_hat>, ||T_hat||^2) of the result, from the last update's
    MTTKRP and the Gram matrices (no reconstruction of T_hat)."""
    grams = [f.T @ f for f in factors]  # each updated once its factor changes
    for n in range(4):
        G = np.ones((R, R))
        for m in range(4):
            if m != n:
                G *= grams[m]
        # G's rank is at most the product of the other modes' sizes: above it, G is singular
        singular = R > np.prod([T.shape[m] for m in range(4) if m != n])
        if n < 2:
            M = _mttkrp(T, factors, n)
        else:  # modes 2 and 3 share T contracted with the (updated) factors of modes 0 and 1
            if n == 2:
                P01 = _contract01(T, factors)
            if n == 2:
                M = np.einsum("ryx,xr->yr", P01, factors[3])
            else:
                M = np.einsum("ryx,yr->xr", P01, factors[2])
        factors[n] = (_cp_lstsq if singular else _cp_solve)(G, M)
        if not np.all(np.isfinite(factors[n])):
            break
        grams[n] = factors[n].T @ factors[n]
        if n == 3 and fit is not None:
            fit.append((float(np.sum(M * factors[3])), float(np.sum(G * grams[3]))))
    return _cp_balance(factors)


def _gram_error(core2, inner, hat2, offset2=0.0):
    """The relative error sqrt(offset2 + ||T - T_hat||^2) / sqrt(offset2 + ||T||^2) from
    core2 = ||T||^2, <T, T_hat> and ||T_hat||^2 (offset2: the squared error of a compression, 0
    without). None where ||T||^2 - 2 <T, T_hat> + ||T_hat||^2 cancels down to too few digits
    (a relative error below ~1e-5): the caller computes that one from the reconstruction."""
    full2 = core2 + offset2
    if not (math.isfinite(inner) and math.isfinite(hat2)) or full2 <= 0:
        return None
    e2 = core2 - 2.0 * inner + hat2 + offset2
    if e2 < 1e-10 * full2:
        return None
    return math.sqrt(e2 / full2)


def _unreachable(errors, target, sweeps_left):
    """True when even twice the mean decrease of the last 4 sweeps, kept up for every sweep left,
    would not bring the error down to target. ALS mostly slows down as it goes, so the guess is
    optimistic; the factor 2 leaves room for the line search's jumps and for fits that speed up
    again after a plateau."""
    if len(errors) < 5 or not all(map(math.isfinite, errors[-5:])):
        return False
    rate = max((errors[-5] - errors[-1]) / 4, 0.0)
    return errors[-1] - 2 * rate * sweeps_left > target


_TOL_WINDOW = 5  # sweeps over which the tol test measures the improvement
_LS_START, _LS_EVERY = 5, 2  # the line search: from the sweep after _LS_START, every _LS_EVERY


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
    offset2=0.0,
):
    """CP-ALS with extrapolation (a line search every other sweep from the 6th: factors +
    step (factors - previous), accepted only if it lowers the error; Bro 1998, Acar et al. 2011)
    and divergence detection; returns the best iterate.

    Stops ("tol") when the best error fell by <= tol (relative) per sweep on average over the last
    _TOL_WINDOW sweeps (tol = 0: never). The error of each sweep comes from the Gram matrices and
    the last MTTKRP (no reconstruction) except near an exact fit. offset2: the squared error of a
    compression (T is then the core), added to every error.

    For the rank search: init (4 factors) replaces the SVD start; with target (a relative error)
    the run stops as soon as the error is <= target ("target") or cannot get there in the sweeps
    left at its current pace ("unreachable"); at time.monotonic() >= deadline it stops after the
    sweep under way ("max_seconds")."""
    core2 = float(np.sum(T * T))
    norm = math.sqrt(core2 + offset2)
    rng = np.random.default_rng(seed)
    factors = _cp_init(T, R, rng) if init is None else [np.array(f, dtype=np.float64) for f in init]
    errors = []
    best = None
    best_errors = []  # the best error after each sweep (the tol test)
    stop = "n_iter_max"
    rising = 0
    prev = None
    acc_pow, acc_fail = 2.0, 0
    jumps = [0, 0]  # line search: accepted, tried

    def exact_error(fs):
        e2 = float(np.sum((T - _cp_full(fs)) ** 2)) + offset2
        e = math.sqrt(e2) / norm if norm > 0 else 0.0
        return e if math.isfinite(e) else math.inf

    def error_of(fs, fit=None):
        if not all(np.all(np.isfinite(f)) for f in fs):
            return math.inf
        if fit is None:  # <T, T_hat> from one MTTKRP, ||T_hat||^2 from the Gram matrices
            G = np.ones((R, R))
            for f in fs:
                G *= f.T @ f
            fit = (float(np.sum(_mttkrp(T, fs, 3) * fs[3])), float(np.sum(G)))
        e = _gram_error(core2, *fit, offset2)
        return exact_error(fs) if e is None else e

    for it in range(1, max(n_iter_max, 1) + 1):
        old = [f.copy() for f in factors]
        fit = []
        try:
            factors, weights = _cp_sweep(T, factors, R, fit)
        except np.linalg.LinAlgError as exc:
            stop = f"diverged: the least-squares update failed ({exc})"
            errors.append(math.inf)
            break
        err = error_of(factors, fit[0] if fit else None)
        if linesearch and math.isfinite(err) and it > _LS_START and it % _LS_EVERY == 0:
            jump = it ** (1.0 / acc_pow)
            trial, tweights = _cp_balance([o + (f - o) * jump for o, f in zip(old, factors)])
            terr = error_of(trial)
            jumps[1] += 1
            if terr < err:
                factors, weights, err, acc_fail = trial, tweights, terr, 0
                jumps[0] += 1
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
        best_errors.append(best[0])
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
        if tol > 0 and len(best_errors) > _TOL_WINDOW:
            gain = best_errors[-1 - _TOL_WINDOW] - best_errors[-1]
            if gain <= tol * _TOL_WINDOW * max(best_errors[-1], _TINY):
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
        best = (exact_error(start), _cp_balance(start)[0])
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
        "linesearch": tuple(jumps),
    }
    return best[1], info


# A mode is compressed to its numerical rank: the singular values beyond it keep <= this
# fraction of ||T|| (float32 rounding of the weight is ~6e-8 of it).
_NUMERICAL_RANK = 1e-7


def _compression(T, R, lossy=False):
    """Orthonormal bases (I_n, k_n) of the leading left singular vectors of the unfoldings of
    modes 0 and 1, k_n = the numerical rank (lossy: min(R, numerical rank)), or None for a mode
    kept whole; the core T x_0 U_0^T x_1 U_1^T; and the squared norm that the projection drops."""
    norm2 = float(np.sum(T * T))
    bases = []
    core = T
    for n in (0, 1):
        U, s, _ = np.linalg.svd(unfold(T, n), full_matrices=False)
        s2 = s**2
        tails = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
        numrank = int(np.flatnonzero(tails <= _NUMERICAL_RANK**2 * norm2)[0]) if norm2 > 0 else 1
        k = max(1, min(R, numrank) if lossy else numrank)
        if k >= T.shape[n]:
            bases.append(None)
            continue
        bases.append(U[:, :k])
        core = np.moveaxis(np.tensordot(U[:, :k].T, core, axes=(1, n)), 0, n)
    offset2 = max(norm2 - float(np.sum(core * core)), 0.0)
    return bases, core, offset2


def _cp_als_compressed(T, R, n_iter_max, tol, seed, lossy=False):
    """CP-ALS of T through its compression (CANDELINC): modes 0 and 1 projected on their
    leading singular subspaces of the numerical rank, ALS on the small core, the factors expanded
    back: the same fit as on T (the factors of modes 0 and 1 of a least-squares CP fit lie in
    those subspaces, up to the float32-level _NUMERICAL_RANK dropped).

    lossy=True truncates to min(R, numerical rank) instead (the core gets half of the sweeps,
    then the expanded factors are refined on T with the rest): faster for R well below the mode
    sizes, but on random 12x10x3x3 tensors it ended up to 1.4% worse in error than the full ALS
    (the fit's subspace is not the leading singular one), so `cp` does not use it.
    info["compressed"]: the core's shape, or None."""
    bases, core, offset2 = _compression(T, R, lossy)
    if all(b is None for b in bases):
        factors, info = _cp_als(T, R, n_iter_max, tol, seed)
        info["compressed"] = None
        return factors, info
    norm2 = float(np.sum(T * T))
    lossy = offset2 > _NUMERICAL_RANK**2 * norm2
    # lossy: the core gets at most half of the sweeps, the refinement on T the rest
    core_sweeps = max(n_iter_max // 2, 1) if lossy else n_iter_max
    factors, info = _cp_als(core, R, core_sweeps, tol, seed, offset2=offset2)
    factors = [f if b is None else b @ f for b, f in zip(bases + [None, None], factors)]
    info["compressed"] = core.shape
    left = n_iter_max - info["iterations"]
    if lossy and left > 0 and not info["diverged"]:
        refined, more = _cp_als(T, R, left, tol, seed, init=factors)
        more["errors"] = info["errors"] + more["errors"]
        more["iterations"] = len(more["errors"])
        more["linesearch"] = tuple(a + b for a, b in zip(info["linesearch"], more["linesearch"]))
        more["compressed"] = core.shape
        if more["error"] <= info["error"]:
            return refined, more
    return factors, info


def _max_cp_rank(shape):
    return int(np.prod(shape)) // max(shape)


def _cp_64(T, R, n_iter_max, tol, seed, calib):
    A = T if calib is None else calib.whiten(T)
    return _cp_finish(T, *_cp_als_compressed(A, R, n_iter_max, tol, seed), calib)


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
    tol=1e-6,
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
    unfolding; columns beyond a mode's size are normal with the given `seed`), run on a compressed
    tensor: modes 0 and 1 projected on their leading singular subspaces, of dimension min(rank,
    numerical rank) (CANDELINC; exact when the numerical rank is kept, otherwise the expanded
    factors are refined on the weight itself with the sweeps left). Each sweep solves the four
    least-squares problems; the components are then rebalanced (equal norms across the four
    factors); every other sweep an extrapolation (line search) is tried and kept only if it lowers
    the error. Stops when the best relative error fell by <= tol (relative) per sweep on average
    over the last 5 sweeps (the default 1e-6 is float32-level progress; tol=0: never), reaches ~0,
    or after n_iter_max sweeps. Divergence - a non-finite error, the error rising 3 sweeps in a
    row, or degenerate components (a component norm > 1e4 ||weight||: terms that cancel, which
    float32 kernels cannot reproduce) - stops it with a :class:`ConvergenceWarning`; the best
    iterate is returned. rank must be in [1, prod(shape) / max(shape)] (the largest CP rank there
    is). info (return_info=True): error, errors (per sweep), iterations, stop, diverged,
    linesearch (extrapolations accepted, tried), compressed (the core's shape, or None).

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
