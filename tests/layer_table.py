"""The layer table the tests are generated from.

`lrkernels.layer_specs` (SPECS: one LayerSpec per layer kind, spec_for(layer)) when this build
has it; otherwise a minimal stand-in with the same interface, restricted to what the tests use:
name, cls, conv, factorized, factor_names, reference, factor_shapes, factors, to_dense,
dense_equivalent. The tests add per kind only what is theirs: the float32 error bound (in
lrk_testing.BOUNDS) and the number of ranks (N_RANKS, below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import lrkernels
import numpy as np
from lrkernels import reference

try:
    from lrkernels.layer_specs import SPECS, spec_for
except ImportError:  # a build without the table: the stand-in below

    def _f64(*arrays):
        return [np.asarray(a, dtype=np.float64) for a in arrays]

    @dataclass(frozen=True)
    class LayerSpec:
        name: str
        cls: type
        conv: bool
        factorized: bool
        factor_names: tuple
        reference: Callable
        _shapes: Callable  # (in_dim, out_dim, ranks, (kh, kw)) -> factor shapes
        _dense: Callable  # float64 factors -> the dense weight

        def factor_shapes(self, in_dim, out_dim, ranks=(), kernel=(1, 1)):
            return self._shapes(in_dim, out_dim, tuple(ranks), tuple(kernel))

        def factors(self, layer):
            return tuple(getattr(layer, n) for n in self.factor_names)

        def to_dense(self, layer):
            return self._dense(*_f64(*self.factors(layer)))

        def dense_equivalent(self, layer, weight=None):
            w = self.to_dense(layer) if weight is None else weight
            if not self.conv:
                return lrkernels.Linear(w, layer.bias)
            g = {k: getattr(layer, k) for k in ("stride", "padding", "dilation", "layout")}
            return lrkernels.Conv2d(w, layer.bias, **g)

    def _ident(w):
        return w

    SPECS = (
        LayerSpec("LowRankLinear", lrkernels.LowRankLinear, False, True, ("U", "V"),
                  reference.lowrank_linear,
                  lambda i, o, r, k: ((o, r[0]), (r[0], i)), lambda u, v: u @ v),
        LayerSpec("Linear", lrkernels.Linear, False, False, ("W",), reference.linear,
                  lambda i, o, r, k: ((o, i),), _ident),
        LayerSpec("Conv2d", lrkernels.Conv2d, True, False, ("weight",), reference.conv2d,
                  lambda i, o, r, k: ((o, i) + k,), _ident),
        LayerSpec("TuckerConv2d", lrkernels.TuckerConv2d, True, True, ("first", "core", "last"),
                  reference.tucker_conv2d,
                  lambda i, o, r, k: ((r[0], i), (r[1], r[0]) + k, (o, r[1])),
                  lambda f, c, la: np.einsum("os,srhw,rc->ochw", la, c, f)),
        LayerSpec("CPConv2d", lrkernels.CPConv2d, True, True,
                  ("first", "vertical", "horizontal", "last"), reference.cp_conv2d,
                  lambda i, o, r, k: ((r[0], i), (r[0], k[0]), (r[0], k[1]), (o, r[0])),
                  lambda f, v, h, la: np.einsum("or,ry,rx,rc->ocyx", la, v, h, f)),
    )

    def spec_for(obj):
        for spec in SPECS:
            if obj is spec.cls or isinstance(obj, spec.cls) or obj == spec.name:
                return spec
        raise TypeError(f"no layer spec for {obj!r}")


SPEC = {spec.name: spec for spec in SPECS}
KINDS = tuple(SPEC)
LINEAR_KINDS = tuple(s.name for s in SPECS if not s.conv)
CONV_KINDS = tuple(s.name for s in SPECS if s.conv)
FACTORIZED_KINDS = tuple(s.name for s in SPECS if s.factorized)
# How many ranks a kind's factor_shapes takes: () dense, (r,) LowRankLinear and CP, (r_in, r_out)
# Tucker.
N_RANKS = {s.name: (0 if not s.factorized else 2 if s.name == "TuckerConv2d" else 1) for s in SPECS}
LAYOUTS = ("NCHW", "NHWC")
# Every kind with each of its layouts (None: a linear layer's rows): the conformance grid.
KIND_LAYOUTS = tuple(
    (s.name, layout) for s in SPECS for layout in (LAYOUTS if s.conv else (None,))
)


def kind_layout_id(value) -> str:
    return value if isinstance(value, str) else "rows" if value is None else str(value)
