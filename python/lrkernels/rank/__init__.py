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

Only numpy is used. Modules: ``energy`` (by_energy, by_energy_tucker2), ``ratio`` (by_ratio),
``bayes`` (vbmf, vbmf_tucker2), ``selection`` (by_score, allocate_budget).
"""

from __future__ import annotations

# One module per family of criteria; `_base` holds what they share (lrkernels.decompose reuses its
# argument checks, so that every message reads the same). KINDS and unfold: module-level names of
# the former single-file module, kept.
from ._base import KINDS as KINDS
from ._base import RankChoice, RankWarning, dense_params, factorized_params
from ._base import unfold as unfold
from .bayes import vbmf, vbmf_tucker2
from .energy import by_energy, by_energy_tucker2
from .ratio import by_ratio
from .selection import allocate_budget, by_score

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
