"""The rank module's shared pieces: RankChoice, RankWarning, argument checks, unfoldings and
parameter counts (private; the public names are re-exported by lrkernels.rank)."""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def _check_real(value, name: str, kind: str, valid, range_: str) -> float:
    """value as a Python float: ValueError "{name} must be {kind}" when it is not a real number
    (bools are refused), "{name} must be {range_}" when valid(value) is false."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    value = float(value)
    if not valid(value):
        raise ValueError(f"{name} must be {range_}, got {value!r}")
    return value


def _check_energy(energy) -> float:
    return _check_real(
        energy, "energy", "a number in (0, 1]", lambda e: 0.0 < e <= 1.0, "in (0, 1]"
    )


def _check_ratio(ratio) -> float:
    return _check_real(
        ratio,
        "ratio",
        "a positive number",
        lambda q: q > 0.0 and math.isfinite(q),
        "a positive finite number",
    )


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
