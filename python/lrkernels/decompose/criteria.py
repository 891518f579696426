"""The one criterion of a decomposition (rank=, energy=, ratio=, vbmf=True) -> the factors and
the RankChoice that says which rank was used and why.

linear_factors(weight, ...)   -> U, V, choice                          (LowRankLinear)
tucker2_factors(weight, ...)  -> first, core, last, choice             (TuckerConv2d)
cp_factors(weight, ...)       -> first, vertical, horizontal, last, choice   (CPConv2d)

All three take the same criterion keywords; TuckerConv2d's pair of ranks is rank=(r_in, r_out)
(an int means both), ranks= being accepted as the same keyword.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import rank as _rank
from ..rank import RankChoice
from ..rank._base import _check_energy
from ._common import ConvergenceWarning, _array, _check_int, _check_iter
from .calibration import _calibration_rows, _make_calib
from .cp_als import _cp_64, _cp_finish, _max_cp_rank
from .cp_search import _check_budget, _cp_energy_search
from .lowrank_svd import _linear_target, _svd64
from .tucker import _check_method, _check_ranks, _tucker2_64

__all__ = ["cp_factors", "linear_factors", "tucker2_factors"]


def _criterion(where, rank_name, rank, energy, ratio, vbmf, allow_vbmf=True):
    """The name of the one criterion given (rank_name, "energy", "ratio" or "vbmf").

    rank_name is the keyword the caller used for the rank ("rank", or "ranks" for Tucker), so the
    message names what the user wrote; the options list always shows "rank=".
    """
    if not isinstance(vbmf, (bool, np.bool_)):
        raise ValueError(f"{where}: vbmf must be True or False, got {vbmf!r}")
    options = ["rank=", "energy=", "ratio="] + (["vbmf=True"] if allow_vbmf else [])
    given = [
        n for n, v in ((rank_name, rank), ("energy", energy), ("ratio", ratio)) if v is not None
    ]
    if vbmf:
        if not allow_vbmf:
            raise ValueError(
                f"{where}: vbmf=True is not available (there is no analytic VBMF for a CP rank); "
                f"give exactly one of {', '.join(options)}"
            )
        given.append("vbmf")
    if len(given) != 1:
        got = "none" if not given else ", ".join(given)
        raise ValueError(f"{where}: give exactly one criterion of {', '.join(options)} (got {got})")
    return "rank" if given[0] == rank_name else given[0]


def _tucker_rank_keyword(where, rank, ranks):
    """(value, keyword) of TuckerConv2d's rank criterion: rank= and ranks= are one keyword."""
    if rank is not None and ranks is not None:
        raise ValueError(
            f"{where}: rank= and ranks= are the same criterion (the pair (r_in, r_out)); "
            f"give one of them, got rank={rank!r} and ranks={ranks!r}"
        )
    return (ranks, "ranks") if ranks is not None else (rank, "rank")


def linear_factors(
    weight, *, rank=None, energy=None, ratio=None, vbmf=False, calibration=None, reg=1e-6
):
    """(U, V, RankChoice) for LowRankLinear from a dense weight W (out, in), one criterion.

    rank: that rank (1 <= rank <= min(out, in)). energy: the smallest rank keeping that fraction
    of ||W||_F^2 (with calibration: of the output energy E||W x||^2, i.e. of the spectrum of
    W C^(1/2)). ratio: the largest rank with rank (out + in) <= ratio out in. vbmf=True:
    EVBMF on W (with calibration: on W C^(1/2)). calibration: see `svd`.
    """
    W = _array(weight, "weight", 2)
    which = _criterion("LowRankLinear.from_dense", "rank", rank, energy, ratio, vbmf)
    X = None if calibration is None else _calibration_rows(calibration, W.shape[1])
    A = W if X is None else _linear_target(W, X, reg)
    data = " of the output energy on the calibration data" if X is not None else ""
    if which == "rank":
        r = _check_int(rank, "rank", 1, min(W.shape), f"the matrix rank bound min{W.shape}")
        choice = RankChoice(r, "given rank", {})
    elif which == "energy":
        choice = _rank.by_energy(A, energy)
    elif which == "ratio":
        choice = _rank.by_ratio(W.shape, ratio, "linear")
    else:
        choice = _rank.vbmf(A)
    if data and which in ("energy", "vbmf"):
        choice = RankChoice(choice.rank, choice.reason + data, choice.details)
    U, V = _svd64(W, min(choice.rank, min(W.shape)), X, reg)
    return U.astype(np.float32), V.astype(np.float32), choice


def tucker2_factors(
    weight,
    *,
    rank=None,
    ranks=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    method="hooi",
    n_iter_max=100,
    tol=1e-7,
    reg=1e-6,
):
    """(first, core, last, RankChoice) for TuckerConv2d from a conv weight, one criterion.

    rank (or ranks, the same keyword; not both): (r_in, r_out) (an int: both). energy:
    `rank.by_energy_tucker2` (the HOSVD bound, so the kept fraction of ||weight||^2 is >= energy;
    with calibration applied to the Cin-whitened weight). ratio: `rank.by_ratio(shape, ratio,
    "tucker2")` (r_in/r_out ~ Cin/Cout). vbmf=True: `rank.vbmf_tucker2` (with calibration on the
    whitened weight). See `tucker2`.
    """
    where = "TuckerConv2d.from_dense"
    ranks, rank_name = _tucker_rank_keyword(where, rank, ranks)
    T = _array(weight, "weight", 4)
    which = _criterion(where, rank_name, ranks, energy, ratio, vbmf)
    _check_method(method)
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    calib = _make_calib(calibration, T.shape, stride, padding, dilation, layout, reg)
    A = T if calib is None else calib.whiten(T)
    if which == "rank":
        choice = RankChoice(
            _check_ranks(ranks, T.shape[1], T.shape[0], rank_name), "given ranks", {}
        )
    elif which == "energy":
        choice = _rank.by_energy_tucker2(A, energy)
    elif which == "ratio":
        choice = _rank.by_ratio(T.shape, ratio, "tucker2")
    else:
        choice = _rank.vbmf_tucker2(A)
    if calib is not None and which in ("energy", "vbmf"):
        choice = RankChoice(
            choice.rank, choice.reason + " (of the channel-whitened weight)", choice.details
        )
    first, core, last, info = _tucker2_64(T, *choice.rank, method, n_iter_max, tol, calib)
    choice.details["decomposition"] = info
    return first.astype(np.float32), core.astype(np.float32), last.astype(np.float32), choice


def cp_factors(
    weight,
    *,
    rank=None,
    energy=None,
    ratio=None,
    calibration=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    n_iter_max=500,
    tol=1e-6,
    seed=0,
    reg=1e-6,
    vbmf=False,
    max_seconds=20.0,
    progress=None,
):
    """(first, vertical, horizontal, last, RankChoice) for CPConv2d, one criterion.

    rank: that CP rank. ratio: `rank.by_ratio(shape, ratio, "cp")`. energy: the smallest rank
    whose ALS fit keeps >= energy of ||weight||^2 (with calibration: of the Cin-whitened weight),
    by bisection between bounds from SVDs, each rank tried fitted by a warm-started ALS of at
    most 50 sweeps (see `lrkernels.decompose.cp_search`); the RankChoice's reason says how the
    rank was found, its details hold the bounds, the ranks tried and what each kept.

    max_seconds (energy only; None: no limit): the time budget of the search and of the final
    fit. The rank returned always keeps the energy; when the budget runs out before the search
    ends it may not be the smallest (RankWarning). progress (energy only): True prints the search
    on stderr, a callable gets one dict per step (event, message, seconds, ...). See `cp`.
    """
    T = _array(weight, "weight", 4)
    which = _criterion("CPConv2d.from_dense", "rank", rank, energy, ratio, vbmf, allow_vbmf=False)
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    max_seconds, progress = _check_budget(max_seconds, progress)
    calib = _make_calib(calibration, T.shape, stride, padding, dilation, layout, reg)
    if which == "energy":
        energy = _check_energy(energy)
        A = T if calib is None else calib.whiten(T)
        raw, info, choice = _cp_energy_search(
            A, energy, n_iter_max, tol, seed, max_seconds, progress
        )
        factors, info = _cp_finish(T, raw, info, calib)
        if info["diverged"]:
            warnings.warn(
                f"CP-ALS (rank {choice.rank}) {info['stop']}; the best iterate is used",
                ConvergenceWarning,
                stacklevel=2,
            )
    else:
        if which == "rank":
            R = _check_int(
                rank, "rank", 1, _max_cp_rank(T.shape), f"the largest CP rank of a {T.shape} tensor"
            )
            choice = RankChoice(R, "given rank", {})
        else:
            choice = _rank.by_ratio(T.shape, ratio, "cp")
        factors, info = _cp_64(T, choice.rank, n_iter_max, tol, seed, calib)
    choice.details["decomposition"] = info
    return tuple(f.astype(np.float32) for f in factors) + (choice,)
