"""Ranks by kept energy: by_energy (a matrix) and by_energy_tucker2 (a conv weight)."""

from __future__ import annotations

import warnings

import numpy as np

from ._base import (
    RankChoice,
    RankWarning,
    _check_energy,
    _real_array,
    _singular_values,
    factorized_params,
    unfold,
)

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
