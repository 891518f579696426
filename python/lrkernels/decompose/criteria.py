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
from .ridge import (
    ENERGY_FLOOR,
    LINEAR_FOLDS,
    _check_reg_option,
    _criterion_reg,
    _warn_few_positions,
    _warn_low_rank,
    floor_rank,
    select_reg,
)
from .tucker import _check_method, _check_ranks, _tucker2_64, _tucker_full

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


def _floored(choice, rank, weight_rank):
    """choice with the energy floor applied: rank (already floored), the reason and details."""
    details = dict(choice.details, data_rank=choice.rank, weight_only_rank=weight_rank)
    details["energy_floor"] = ENERGY_FLOOR
    reason = choice.reason
    if rank != choice.rank:
        reason += (
            f"; raised from {choice.rank} to {rank} by the energy floor (never below "
            f"{ENERGY_FLOOR:g} x the weight-only rank {weight_rank} at the same energy)"
        )
    return RankChoice(rank, reason, details)


def _linear_out_err(W, What, X):
    """||X (W - What)^T|| / ||X W^T||: the relative output error of What on the rows X."""
    den = float(np.linalg.norm(X @ W.T))
    return float(np.linalg.norm(X @ (W - What).T)) / den if den > 0 else 0.0


def _conv_reg(calib, reg, T, fit):
    """select_reg for a conv calibration: fit(calib_train) -> the dense reconstruction."""

    def heldout(g, tr, te):
        return calib.subset(te, 0.0).output_error(T, fit(calib.subset(tr, g)))

    return select_reg(reg, calib.X.shape[0], heldout)


def _tucker_rank_keyword(where, rank, ranks):
    """(value, keyword) of TuckerConv2d's rank criterion: rank= and ranks= are one keyword."""
    if rank is not None and ranks is not None:
        raise ValueError(
            f"{where}: rank= and ranks= are the same criterion (the pair (r_in, r_out)); "
            f"give one of them, got rank={rank!r} and ranks={ranks!r}"
        )
    return (ranks, "ranks") if ranks is not None else (rank, "rank")


def linear_factors(
    weight, *, rank=None, energy=None, ratio=None, vbmf=False, calibration=None, reg="auto"
):
    """(U, V, RankChoice) for LowRankLinear from a dense weight W (out, in), one criterion.

    rank: that rank (1 <= rank <= min(out, in)). energy: the smallest rank keeping that fraction
    of ||W||_F^2 (with calibration: of the output energy E||W x||^2, i.e. of the spectrum of
    W C^(1/2), but never below ceil(0.5 x the weight-only energy rank): the energy floor).
    ratio: the largest rank with rank (out + in) <= ratio out in. vbmf=True: EVBMF on W (with
    calibration: on W C^(1/2)). calibration: see `svd`. reg: the relative ridge of the
    data-aware fit, "auto" (chosen by 5-fold cross-validated output error over the rows, see
    `lrkernels.decompose.ridge`) or a number >= 0. An energy/vbmf rank <= 2 or < 2% of
    min(out, in) warns (RankWarning); fewer calibration rows than 4 x in: CalibrationWarning.
    """
    where = "LowRankLinear.from_dense"
    W = _array(weight, "weight", 2)
    which = _criterion(where, "rank", rank, energy, ratio, vbmf)
    reg = _check_reg_option(reg)
    X = None if calibration is None else _calibration_rows(calibration, W.shape[1])
    if X is not None:
        _warn_few_positions(where, X.shape[0], W.shape[1], "rows")
    A = W if X is None else _linear_target(W, X, _criterion_reg(reg))
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
    if data and which == "energy":
        rw = _rank.by_energy(W, energy).rank
        choice = _floored(choice, floor_rank(choice.rank, rw), rw)
    if which in ("energy", "vbmf"):
        _warn_low_rank(where, choice.rank, min(W.shape), f"{which}=")
    r = min(choice.rank, min(W.shape))
    if X is None:
        U, V = _svd64(W, r)
    else:

        def heldout(g, tr, te):
            U, V = _svd64(W, r, X[tr], g)
            return _linear_out_err(W, U @ V, X[te])

        reg_used, details = select_reg(reg, X.shape[0], heldout, folds=LINEAR_FOLDS)
        U, V = _svd64(W, r, X, reg_used)
        details["insample_error"] = _linear_out_err(W, U @ V, X)
        details["calibration_positions"] = X.shape[0]
        choice.details.update(details)
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
    reg="auto",
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
    reg = _check_reg_option(reg)
    calib = _make_calib(
        calibration, T.shape, stride, padding, dilation, layout, _criterion_reg(reg)
    )
    if calib is not None:
        _warn_few_positions(where, calib.positions, int(np.prod(T.shape[1:])), "patches")
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
    if calib is not None and which == "energy":
        rw = _rank.by_energy_tucker2(T, energy).rank
        floored = tuple(floor_rank(d, w) for d, w in zip(choice.rank, rw))
        choice = _floored(choice, floored, rw)
    if which in ("energy", "vbmf"):
        for r, full in zip(choice.rank, (T.shape[1], T.shape[0])):
            _warn_low_rank(where, r, full, f"{which}=")
    if calib is not None:

        def fit(c):
            first, core, last, _ = _tucker2_64(T, *choice.rank, method, n_iter_max, tol, c)
            return _tucker_full(first, core, last)

        reg_used, details = _conv_reg(calib, reg, T, fit)
        if reg_used != calib.reg:
            calib = calib.subset(slice(None), reg_used)
    first, core, last, info = _tucker2_64(T, *choice.rank, method, n_iter_max, tol, calib)
    if calib is not None:
        details["insample_error"] = info["output_error"]
        details["calibration_positions"] = calib.positions
        choice.details.update(details)
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
    reg="auto",
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

    With calibration, energy's rank is never below ceil(0.5 x L), L the largest of the
    weight-only energy ranks of the four unfoldings of the weight (a lower bound of the
    weight-only CP rank at that energy): the energy floor. reg and the warnings: as
    `tucker2_factors` (the held-out fits run at most 100 ALS sweeps; the low-rank warning
    compares the rank with min(Cout, Cin)).
    """
    where = "CPConv2d.from_dense"
    T = _array(weight, "weight", 4)
    which = _criterion(where, "rank", rank, energy, ratio, vbmf, allow_vbmf=False)
    n_iter_max, tol = _check_iter(n_iter_max, tol)
    max_seconds, progress = _check_budget(max_seconds, progress)
    reg = _check_reg_option(reg)
    calib = _make_calib(
        calibration, T.shape, stride, padding, dilation, layout, _criterion_reg(reg)
    )
    if calib is not None:
        _warn_few_positions(where, calib.positions, int(np.prod(T.shape[1:])), "patches")
    raw = None
    if which == "energy":
        energy = _check_energy(energy)
        A = T if calib is None else calib.whiten(T)
        raw, search_info, choice = _cp_energy_search(
            A, energy, n_iter_max, tol, seed, max_seconds, progress
        )
        if calib is not None:
            lb = max(_rank.by_energy(_rank.unfold(T, m), energy).rank for m in range(4))
            R = floor_rank(choice.rank, lb)
            if R != choice.rank:
                raw = None  # the search's fit is not at the floored rank
            choice = _floored(choice, R, lb)
        _warn_low_rank(where, choice.rank, min(T.shape[:2]), "energy=")
    elif which == "rank":
        R = _check_int(
            rank, "rank", 1, _max_cp_rank(T.shape), f"the largest CP rank of a {T.shape} tensor"
        )
        choice = RankChoice(R, "given rank", {})
    else:
        choice = _rank.by_ratio(T.shape, ratio, "cp")
    if calib is not None:

        def fit(c):
            first, vertical, horizontal, last = _cp_64(
                T, choice.rank, min(n_iter_max, 100), tol, seed, c
            )[0]
            return np.einsum("or,rc,ry,rx->ocyx", last, first, vertical, horizontal)

        reg_used, details = _conv_reg(calib, reg, T, fit)
        if reg_used != calib.reg:
            calib = calib.subset(slice(None), reg_used)
            raw = None  # the search whitened with another ridge
    if raw is not None:
        factors, info = _cp_finish(T, raw, search_info, calib)
        if info["diverged"]:
            warnings.warn(
                f"CP-ALS (rank {choice.rank}) {info['stop']}; the best iterate is used",
                ConvergenceWarning,
                stacklevel=2,
            )
    else:
        factors, info = _cp_64(T, choice.rank, n_iter_max, tol, seed, calib)
    if calib is not None:
        details["insample_error"] = info["output_error"]
        details["calibration_positions"] = calib.positions
        choice.details.update(details)
    choice.details["decomposition"] = info
    return tuple(f.astype(np.float32) for f in factors) + (choice,)
