"""Linear (the dense baseline) only: hand-computed outputs and its dimensions. Everything every
layer kind shares (the sweeps against the reference on every ISA, layouts, dtypes, blocking,
threads, properties, argument checks) is in test_conformance*.py."""

from __future__ import annotations

import numpy as np

import lrkernels
from lrk_testing import check_output_array

F32 = np.float32


def test_known_values(isa):
    """y = W x + b on small integers, exact in float32; x as arrays and as lists."""
    layer = lrkernels.Linear([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], [1.0, -2.0])
    y = layer(np.ones(3, F32))
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, (2,))
    np.testing.assert_array_equal(y, [4.0, 0.0])
    y = layer([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(y, [[3.0, -5.0], [2.5, -1.0]])
    ones = lrkernels.Linear(np.ones((3, 4)), np.ones(3))
    np.testing.assert_array_equal(ones([0.5, -1.0, 2.0, 0.25]), np.full(3, 2.75, F32))


def test_dimensions():
    layer = lrkernels.Linear(np.ones((5, 7)))
    assert (layer.in_features, layer.out_features) == (7, 5)
    assert all(type(v) is int for v in (layer.in_features, layer.out_features))
