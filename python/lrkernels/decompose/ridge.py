"""The ridge of the data-aware fits chosen by held-out error, the few-positions warning, the
energy floor of data-aware energy ranks and the low-rank warning (private to decompose).

reg (every from_dense and *_factors): "auto" (default) or a finite number >= 0, relative to the
mean eigenvalue of the input second moment C (the ridge added is reg * trace(C) / dim * I).
"auto" holds out a fixed 20% of the calibration (rows for a linear layer, whole images for a
convolution; a seeded permutation, so the choice is deterministic), fits at the chosen rank on
the other 80% for each value of REG_GRID, keeps the one with the lowest held-out relative output
error (ties: the larger ridge) and refits on all the calibration data with it. Large values of
the grid make the fit weight-only in effect (C + ridge ~ ridge I), so "auto" can fall back to it.
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
HELDOUT_FRACTION = 0.2
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


def _split(n):
    """(train, held-out) indices of n items: a fixed seeded permutation, 20% (>= 1) held out."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    k = max(1, int(round(HELDOUT_FRACTION * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _pick(grid, errors):
    """The grid value with the lowest error; ties (within 1e-9 relative): the larger value."""
    best = min(errors)
    ok = [g for g, e in zip(grid, errors) if e <= best * (1 + 1e-9) + 1e-300]
    return max(ok)


def select_reg(reg, n_items, fit_heldout):
    """(the ridge to fit with, details). fit_heldout(reg, train_idx, heldout_idx) -> held-out
    relative output error of the fit on the train items. With fewer than 2 items nothing can be
    held out: the criterion ridge (reg="auto") or reg itself, and no held-out error."""
    details = {"reg_option": reg}
    if n_items < 2:
        details.update(reg=_criterion_reg(reg), heldout_error=None)
        return details["reg"], details
    tr, te = _split(n_items)

    def err(g):
        try:
            e = float(fit_heldout(g, tr, te))
        except np.linalg.LinAlgError:
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
    details["heldout_items"] = len(te)
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
