"""Ranks by empirical variational Bayes matrix factorization: vbmf and vbmf_tucker2."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from ._base import RankChoice, RankWarning, _real_array, _singular_values, unfold

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
