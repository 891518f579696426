"""Shared helpers for the lrkernels tests: float32 error bounds, layer models, case collection.

Imported by the test modules as a plain module (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import lrkernels
import numpy as np
import pytest
from lrkernels import reference

EPS32 = float(np.finfo(np.float32).eps)
# Products of tiny numbers can land in float32 subnormals, where the rounding error is absolute.
SUBNORMAL32 = float(np.finfo(np.float32).smallest_subnormal)
# Safety factor on top of the classic n * u bound (u = eps / 2): generous enough for any summation
# order and FMA use, still orders of magnitude below what a wrong kernel produces.
BOUND_FACTOR = 8.0

CANONICAL_ISAS = ("scalar", "neon", "avx2", "avx512")


def _abs64(a) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.float64))


def lowrank_bound(x, U, V, bias=None) -> np.ndarray:
    """Elementwise bound on |y - y_exact| for y = U (V x) + b computed in float32.

    Stage 1 (t = V x, K terms) errs by <= K u |V||x|; stage 2 (y = U t + b, R + 1 terms) by
    <= (R + 1) u (|U||t| + |b|) plus the propagated stage-1 error |U| K u |V||x|; the cast of
    float64 inputs/weights to float32 adds <= u per factor. All of it is covered by
    8 eps (K + R + 2) (|U| (|V| |x|) + |b|).
    """
    aV = _abs64(V)
    R, K = aV.shape
    mag = (_abs64(x) @ aV.T) @ _abs64(U).T
    if bias is not None:
        mag = mag + _abs64(bias)
    n = K + R + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def linear_bound(x, W, bias=None) -> np.ndarray:
    """Elementwise bound on |y - y_exact| for y = W x + b in float32: 8 eps (K+2) (|W||x| + |b|)."""
    aW = _abs64(W)
    K = aW.shape[1]
    mag = _abs64(x) @ aW.T
    if bias is not None:
        mag = mag + _abs64(bias)
    n = K + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def assert_within_bound(y, ref, bound, case: str = "") -> None:
    """|y - ref| <= bound elementwise (NaN in y is a violation); the message names the case."""
    y64 = np.asarray(y, dtype=np.float64)
    assert y64.shape == ref.shape, f"{case}: shape {y64.shape}, expected {ref.shape}"
    if y64.size == 0:
        return
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(y64 - ref)
        ok = err <= bound
        if ok.all():
            return
        bad = ~ok
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        ratio = np.where(np.isnan(err), np.inf, err / bound)
        worst = float(np.max(ratio))
    raise AssertionError(
        f"{case}: {int(bad.sum())} of {bad.size} outputs outside the float32 error bound "
        f"(worst |err|/bound = {worst:.3g}); first at index {first}: got {y64[first]!r}, "
        f"expected {ref[first]!r}, bound {bound[first]:.3g}"
    )


def check_output_array(y, expected_shape, case: str = "") -> None:
    """A layer result: a fresh, writeable, C-contiguous float32 ndarray of the expected shape."""
    assert isinstance(y, np.ndarray), f"{case}: result is {type(y).__name__}, not ndarray"
    assert y.dtype == np.float32, f"{case}: result dtype {y.dtype}"
    assert y.shape == tuple(expected_shape), (
        f"{case}: result shape {y.shape}, expected {expected_shape}"
    )
    assert y.flags.c_contiguous, f"{case}: result is not C-contiguous"
    assert y.flags.writeable, f"{case}: result is read-only"


@dataclass
class Model:
    """A layer together with its weights, the float64 oracle and the error bound."""

    kind: str
    layer: object
    in_features: int
    out_features: int
    rank: int | None
    reference: Callable
    bound: Callable
    weights: dict

    def describe(self) -> str:
        r = f", rank={self.rank}" if self.rank is not None else ""
        b = self.weights.get("bias") is not None
        return f"{self.kind}(in={self.in_features}, out={self.out_features}{r}, bias={b})"

    def check(self, x, isa: str, case: str = ""):
        """Call the layer on x; check the ISA that ran, the result array and the error bound."""
        case = f"{case} {self.describe()} isa={isa} x.shape={np.shape(x)}".strip()
        y = self.layer(x)
        used = lrkernels.last_used_isa()
        assert used == isa, f"{case}: last_used_isa() == {used!r} after the call, expected {isa!r}"
        xs = np.shape(x)
        check_output_array(y, xs[:-1] + (self.out_features,), case)
        if isinstance(x, np.ndarray):
            assert not np.shares_memory(y, x), f"{case}: result aliases the input"
        assert_within_bound(y, self.reference(x), self.bound(x), case)
        return y


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def make_lowrank(rng, in_features, out_features, rank, bias=True, dtype=np.float32) -> Model:
    U = _rand(rng, (out_features, rank), dtype)
    V = _rand(rng, (rank, in_features), dtype)
    b = _rand(rng, (out_features,), dtype) if bias else None
    layer = lrkernels.LowRankLinear(U, V, b)
    return Model(
        "LowRankLinear",
        layer,
        in_features,
        out_features,
        rank,
        lambda x: reference.lowrank_linear(x, U, V, b),
        lambda x: lowrank_bound(x, U, V, b),
        {"U": U, "V": V, "bias": b},
    )


def make_linear(rng, in_features, out_features, bias=True, dtype=np.float32) -> Model:
    W = _rand(rng, (out_features, in_features), dtype)
    b = _rand(rng, (out_features,), dtype) if bias else None
    layer = lrkernels.Linear(W, b)
    return Model(
        "Linear",
        layer,
        in_features,
        out_features,
        None,
        lambda x: reference.linear(x, W, b),
        lambda x: linear_bound(x, W, b),
        {"W": W, "bias": b},
    )


def make_input(rng, batch, in_features, dtype=np.float32):
    """x of shape (batch, in_features), or (in_features,) for batch None."""
    shape = (in_features,) if batch is None else (batch, in_features)
    return _rand(rng, shape, dtype)


def _unaligned_float32(a: np.ndarray) -> np.ndarray:
    """A float32 copy of `a` whose data pointer is not 4-byte aligned."""
    buf = bytearray(a.size * 4 + 1)
    out = np.frombuffer(buf, dtype=np.float32, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _packed_record_rows(a: np.ndarray) -> np.ndarray:
    """float32 rows of a packed structured array: row stride 4 * in + 1 bytes (not 4-aligned)."""
    rec = np.zeros(a.shape[0], dtype=np.dtype([("x", "<f4", (a.shape[1],)), ("pad", "u1")]))
    rec["x"] = a
    return rec["x"]


def input_layouts(rng, batch, in_f):
    """(name, x) pairs: the same kind of data in every layout and dtype the layer must accept."""
    base = make_input(rng, batch, in_f)
    wide = make_input(rng, 3 * batch + 2, 2 * in_f + 7)
    yield "C float32", base
    yield "float64", make_input(rng, batch, in_f, np.float64)
    yield "float16", make_input(rng, batch, in_f, np.float16)
    yield "longdouble", make_input(rng, batch, in_f, np.longdouble)
    yield "Fortran float32", np.asfortranarray(base)
    yield "Fortran float64", np.asfortranarray(make_input(rng, batch, in_f, np.float64))
    yield "column stride x[:, ::2]", wide[:batch, : 2 * in_f : 2]
    yield "row stride x[::3]", wide[: 3 * batch : 3, :in_f]
    yield "row slice of wider float32 x[:, :in]", wide[:batch, :in_f]
    yield "offset row slice x[:, 3:3+in]", wide[:batch, 3 : 3 + in_f]
    yield "row stride + offset x[1::2, 5:5+in]", wide[1 : 2 * batch + 1 : 2, 5 : 5 + in_f]
    yield "column stride float64", make_input(rng, batch, 2 * in_f, np.float64)[:, ::2]
    yield "negative row stride", base[::-1]
    yield "negative column stride", base[:, ::-1]
    yield "transposed view", np.ascontiguousarray(base.T).T
    yield "broadcast row (stride 0)", np.broadcast_to(base[:1], (batch, in_f))
    yield "big-endian float32", base.astype(">f4")
    yield "unaligned float32", _unaligned_float32(base)
    yield "packed record rows", _packed_record_rows(base)
    yield "list of lists", base.astype(np.float64).tolist()


def input_layouts_1d(rng, in_f):
    base = make_input(rng, None, in_f)
    wide = make_input(rng, None, 3 * in_f + 5)
    yield "1-D float32", base
    yield "1-D float64", base.astype(np.float64)
    yield "1-D float16", make_input(rng, None, in_f, np.float16)
    yield "1-D strided x[::3]", wide[: 3 * in_f : 3]
    yield "1-D offset slice", wide[2 : 2 + in_f]
    yield "1-D reversed", base[::-1]
    yield "1-D unaligned", _unaligned_float32(base)
    yield "1-D list of floats", [float(v) for v in base]
    yield "row of a 2-D array", make_input(rng, 4, in_f)[2]
    yield "column of a 2-D array", make_input(rng, in_f, 4)[:, 1]


class Cases:
    """Runs many sub-cases inside one test and reports every failing one by name at the end."""

    def __init__(self, limit: int = 25):
        self.limit = limit
        self.count = 0
        self.failures: list[str] = []

    @contextlib.contextmanager
    def case(self, name: str):
        self.count += 1
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - collect and report all failing cases
            self.failures.append(f"[{name}] {type(exc).__name__}: {exc}")

    def check(self) -> None:
        if self.failures:
            shown = "\n".join(self.failures[: self.limit])
            more = len(self.failures) - self.limit
            tail = f"\n... and {more} more" if more > 0 else ""
            pytest.fail(
                f"{len(self.failures)} of {self.count} cases failed:\n{shown}{tail}", pytrace=False
            )


# Shape vocabulary around the tile edges (every ISA's nr is among 8, 16, 32; mr among 4, 6, 8).
DIMS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65]
RANKS = [1, 2, 3, 7, 8, 9, 16, 17, 33, 64, 128, 256]


def batches_for(mr: int) -> list:
    """Batch sizes around the row tile mr of an ISA, plus 0, small odd ones and large ones."""
    values = {
        0,
        1,
        2,
        3,
        5,
        7,
        11,
        13,
        mr - 1,
        mr,
        mr + 1,
        2 * mr - 1,
        2 * mr,
        2 * mr + 1,
        3 * mr + 2,
        100,
        300,
    }
    return sorted(v for v in values if v >= 0)


def blocking_configs(mr: int, nr: int) -> list:
    """Small cache blocks for `_core._set_blocking`, so small shapes cross every block edge.

    Returned as (id, kwargs). nc/mc/mb are rounded down to tile multiples by the library; the
    "+1" variants check that rounding.
    """
    return [
        ("kc5-nc2nr-mc2mr-mbmr", {"kc": 5, "nc": 2 * nr, "mc": 2 * mr, "mb": mr}),
        ("kc1-ncnr-mcmr-mb2mr", {"kc": 1, "nc": nr, "mc": mr, "mb": 2 * mr}),
        ("kc7-nc2nr-mc2mr-mb3mr", {"kc": 7, "nc": 2 * nr, "mc": 2 * mr, "mb": 3 * mr}),
        ("kc5-nc3nr-mcmr", {"kc": 5, "nc": 3 * nr, "mc": mr}),
        ("kc3-only", {"kc": 3}),
        ("nc-mc-mb-only", {"nc": nr, "mc": 2 * mr, "mb": 5 * mr}),
        ("kc2-rounding", {"kc": 2, "nc": 2 * nr + 1, "mc": 2 * mr + 1, "mb": 2 * mr + 1}),
        ("tiny-rounding", {"kc": 1, "nc": 1, "mc": 1, "mb": 1}),
    ]
