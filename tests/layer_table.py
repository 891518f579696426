"""The layer table the tests are generated from: `lrkernels.layer_specs` (SPECS, one LayerSpec
per layer kind; spec_for(layer)), with the names the tests use. The tests add per kind only what
is theirs: the float32 error bound (lrk_testing.BOUNDS) and the number of ranks (N_RANKS).
"""

from __future__ import annotations

from lrkernels.layer_specs import SPECS, spec_for  # noqa: F401 - spec_for re-exported

SPEC = {spec.name: spec for spec in SPECS}
KINDS = tuple(SPEC)
LINEAR_KINDS = tuple(s.name for s in SPECS if not s.conv)
CONV_KINDS = tuple(s.name for s in SPECS if s.conv)
# How many ranks a kind's factor_shapes takes: () dense, (r,) LowRankLinear and CP, (r_in, r_out)
# Tucker.
N_RANKS = {s.name: (0 if not s.factorized else 2 if s.name == "TuckerConv2d" else 1) for s in SPECS}
LAYOUTS = ("NCHW", "NHWC")
# Every kind with each of its layouts (None: a linear layer's rows): the conformance grid.
KIND_LAYOUTS = tuple((s.name, layout) for s in SPECS for layout in (LAYOUTS if s.conv else (None,)))


def kind_layout_id(value) -> str:
    return value if isinstance(value, str) else "rows" if value is None else str(value)
