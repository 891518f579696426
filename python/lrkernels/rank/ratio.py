"""Ranks by compression ratio: by_ratio (largest rank within ratio x the dense parameters)."""

from __future__ import annotations

from ._base import (
    RankChoice,
    _canonical_kind,
    _check_ratio,
    _check_shape,
    dense_params,
    factorized_params,
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
