"""The smallest CP rank whose ALS fit keeps a given energy: a bisection bounded on both sides
before any ALS run, warm-started, capped in sweeps and in time (issue 11 item 4).

Bounds, both from SVDs (no ALS):
- below: a CP rank R gives a rank-R approximation of every unfolding, so R is too small whenever
  an unfolding's best rank-R approximation (its SVD) keeps less than the energy;
- above: the "slice" decomposition - orthonormal bases of the two smallest modes (their SVDs),
  then the SVD of each of the (basis i, basis j) slices, a matrix over the two largest modes -
  is a CP decomposition whose components are mutually orthogonal, so the energy its R largest
  components keep is exact: the smallest R keeping the energy is a rank known to reach it.

Bisection between them: each rank tried is fitted by ALS from the best (after one sweep) of the
nearest larger fit truncated to its strongest components, the nearest smaller fit extended by
the slice components of its residual, and the SVD start of `cp`; a run stops once it keeps the
energy, when its pace cannot get there in the sweeps left, or after _SEARCH_SWEEPS sweeps. The
whole search, and the refinement of the chosen rank, stop at max_seconds; the rank returned
always keeps the energy (if the budget ran out first it may not be the smallest: RankWarning).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings

import numpy as np

from ..rank import RankChoice, RankWarning, unfold
from ._common import ConvergenceWarning
from .cp_als import _cp_als, _cp_balance, _cp_full, _cp_init, _cp_sweep

__all__: list = []

_SEARCH_SWEEPS = 50  # ALS sweeps per rank tried during the search (the chosen rank gets more)


def _check_budget(max_seconds, progress):
    """max_seconds as a float > 0 (None: no limit); progress None, a bool or a callable."""
    if max_seconds is not None:
        ok = isinstance(max_seconds, numbers.Real) and not isinstance(max_seconds, bool)
        if not (ok and max_seconds > 0 and not math.isnan(max_seconds)):
            raise ValueError(f"max_seconds must be a number > 0 or None, got {max_seconds!r}")
        max_seconds = float(max_seconds)
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"progress must be None, True/False or a callable, got {progress!r}")
    return max_seconds, progress


def _tails(s2):
    """tails[k] = sum(s2[k:]) for k = 0..len(s2) (s2 sorted descending): the squared error left
    by the k largest terms, summed from the small end (no cancellation)."""
    return np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])


def _slice_cp(A):
    """Every component of the slice decomposition of the 4-way A (see the module docstring), the
    strongest first: (factors, one (dim_n, N) array per mode, and their squared norms (N,))."""
    dims = A.shape
    by_size = sorted(range(4), key=lambda m: -dims[m])  # stable: ties keep the mode order
    a, b = sorted(by_size[:2])
    c, d = sorted(by_size[2:])
    Pc = np.linalg.svd(unfold(A, c), full_matrices=False)[0]  # square: dims[c] <= the rest
    Pd = np.linalg.svd(unfold(A, d), full_matrices=False)[0]
    M = np.einsum(A, [0, 1, 2, 3], Pc, [c, 4], Pd, [d, 5], [4, 5, a, b], optimize=True)
    U, s, Vt = np.linalg.svd(M, full_matrices=False)  # (dc, dd, da, k), (dc, dd, k), (.., k, db)
    shape = s.shape
    order = np.argsort(-s.ravel(), kind="stable")
    ii, jj, _ = np.unravel_index(np.arange(s.size), shape)
    factors = [None] * 4
    factors[a] = (np.moveaxis(U, 2, 0).reshape(dims[a], -1) * s.ravel())[:, order]
    factors[b] = np.moveaxis(Vt, 3, 0).reshape(dims[b], -1)[:, order]
    factors[c] = Pc[:, ii[order]]
    factors[d] = Pd[:, jj[order]]
    return factors, (s.ravel() ** 2)[order]


def _bounds(A, allowed2):
    """(lo, hi): every rank <= lo is too small (an unfolding's SVD says so), rank hi reaches the
    squared error allowed2 (the slice decomposition's hi strongest components do)."""
    lo = 0
    for n in range(4):
        s2 = np.linalg.svd(unfold(A, n), compute_uv=False) ** 2
        # margin: a rank is declared too small only when clearly so (rounding in the SVD)
        lo = max(lo, int(np.count_nonzero(_tails(s2)[1:] > allowed2 * (1 + 1e-6))))
    slices, s2 = _slice_cp(A)
    tails = _tails(s2)
    fits = np.flatnonzero(tails[1:] <= allowed2 * (1 - 1e-9))
    hi = int(fits[0]) + 1 if fits.size else len(s2)
    return min(lo, hi - 1), hi, slices


def _truncate(factors, R):
    """The R strongest components (largest product of column norms) of a CP decomposition."""
    factors, weights = _cp_balance([f.copy() for f in factors])
    keep = np.sort(np.argsort(-weights, kind="stable")[:R])
    return [f[:, keep] for f in factors]


def _extend(A, factors, R):
    """factors plus the R - (its rank) strongest slice components of the residual."""
    extra, _ = _slice_cp(A - _cp_full(factors))
    k = R - factors[0].shape[1]
    return [np.hstack([f, e[:, :k]]) for f, e in zip(factors, extra)]


def _start(A, R, fits, seed, norm):
    """The best of the warm starts for rank R (after one ALS sweep each) and its label."""
    larger = [k for k in fits if k > R]
    smaller = [k for k in fits if k < R]
    candidates = [("SVD start", lambda: _cp_init(A, R, np.random.default_rng(seed)))]
    if larger:
        up = min(larger)
        candidates.append((f"rank {up} truncated", lambda: _truncate(fits[up], R)))
    if smaller:
        down = max(smaller)
        candidates.append((f"rank {down} extended", lambda: _extend(A, fits[down], R)))
    best = None
    for label, make in candidates:
        try:
            swept, _ = _cp_sweep(A, make(), R)
        except np.linalg.LinAlgError:
            continue
        err = np.linalg.norm((A - _cp_full(swept)).ravel()) / norm if norm > 0 else 0.0
        if math.isfinite(err) and (best is None or err < best[0]):
            best = (err, swept, label)
    return (None, "SVD start") if best is None else (best[1], best[2])


def _reporter(progress, t0):
    """progress as a function of (event, message, **data): stderr lines for True, the user's
    callable gets a dict (event, message, seconds and the data), None/False: nothing."""

    def say(event, message, **data):
        seconds = time.monotonic() - t0
        if progress is True:
            print(
                f"[lrkernels CP energy search {seconds:6.1f} s] {message}",
                file=sys.stderr,
                flush=True,
            )
        elif callable(progress) and progress is not False:
            progress(dict(data, event=event, message=message, seconds=seconds))

    return say


def _cp_energy_search(A, energy, n_iter_max, tol, seed, max_seconds=20.0, progress=None):
    """(ALS factors of A, info, RankChoice): the smallest CP rank found whose ALS fit of A (the
    weight, or the whitened weight) keeps >= energy of ||A||^2; see the module docstring."""
    t0 = time.monotonic()
    deadline = None if max_seconds is None else t0 + max_seconds
    say = _reporter(progress, t0)
    norm = float(np.linalg.norm(A.ravel()))
    target = math.sqrt(max(1.0 - energy, 0.0))
    allowed2 = max(target**2, 1e-28) * norm**2  # 1e-14 relative: exact up to rounding

    def keeps(info):
        return info["error"] <= target * (1 + 1e-12) or info["error"] <= 1e-14

    lo, hi, slices = _bounds(A, allowed2) if norm > 0 else (0, 1, None)
    lo0, hi0 = lo, hi
    say(
        "bounds",
        f"rank in ({lo}, {hi}] (an unfolding's SVD rules out <= {lo}; the slice "
        f"decomposition reaches it at {hi}); energy {energy:.6g}",
        lower=lo,
        upper=hi,
    )
    fits = {} if slices is None else {hi: [f[:, :hi] for f in slices]}
    tried = {}
    stopped = None
    sweeps = min(n_iter_max, _SEARCH_SWEEPS)
    while hi - lo > 1:
        if deadline is not None and time.monotonic() >= deadline:
            stopped = "max_seconds"
            break
        mid = (lo + hi) // 2
        t_run = time.monotonic()
        init, label = _start(A, mid, fits, seed, norm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            f, info = _cp_als(
                A, mid, sweeps, tol, seed, init=init, target=target, deadline=deadline
            )
        ok = keeps(info)
        if not ok and info["stop"] == "max_seconds":
            stopped = "max_seconds"  # cut short: undecided, not too small
            break
        kept = 1.0 - info["error"] ** 2
        run_seconds = time.monotonic() - t_run
        tried[mid] = {
            "kept": kept,
            "sweeps": info["iterations"],
            "stop": info["stop"],
            "start": label,
            "seconds": run_seconds,
        }
        fits[mid] = f
        lo, hi = (lo, mid) if ok else (mid, hi)
        say(
            "rank",
            f"rank {mid}: keeps {kept:.6g} ({'enough' if ok else 'too little'}; "
            f"{info['iterations']} sweeps from {label}, {info['stop']}, {run_seconds:.2f} s); "
            f"now ({lo}, {hi}]",
            rank=mid,
            kept=kept,
            enough=ok,
            lower=lo,
            upper=hi,
        )
    # The chosen rank: its search fit (or the slice components) refined by full ALS sweeps.
    init = fits.get(hi) if fits else None
    t_run = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        factors, info = _cp_als(A, hi, n_iter_max, tol, seed, init=init, deadline=deadline)
    kept = 1.0 - info["error"] ** 2
    seconds = time.monotonic() - t0
    say(
        "final",
        f"rank {hi} refined: keeps {kept:.6g} ({info['iterations']} sweeps, {info['stop']}, "
        f"{seconds - (t_run - t0):.2f} s)",
        rank=hi,
        kept=kept,
    )
    how = (
        f"bisection over ({lo0}, {hi0}] (bounds from the SVDs of the unfoldings and of the "
        f"slices), ALS runs of <= {sweeps} sweeps, warm-started"
    )
    if stopped:
        how += (
            f"; stopped by max_seconds={max_seconds:g} with ranks {lo + 1}..{hi - 1} "
            f"undecided (a smaller rank may reach it)"
        )
        warnings.warn(
            f"CP energy search: the time budget max_seconds={max_seconds:g} ran out; rank {hi} "
            f"keeps {kept:.6g} >= {energy:.6g} but ranks {lo + 1}..{hi - 1} were not tried to "
            "the end; raise max_seconds for the smallest rank",
            RankWarning,
            stacklevel=4,
        )
    choice = RankChoice(
        hi,
        f"smallest CP rank found whose ALS fit keeps >= {energy:.6g} of the squared Frobenius "
        f"norm (keeps {kept:.6g}; {how}; ranks tried: {sorted(tried)}; {seconds:.1f} s)",
        {
            "energy": energy,
            "kept": kept,
            "tried": sorted(tried),
            "runs": tried,
            "bounds": (lo0, hi0),
            "interval": (lo, hi),
            "stopped": stopped,
            "search_sweeps": sweeps,
            "final_sweeps": info["iterations"],
            "max_seconds": max_seconds,
            "seconds": seconds,
        },
    )
    say("done", str(choice), rank=hi, kept=kept)
    return factors, info, choice
