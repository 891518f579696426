"""Rank selection for factorized layers: each criterion returns the rank(s) and the reason why.

Every function returns a :class:`RankChoice` ``(rank, reason, details)``: ``rank`` is an int for
a matrix (``LowRankLinear``) or a CP layer, a pair ``(r_in, r_out)`` for a Tucker-2 convolution
(in the order of the factors: ``first`` maps Cin -> r_in, ``last`` maps r_out -> Cout), or a list
of those for :func:`allocate_budget`; ``reason`` is one human-readable sentence; ``details`` is a
dict of the numbers behind it.

Criteria
--------
by_energy(W or s, energy)          smallest rank keeping >= energy of the squared Frobenius norm
by_energy_tucker2(weight, energy)  cheapest (r_in, r_out) whose HOSVD error bound keeps >= energy
by_ratio(shape, ratio, kind)       largest rank whose factorized parameter count is <= ratio * dense
vbmf(W)                            empirical variational Bayes matrix factorization (Nakajima 2013)
vbmf_tucker2(weight)               the same on the mode-1 (-> r_in) and mode-0 (-> r_out) unfoldings
by_score(score_fn, ranks, tol)     smallest rank whose score is within tol of the best score
allocate_budget(layers, budget)    ranks over many layers under one total parameter budget

``kind`` (by_ratio, factorized_params) is the layer class name ("LowRankLinear", "TuckerConv2d",
"CPConv2d"), the one name of a kind across lrkernels, or its short name below.

Parameter counts (:func:`factorized_params`) are weights only, without the bias:

    linear  (out, in), rank r:                  r (out + in)                 dense out * in
    tucker2 (Cout, Cin, kh, kw), (r_in, r_out): Cin r_in + r_out r_in kh kw + Cout r_out
    cp      (Cout, Cin, kh, kw), rank R:        R (Cin + kh + kw + Cout)     dense Cout Cin kh kw

Only numpy is used.
"""

from __future__ import annotations

import heapq
import math
import numbers
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "RankChoice",
    "RankWarning",
    "allocate_budget",
    "by_energy",
    "by_energy_tucker2",
    "by_ratio",
    "by_score",
    "factorized_params",
    "dense_params",
    "vbmf",
    "vbmf_tucker2",
]

KINDS = ("linear", "tucker2", "cp")
# The layer class names (the one name of each kind across lrkernels, see layer_specs) are
# accepted for `kind` as well; the short names stay for compatibility.
_KIND_OF_CLASS = {"LowRankLinear": "linear", "TuckerConv2d": "tucker2", "CPConv2d": "cp"}


def _canonical_kind(kind) -> str:
    """kind as one of KINDS, from a short name or a layer class name (ValueError otherwise)."""
    if isinstance(kind, str) and kind in _KIND_OF_CLASS:
        return _KIND_OF_CLASS[kind]
    if kind not in KINDS:
        raise ValueError(
            f"kind must be one of {tuple(_KIND_OF_CLASS)} (or {', '.join(map(repr, KINDS))}), "
            f"got {kind!r}"
        )
    return kind


class RankWarning(UserWarning):
    """A rank criterion had to be overridden (e.g. VBMF found no component: clamped to rank 1)."""


@dataclass(frozen=True)
class RankChoice:
    """The rank(s) a criterion chose, one sentence saying why, and the numbers behind it."""

    rank: Any
    reason: str
    details: dict = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        return f"rank {self.rank}: {self.reason}"


# --------------------------------------------------------------------------------------------
# validation helpers (shared with lrkernels.decompose)
# --------------------------------------------------------------------------------------------


def _real_array(a, name: str, ndim=None) -> np.ndarray:
    """a as a finite, non-empty float64 ndarray (ValueError otherwise)."""
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values (nan or inf)")
    return a


def _check_int(value, name: str, lo: int = 1, hi: int | None = None, hi_why: str = "") -> int:
    """value as a Python int in [lo, hi] (ValueError otherwise; bools are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}={value} is above {hi_why or hi} (the largest possible is {hi})")
    return value


def _check_energy(energy) -> float:
    if isinstance(energy, (bool, np.bool_)) or not isinstance(energy, numbers.Real):
        raise ValueError(f"energy must be a number in (0, 1], got {energy!r}")
    energy = float(energy)
    if not (0.0 < energy <= 1.0):
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    return energy


def _check_ratio(ratio) -> float:
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"ratio must be a positive number, got {ratio!r}")
    ratio = float(ratio)
    if not (ratio > 0.0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a positive finite number, got {ratio!r}")
    return ratio


def _check_shape(shape, kind: str) -> tuple:
    kind = _canonical_kind(kind)
    try:
        shape = tuple(_index(v) for v in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints, got {shape!r}") from None
    want = 2 if kind == "linear" else 4
    if len(shape) != want or min(shape) < 1:
        what = "(out, in)" if kind == "linear" else "(Cout, Cin, kh, kw)"
        raise ValueError(f"shape for kind={kind!r} must be {what} of positive ints, got {shape!r}")
    return shape


def _index(v):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError("bool")
    return operator.index(v)


def unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n unfolding: axis `mode` first, the others (in order) flattened C-style."""
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def _singular_values(W: np.ndarray) -> np.ndarray:
    return np.linalg.svd(W, compute_uv=False)


# --------------------------------------------------------------------------------------------
# parameter counts
# --------------------------------------------------------------------------------------------


def dense_params(shape) -> int:
    """Weights of the dense layer: out * in, or Cout * Cin * kh * kw."""
    return int(np.prod([int(v) for v in shape]))


def factorized_params(shape, rank, kind: str) -> int:
    """Weights (no bias) of the factorized layer; see the module docstring for the formulas."""
    kind = _canonical_kind(kind)
    shape = _check_shape(shape, kind)
    if kind == "linear":
        out, inp = shape
        return int(rank) * (out + inp)
    cout, cin, kh, kw = shape
    if kind == "tucker2":
        r_in, r_out = (int(v) for v in rank)
        return cin * r_in + r_out * r_in * kh * kw + cout * r_out
    return int(rank) * (cin + kh + kw + cout)


# --------------------------------------------------------------------------------------------
# energy
# --------------------------------------------------------------------------------------------


def _rank_for_energy(s: np.ndarray, energy: float) -> tuple[int, float]:
    """Smallest r with sum(s[:r]^2) >= energy * sum(s^2), and the energy it keeps."""
    e = np.sort(s)[::-1] ** 2
    total = float(e.sum())
    cum = np.cumsum(e)
    r = int(np.searchsorted(cum, energy * total, side="left")) + 1
    # Never beyond the numerical rank (singular values below s_max * len(s) * eps are rounding
    # noise): with energy = 1 the rounding of the cumulative sum would otherwise decide.
    numerical = int(np.count_nonzero(e > e[0] * (len(e) * np.finfo(np.float64).eps) ** 2))
    r = max(1, min(r, numerical, len(e)))
    return r, float(cum[r - 1] / total)


def by_energy(W_or_s, energy: float) -> RankChoice:
    """The smallest rank r keeping at least `energy` of the squared Frobenius norm.

    ``W_or_s`` is a matrix (its singular values are computed) or the 1-D array of singular
    values. The kept energy of rank r is sum_{i<r} s_i^2 / sum_i s_i^2 (Eckart-Young: the best
    rank-r approximation keeps exactly this), so the result satisfies
    kept(r) >= energy > kept(r - 1), r never above the numerical rank (so energy=1 gives the
    numerical rank). energy must be in (0, 1]. An all-zero matrix has no energy to keep: rank 1
    with a :class:`RankWarning`.
    """
    energy = _check_energy(energy)
    a = _real_array(W_or_s, "W_or_s", (1, 2))
    if a.ndim == 1:
        if np.any(a < 0):
            raise ValueError("singular values must be >= 0")
        s = np.sort(a)[::-1]
    else:
        s = _singular_values(a)
    total = float(np.sum(s**2))
    if total == 0.0:
        warnings.warn("by_energy: the matrix is all zeros; using rank 1", RankWarning, stacklevel=2)
        return RankChoice(1, "all-zero matrix: rank 1 (clamped)", {"energy": energy, "kept": 1.0})
    r, kept = _rank_for_energy(s, energy)
    return RankChoice(
        r,
        f"smallest rank keeping >= {energy:.6g} of the squared Frobenius norm "
        f"(keeps {kept:.6g} of {len(s)} singular values' energy)",
        {"energy": energy, "kept": kept, "singular_values": s, "max_rank": len(s)},
    )


def by_energy_tucker2(weight, energy: float) -> RankChoice:
    """Tucker-2 ranks (r_in, r_out) keeping at least `energy` of ||weight||_F^2.

    With s0 the singular values of the mode-0 unfolding (Cout x Cin kh kw) and s1 those of the
    mode-1 unfolding (Cin x Cout kh kw), the HOSVD error satisfies
    err^2 <= tail0(r_out) + tail1(r_in), tail(r) = sum_{i>=r} s_i^2, and HOOI only lowers it.
    Among all pairs with tail0(r_out) + tail1(r_in) <= (1 - energy) ||weight||^2 this returns the
    one with the fewest parameters (ties: the larger bound on the kept energy), so the Tucker-2
    approximation computed by :func:`lrkernels.decompose.tucker2` keeps at least `energy`.
    """
    energy = _check_energy(energy)
    w = _real_array(weight, "weight", 4)
    cout, cin, kh, kw = w.shape
    s0 = _singular_values(unfold(w, 0))
    s1 = _singular_values(unfold(w, 1))
    total = float(np.sum(w**2))
    if total == 0.0:
        warnings.warn(
            "by_energy_tucker2: the weight is all zeros; using ranks (1, 1)",
            RankWarning,
            stacklevel=2,
        )
        return RankChoice((1, 1), "all-zero weight: ranks (1, 1) (clamped)", {"energy": energy})

    # tails[r] = sum_{i >= r} s_i^2 for r = 0..C (rank r drops s_r, s_{r+1}, ...), padded with 0.
    def tails(s, c):
        e = np.zeros(c)
        e[: len(s)] = s**2
        return np.concatenate([np.cumsum(e[::-1])[::-1], [0.0]])

    t0, t1 = tails(s0, cout), tails(s1, cin)
    # The tails of singular values at rounding level (s ~ s_max eps) are ~ eps^2 total, not 0: with
    # energy = 1 every pair would fail by that much and full ranks would be chosen even for a
    # tensor of ranks (1, 1). A relative tolerance of (unfolding width) eps absorbs the rounding
    # of the singular values and of the sums, as the numerical rank does in `by_energy`.
    rtol = max(cout, cin) * kh * kw * np.finfo(np.float64).eps
    allowed = (1.0 - energy) * total + rtol * total
    best = None
    for r_out in range(1, cout + 1):
        slack = allowed - t0[r_out]
        if slack < 0:
            continue
        # smallest r_in >= 1 with t1[r_in] <= slack (t1 is non-increasing)
        ok = np.nonzero(t1[1:] <= slack)[0]
        if len(ok) == 0:
            continue
        r_in = int(ok[0]) + 1
        params = factorized_params(w.shape, (r_in, r_out), "tucker2")
        bound = t0[r_out] + t1[r_in]
        key = (params, bound)
        if best is None or key < best[0]:
            best = (key, (r_in, r_out))
    if best is None:  # energy = 1 with rounding: full ranks keep everything
        best = ((factorized_params(w.shape, (cin, cout), "tucker2"), 0.0), (cin, cout))
    (params, bound), ranks = best
    kept = 1.0 - bound / total
    return RankChoice(
        ranks,
        f"cheapest (r_in, r_out) whose HOSVD bound keeps >= {energy:.6g} of the squared Frobenius "
        f"norm (bound {kept:.6g}, {params} parameters)",
        {
            "energy": energy,
            "kept_bound": kept,
            "params": params,
            "singular_values_mode0": s0,
            "singular_values_mode1": s1,
        },
    )


# --------------------------------------------------------------------------------------------
# compression ratio
# --------------------------------------------------------------------------------------------


def by_ratio(shape, ratio: float, kind: str = "linear") -> RankChoice:
    """The largest rank whose factorized parameter count is <= ratio * the dense count.

    kind "linear": shape (out, in), rank r <= min(out, in), params r (out + in).
    kind "cp": shape (Cout, Cin, kh, kw), params R (Cin + kh + kw + Cout), R <= the largest CP
    rank of such a tensor, prod(shape) / max(shape).
    kind "tucker2": shape (Cout, Cin, kh, kw). The split between the ranks keeps
    r_in / r_out ~ Cin / Cout: both channel counts are reduced by the same fraction f,
    r_in = max(1, round(f Cin)), r_out = max(1, round(f Cout)), and f is the largest of
    j / max(Cin, Cout), j = 1, 2, ..., for which the count fits.

    "Fits" is checked literally, ``params <= ratio * dense`` in floating point; a ratio too small
    for even the smallest factorization raises ValueError naming the smallest ratio that works.
    A ratio large enough for the largest rank returns that rank (the reason says so).
    """
    ratio = _check_ratio(ratio)
    kind = _canonical_kind(kind)
    shape = _check_shape(shape, kind)
    dense = dense_params(shape)
    limit = ratio * dense

    def params(rank):
        return factorized_params(shape, rank, kind)

    if kind == "tucker2":
        cout, cin = shape[0], shape[1]
        big = max(cin, cout)
        ladder = [
            (max(1, min(cin, round(j * cin / big))), max(1, min(cout, round(j * cout / big))))
            for j in range(1, big + 1)
        ]
    else:
        top = min(shape) if kind == "linear" else dense // max(shape)
        ladder = range(1, top + 1)
    # params() is non-decreasing along the ladder: binary search for the last rung that fits.
    lo, hi = 0, len(ladder)  # ladder[:lo] fits, ladder[hi:] does not
    while lo < hi:
        mid = (lo + hi) // 2
        if params(ladder[mid]) <= limit:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        need = params(ladder[0]) / dense
        raise ValueError(
            f"ratio={ratio!r} is too small for {kind} {shape}: the smallest factorization "
            f"(rank {ladder[0]}) needs ratio >= {need:.6g}"
        )
    rank = ladder[lo - 1]
    p = params(rank)
    note = " (the largest rank there is)" if lo == len(ladder) else ""
    split = " with r_in/r_out ~ Cin/Cout" if kind == "tucker2" else ""
    return RankChoice(
        rank,
        f"largest {kind} rank{split} with <= {ratio:.6g} x the dense parameters: {p} of {dense} "
        f"({p / dense:.4g}){note}",
        {"ratio": ratio, "params": p, "dense_params": dense, "achieved_ratio": p / dense},
    )


# --------------------------------------------------------------------------------------------
# empirical VBMF (Nakajima, Sugiyama, Babacan, Tomioka, JMLR 14, 2013)
# --------------------------------------------------------------------------------------------


def _tau_bar(alpha: float) -> float:
    """The root t > 0 of log(t + 1) + alpha log(t / alpha + 1) - t (about 2.5129 sqrt(alpha))."""

    def psi0(t):
        return math.log1p(t) + alpha * math.log1p(t / alpha) - t

    lo, hi = 1e-12, 16.0  # psi0 > 0 near 0 (slope 1), < 0 at 16 for alpha in (0, 1]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if psi0(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _evb_objective(sigma2: np.ndarray, s2: np.ndarray, L: int, M: int, x_bar: float) -> np.ndarray:
    """The EVB free energy as a function of the noise variance (constants dropped).

    With x_h = gamma_h^2 / (M sigma2): sum_h [x_h - log x_h] + sum_{x_h > x_bar} psi1(x_h),
    psi1(x) = log(tau + 1) + alpha log(tau / alpha + 1) - tau, tau = tau(x; alpha). The term
    -log x_h is written log(sigma2) + const, so zero singular values are fine.
    """
    alpha = L / M
    sigma2 = np.atleast_1d(sigma2)[:, None]
    x = s2[None, :] / (M * sigma2)
    obj = np.sum(x, axis=1) + L * np.log(sigma2[:, 0])
    big = x > x_bar
    xb = np.where(big, x, x_bar)  # avoid sqrt of negatives below the threshold
    d = xb - (1.0 + alpha)
    tau = 0.5 * (d + np.sqrt(np.maximum(d * d - 4.0 * alpha, 0.0)))
    psi1 = np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau
    return obj + np.sum(np.where(big, psi1, 0.0), axis=1)


def _minimize_log_grid(f, lo: float, hi: float, points: int = 256, rounds: int = 60) -> float:
    """Minimize f on [lo, hi], 0 < lo < hi: a log-spaced grid, then golden section near the best."""
    grid = np.geomspace(lo, hi, points)
    vals = f(grid)
    i = int(np.argmin(vals))
    a, b = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, points - 1)])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(np.exp([c]))[0], f(np.exp([d]))[0]
    for _ in range(rounds):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(np.exp([c]))[0]
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(np.exp([d]))[0]
    best = math.exp(0.5 * (a + b))
    return best if f(np.array([best]))[0] <= vals[i] else float(grid[i])


def vbmf(W, *, sigma2: float | None = None, _label: str = "vbmf") -> RankChoice:
    """Rank of a matrix by empirical variational Bayes matrix factorization (analytic, EVBMF).

    Nakajima et al. 2013 give the global EVB solution in closed form: with the matrix oriented
    L x M, L <= M, alpha = L / M, the component h is kept iff its singular value
    gamma_h > sqrt(M sigma2 x_bar), x_bar = (1 + tau_bar)(1 + alpha / tau_bar), tau_bar the zero
    of log(t + 1) + alpha log(t / alpha + 1) - t (computed, not the 2.5129 sqrt(alpha)
    approximation). The noise variance sigma2, unless given, minimizes the EVB free energy over
    the interval the paper proves it lies in; the minimization is a log grid plus golden section
    (numpy only).

    Never returns rank 0: when no component clears the threshold (pure noise, a 1 x 1 matrix,
    an all-zero matrix) the rank is clamped to 1 with a :class:`RankWarning`.
    """
    Y = _real_array(W, "W", 2)
    if Y.shape[0] > Y.shape[1]:
        Y = Y.T
    L, M = Y.shape
    alpha = L / M
    s = _singular_values(Y)  # L values, descending
    s2 = s**2
    total = float(s2.sum())
    t_bar = _tau_bar(alpha)
    x_bar = (1.0 + t_bar) * (1.0 + alpha / t_bar)
    details = {"L": L, "M": M, "alpha": alpha, "x_bar": x_bar, "singular_values": s}
    if total == 0.0:
        warnings.warn(f"{_label}: the matrix is all zeros; using rank 1", RankWarning, stacklevel=2)
        return RankChoice(1, "all-zero matrix: rank 1 (clamped)", details)
    if sigma2 is None:
        upper = total / (L * M)
        e_h = min(math.ceil(L / (1.0 + alpha)) - 1, L - 1)  # 0-based index of gamma_{eH+1}
        lower = max(s2[e_h] / (M * x_bar), float(np.mean(s2[e_h:])) / M)
        lower = max(lower, upper * 1e-12)
        if not lower < upper:
            sigma2 = upper
        else:
            sigma2 = _minimize_log_grid(lambda v: _evb_objective(v, s2, L, M, x_bar), lower, upper)
        details["sigma2_interval"] = (lower, upper)
    else:
        if not (isinstance(sigma2, numbers.Real) and sigma2 > 0 and math.isfinite(sigma2)):
            raise ValueError(f"sigma2 must be a positive finite number, got {sigma2!r}")
        sigma2 = float(sigma2)
    threshold = math.sqrt(M * sigma2 * x_bar)
    rank = int(np.count_nonzero(s > threshold))
    details.update(sigma2=sigma2, threshold=threshold, vbmf_rank=rank)
    if rank == 0:
        warnings.warn(
            f"{_label}: EVBMF keeps no component of the {Y.shape} matrix (no singular value above "
            f"the noise threshold {threshold:.4g}); using rank 1",
            RankWarning,
            stacklevel=2,
        )
        return RankChoice(
            1,
            f"EVBMF found no component above the noise threshold {threshold:.4g} "
            f"(estimated noise variance {sigma2:.4g}): rank clamped to 1",
            details,
        )
    return RankChoice(
        rank,
        f"EVBMF: {rank} singular values above the noise threshold {threshold:.4g} "
        f"(estimated noise variance {sigma2:.4g})",
        details,
    )


def vbmf_tucker2(weight, *, sigma2: float | None = None) -> RankChoice:
    """Tucker-2 ranks (r_in, r_out) by EVBMF on the two channel unfoldings of a conv weight.

    r_in from the mode-1 unfolding (Cin x Cout kh kw), r_out from the mode-0 unfolding
    (Cout x Cin kh kw), as Kim et al. 2016. Each is clamped to >= 1 (with a RankWarning).
    """
    w = _real_array(weight, "weight", 4)
    c_in = vbmf(unfold(w, 1), sigma2=sigma2, _label="vbmf_tucker2 (mode 1, r_in)")
    c_out = vbmf(unfold(w, 0), sigma2=sigma2, _label="vbmf_tucker2 (mode 0, r_out)")
    return RankChoice(
        (c_in.rank, c_out.rank),
        f"EVBMF on the unfoldings: r_in={c_in.rank} ({c_in.reason}); "
        f"r_out={c_out.rank} ({c_out.reason})",
        {"mode1": c_in.details, "mode0": c_out.details},
    )


# --------------------------------------------------------------------------------------------
# cross-validation score
# --------------------------------------------------------------------------------------------


def by_score(
    score_fn: Callable[[Any], float],
    ranks: Iterable,
    tol: float = 0.0,
    *,
    higher_is_better: bool = True,
    relative: bool = False,
) -> RankChoice:
    """The smallest rank whose score is within `tol` of the best score over `ranks`.

    ``score_fn(rank)`` is evaluated once per rank (e.g. validation accuracy of the layer built
    at that rank; pass ``higher_is_better=False`` for a loss or an error). "Within tol" means
    score >= best - tol (or <= best + tol for a loss); with ``relative=True`` tol is a fraction
    of |best|. Ranks are compared by their size (a pair by its sum, then lexicographically).
    A score that is not a finite number raises ValueError naming the rank.
    """
    ranks = list(ranks)
    if not ranks:
        raise ValueError("ranks must not be empty")
    if not (isinstance(tol, numbers.Real) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")

    def size(r):
        if isinstance(r, (tuple, list)):
            return (sum(r), tuple(r))
        return (r, (r,))

    order = sorted(ranks, key=size)
    scores = {}
    for r in order:
        v = score_fn(r)
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"score_fn({r!r}) returned {v!r}, not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"score_fn({r!r}) returned {v!r}, not a finite number")
        key = tuple(r) if isinstance(r, list) else r
        scores[key] = v
    values = list(scores.values())
    best = max(values) if higher_is_better else min(values)
    slack = tol * abs(best) if relative else tol
    for r in order:
        key = tuple(r) if isinstance(r, list) else r
        v = scores[key]
        ok = v >= best - slack if higher_is_better else v <= best + slack
        if ok:
            word = "relative " if relative else ""
            return RankChoice(
                key,
                f"smallest rank whose score {v:.6g} is within {word}tol={tol:.3g} of the best "
                f"score {best:.6g} over {len(order)} ranks",
                {"scores": scores, "best_score": best, "tol": tol},
            )
    raise AssertionError("unreachable")  # the best score itself is always within tol


# --------------------------------------------------------------------------------------------
# parameter budget over many layers
# --------------------------------------------------------------------------------------------


def allocate_budget(
    layers: Sequence,
    budget: int | None = None,
    *,
    ratio: float | None = None,
    weighting: str = "relative",
) -> RankChoice:
    """Ranks for a list of layers maximizing the kept energy under one total parameter budget.

    ``layers``: weight matrices (out, in) -> a rank for LowRankLinear, and conv weights
    (Cout, Cin, kh, kw) -> ranks (r_in, r_out) for Tucker-2. Give exactly one of ``budget`` (the
    total number of factorized weights, bias excluded) or ``ratio`` (the budget as a fraction of
    the total dense weights).

    Greedy on marginal error reduction per parameter: every layer starts at rank 1 (never 0);
    then, repeatedly, the single step (one more rank of a matrix; one more r_in or r_out of a
    Tucker-2 layer) with the largest error reduction per added parameter that still fits is
    taken, until none fits. The error reduction of a step is the next singular value squared of
    the matrix (exact, Eckart-Young) or of the corresponding unfolding (the HOSVD bound for
    Tucker-2). ``weighting="relative"`` divides each layer's reductions by its ||W||_F^2 (every
    layer counts alike whatever its scale); ``"absolute"`` uses them as they are.
    """
    if (budget is None) == (ratio is None):
        raise ValueError("allocate_budget: give exactly one of budget= (parameters) or ratio=")
    if weighting not in ("relative", "absolute"):
        raise ValueError(f"weighting must be 'relative' or 'absolute', got {weighting!r}")
    if not isinstance(layers, (list, tuple)) or len(layers) == 0:
        raise ValueError("layers must be a non-empty list of weight arrays")
    items = []
    for i, w in enumerate(layers):
        w = _real_array(w, f"layers[{i}]", (2, 4))
        kind = "linear" if w.ndim == 2 else "tucker2"
        norm2 = float(np.sum(w**2))
        scale = 1.0 / norm2 if (weighting == "relative" and norm2 > 0) else 1.0
        if kind == "linear":
            sv = [_singular_values(w) ** 2 * scale]
        else:
            # gains for r_in come from mode 1, for r_out from mode 0
            sv = [
                _singular_values(unfold(w, 1)) ** 2 * scale,
                _singular_values(unfold(w, 0)) ** 2 * scale,
            ]
        items.append({"shape": w.shape, "kind": kind, "gains": sv, "norm2": norm2, "scale": scale})
    dense_total = sum(dense_params(it["shape"]) for it in items)
    if ratio is not None:
        ratio = _check_ratio(ratio)
        budget = int(math.floor(ratio * dense_total))
    else:
        budget = _check_int(budget, "budget", 1)

    ranks = [[1] if it["kind"] == "linear" else [1, 1] for it in items]

    def cost(i):
        it = items[i]
        return factorized_params(
            it["shape"], ranks[i][0] if it["kind"] == "linear" else tuple(ranks[i]), it["kind"]
        )

    used = sum(cost(i) for i in range(len(items)))
    if used > budget:
        raise ValueError(
            f"budget={budget} is below the {used} parameters of every layer at rank 1 "
            f"(dense total {dense_total})"
        )
    caps = []
    for it in items:
        if it["kind"] == "linear":
            caps.append([min(it["shape"])])
        else:
            caps.append([it["shape"][1], it["shape"][0]])  # r_in <= Cin, r_out <= Cout

    def step(i, m):
        """(gain, added params) of raising mode m of layer i by one, or None at the cap."""
        r = ranks[i][m]
        if r >= caps[i][m]:
            return None
        g = items[i]["gains"][m]
        gain = float(g[r]) if r < len(g) else 0.0
        before = cost(i)
        ranks[i][m] += 1
        after = cost(i)
        ranks[i][m] -= 1
        return gain, after - before

    heap = []
    version = {}

    def push(i, m):
        st = step(i, m)
        version[(i, m)] = version.get((i, m), 0) + 1
        if st is not None and st[0] > 0:
            gain, add = st
            heapq.heappush(heap, (-gain / add, i, m, version[(i, m)], add))

    for i in range(len(items)):
        for m in range(len(ranks[i])):
            push(i, m)
    while heap:
        _, i, m, ver, add = heapq.heappop(heap)
        if ver != version[(i, m)]:
            continue  # stale: the layer changed since this step was priced
        if used + add > budget:
            continue  # later steps of this mode cost at least as much: it is done
        ranks[i][m] += 1
        used += add
        for mm in range(len(ranks[i])):
            push(i, mm)  # a Tucker-2 step changes the price of the other mode's next step

    result = [r[0] if it["kind"] == "linear" else (r[0], r[1]) for r, it in zip(ranks, items)]
    kept = []
    for r, it in zip(ranks, items):
        if it["kind"] == "linear":
            g = it["gains"][0]
            kept.append(float(np.sum(g[: r[0]]) / np.sum(g)) if np.sum(g) > 0 else 1.0)
        else:
            g1, g0 = it["gains"]
            tot = np.sum(g0)
            lost = (np.sum(g1[r[0] :]) + np.sum(g0[r[1] :])) / tot if tot > 0 else 0.0
            kept.append(float(1.0 - lost))
    return RankChoice(
        result,
        f"greedy on {weighting} error reduction per parameter: {used} of the budget {budget} "
        f"parameters ({used / dense_total:.4g} of the dense {dense_total})",
        {
            "params": used,
            "budget": budget,
            "dense_params": dense_total,
            "kept_energy": kept,
            "weighting": weighting,
        },
    )
