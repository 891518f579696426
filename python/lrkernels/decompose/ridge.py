"""The ridge of the data-aware fits chosen by held-out error, the few-positions warning, the
energy floor of data-aware energy ranks and the low-rank warning (private to decompose).

reg (every from_dense and *_factors): "auto" (default) or a finite number >= 0, relative to the
mean eigenvalue of the input second moment C (the ridge added is reg * trace(C) / dim * I).
"auto" fits at the chosen rank, for each value of REG_GRID, on part of the calibration and
measures the relative output error on the rest: 5-fold cross-validation over the rows for a
linear layer, one 80/20 split of whole images for a convolution (fits cost more there); the
folds come from a seeded permutation, so the choice is deterministic. It keeps the value with
the lowest mean held-out error (ties: the larger ridge) and refits on all the data with it.
Large values of the grid make the fit weight-only in effect (C + ridge ~ ridge I), so "auto"
can fall back to it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..rank import RankWarning
from ._common import CalibrationWarning, _check_reg

REG_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# The ridge of the rank criteria (energy=, vbmf=) when reg="auto": the former default.
CRITERION_REG = 1e-6
HELDOUT_FRACTION = 0.2  # conv: one split holding out 20% of the images
LINEAR_FOLDS = 5
# fewer calibration positions than this times the input dimension: CalibrationWarning
FEW_POSITIONS_FACTOR = 4
# energy= with calibration: the rank is never below ENERGY_FLOOR x the weight-only rank
ENERGY_FLOOR = 0.5
# an energy/vbmf rank <= LOW_RANK_ABS or < LOW_RANK_FRACTION x full (full >= LOW_RANK_MIN_FULL)
LOW_RANK_ABS, LOW_RANK_FRACTION, LOW_RANK_MIN_FULL = 2, 0.02, 16
_SPLIT_SEED = 0


def _check_reg_option(reg):
    """reg as "auto" or a float >= 0 (ValueError otherwise)."""
    if isinstance(reg, str):
        if reg != "auto":
            raise ValueError(f"reg must be 'auto' or a finite number >= 0, got {reg!r}")
        return reg
    try:
        return _check_reg(reg)
    except ValueError:
        raise ValueError(f"reg must be 'auto' or a finite number >= 0, got {reg!r}") from None


def _criterion_reg(reg):
    return CRITERION_REG if reg == "auto" else reg


def _warn_few_positions(where, positions, dim, what):
    if positions < FEW_POSITIONS_FACTOR * dim:
        warnings.warn(
            f"{where}: the calibration has {positions} {what}, fewer than "
            f"{FEW_POSITIONS_FACTOR} x the input dimension {dim}: the data-aware fit may overfit "
            f"(reg='auto' chooses the ridge on held-out data; see rank_choice.details)",
            CalibrationWarning,
            stacklevel=4,
        )


def _folds(n, k):
    """[(train, held-out)] index pairs of n items from a fixed seeded permutation: k > 1 folds
    (at most n), or for k = 1 one split holding out 20% (>= 1)."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    if k == 1:
        h = max(1, int(round(HELDOUT_FRACTION * n)))
        return [(np.sort(perm[h:]), np.sort(perm[:h]))]
    parts = np.array_split(perm, min(k, n))
    return [(np.sort(np.setdiff1d(perm, p)), np.sort(p)) for p in parts]


def _pick(grid, errors):
    """The grid value with the lowest error; ties (within 1e-9 relative): the larger value."""
    best = min(errors)
    ok = [g for g, e in zip(grid, errors) if e <= best * (1 + 1e-9) + 1e-300]
    return max(ok)


def select_reg(reg, n_items, fit_heldout, folds=1):
    """(the ridge to fit with, details). fit_heldout(reg, train_idx, heldout_idx) -> held-out
    relative output error of the fit on the train items; averaged over `folds` folds (1: one
    80/20 split). With fewer than 2 items nothing can be held out: the criterion ridge
    (reg="auto") or reg itself, and no held-out error."""
    details = {"reg_option": reg}
    if n_items < 2:
        details.update(reg=_criterion_reg(reg), heldout_error=None)
        return details["reg"], details
    splits = _folds(n_items, folds)

    def err(g):
        try:
            e = float(np.mean([fit_heldout(g, tr, te) for tr, te in splits]))
        except (np.linalg.LinAlgError, ValueError):
            return math.inf
        return e if math.isfinite(e) else math.inf

    if reg == "auto":
        errors = [err(g) for g in REG_GRID]
        chosen = _pick(REG_GRID, errors) if min(errors) < math.inf else CRITERION_REG
        details.update(
            reg=chosen,
            reg_grid=list(REG_GRID),
            reg_heldout_errors=errors,
            heldout_error=errors[REG_GRID.index(chosen)] if chosen in REG_GRID else None,
        )
    else:
        details.update(reg=reg, heldout_error=err(reg))
    details["heldout_folds"] = len(splits)
    return details["reg"], details


def _warn_low_rank(where, rank, full, criterion):
    """RankWarning when an energy/vbmf rank is a tiny part of the full rank."""
    if full >= LOW_RANK_MIN_FULL and (rank <= LOW_RANK_ABS or rank < LOW_RANK_FRACTION * full):
        warnings.warn(
            f"{where}: {criterion} chose rank {rank} of at most {full} (<= {LOW_RANK_ABS} or "
            f"< {LOW_RANK_FRACTION:.0%} of it): check that this layer really is that compressible",
            RankWarning,
            stacklevel=4,
        )


def floor_rank(data_rank, weight_rank):
    """The energy floor: max(data_rank, ceil(ENERGY_FLOOR x weight_rank))."""
    return max(int(data_rank), int(math.ceil(ENERGY_FLOOR * int(weight_rank))))
