"""TuckerConv2d (1x1 Cin->R_in, kxk R_in->R_out, 1x1 R_out->Cout + bias) only: hand-computed
outputs (where the padding belongs), its dimensions, and the rank-mismatch messages. Everything
every layer kind shares (the sweeps against the reference on every ISA and layout, dtypes,
blocking, threads, properties, argument checks) is in test_conformance*.py."""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from lrk_testing import (
    LAYOUTS,
    check_padded_window_sums,
    raises,
)

F32 = np.float32


@pytest.mark.parametrize("layout", LAYOUTS)
def test_known_values(isa, layout):
    """All-ones factors: y = bias + R_in R_out Cin (number of in-range pixels of the window);
    the padding belongs to the middle stage (outputs beyond the image get the bias only)."""
    cin, r_in, r_out = 2, 3, 2
    layer = lrkernels.TuckerConv2d(
        np.ones((r_in, cin)),
        np.ones((r_out, r_in, 3, 3)),
        np.ones((2, r_out)),
        np.array([0.5, -1.0]),
        padding=(1, 2),
        layout=layout,
    )
    check_padded_window_sums(layer, isa, r_in * r_out * cin, layout)


def test_dimensions():
    layer = lrkernels.TuckerConv2d(
        np.ones((3, 7)),
        np.ones((5, 3, 1, 3)),
        np.ones((4, 5)),
        stride=(1, 2),
        padding=(2, 0),
        dilation=3,
    )
    assert (layer.in_channels, layer.out_channels, layer.ranks) == (7, 4, (3, 5))
    assert layer.kernel_size == (1, 3) and layer.dilation == (3, 3)
    assert isinstance(layer.ranks, tuple) and all(type(r) is int for r in layer.ranks)


@pytest.mark.parametrize(
    "changes, texts",
    [
        ({"first": (3, 4)}, ["(3, 4)", "(5, 2, 3, 3)"]),  # R_in of first
        ({"core": (5, 1, 3, 3)}, ["(2, 4)", "(5, 1, 3, 3)"]),  # R_in of core
        ({"last": (3, 4)}, ["(5, 2, 3, 3)", "(3, 4)"]),  # R_out of last
        ({"core": (6, 2, 3, 3)}, ["(6, 2, 3, 3)", "(3, 5)"]),  # R_out of core
        ({"last": (5, 2), "bias": None}, ["(5, 2)"]),  # last transposed
        ({"bias": (5,)}, ["(5,)"]),  # bias of length R_out
    ],
    ids=["first-core", "core-first", "last-core", "core-last", "last-transposed", "bias-r_out"],
)
def test_rank_mismatch_names_the_shapes(changes, texts):
    shapes = {"first": (2, 4), "core": (5, 2, 3, 3), "last": (3, 5), "bias": (3,)}
    shapes.update(changes)
    args = {k: None if s is None else np.ones(s, F32) for k, s in shapes.items()}
    with raises(ValueError, *texts):
        lrkernels.TuckerConv2d(**args)
