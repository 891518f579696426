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

Layers from dense weights (exactly one criterion: rank=, energy=, ratio=, vbmf=True)
-----------------------------------------------------------------------------------
LowRankLinear.from_dense(weight, bias=None, *, rank=None, energy=None, ratio=None, vbmf=False,
                         calibration=None, reg="auto")
TuckerConv2d.from_dense(weight, bias=None, *, rank=None, energy=None, ratio=None, vbmf=False,
                        calibration=None, reg="auto", stride=1, padding=0, dilation=1,
                        layout="NCHW", method="hooi", ranks=None)
                        rank=(r_in, r_out); ranks= is the same
CPConv2d.from_dense(weight, bias=None, *, rank=None, energy=None, ratio=None, vbmf=False,
                    calibration=None, reg="auto", stride=1, padding=0, dilation=1, ...,
                    max_seconds=20.0, progress=None)   energy=: a bounded, reported rank search

The classmethods build ``cls`` (user subclasses get their own type); they are installed from
:mod:`lrkernels.layer_specs`. The same as functions: `lowrank_linear_from_dense`,
`tucker_conv2d_from_dense`, `cp_conv2d_from_dense`; `linear_factors`, `tucker2_factors`,
`cp_factors` return the factors and the :class:`lrkernels.rank.RankChoice` that says which rank
was used and why. See :mod:`lrkernels.rank` for the criteria and :mod:`lrkernels.report` for the
error/size report.

reg="auto": the ridge of the data-aware fit chosen by held-out output error (see ``ridge``).

Modules, one concern each: ``calibration`` (input statistics, the conv calibration object),
``ridge`` (reg="auto", the calibration and low-rank warnings, the energy floor),
``lowrank_svd`` (SVD), ``tucker`` (Tucker-2), ``cp_als`` (CP-ALS), ``cp_search`` (the CP rank
of the energy criterion: bisection between SVD bounds, in a time budget), ``criteria`` (one
criterion -> factors and RankChoice), ``from_dense`` (layers and the classmethods). The SVD and
CP modules are not named ``svd``/``cp`` so that they do not collide with the functions of those
names.
"""

from __future__ import annotations

from ..rank import RankChoice, RankWarning
from ._common import CalibrationWarning, ConvergenceWarning
from .calibration import channel_second_moment, patch_second_moment
from .cp_als import cp
from .criteria import cp_factors, linear_factors, tucker2_factors
from .from_dense import cp_conv2d_from_dense, lowrank_linear_from_dense, tucker_conv2d_from_dense
from .lowrank_svd import svd
from .tucker import tucker2

__all__ = [
    "CalibrationWarning",
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
