"""Conv2d (the dense baseline) only: hand-computed outputs (counts of in-range pixels,
cross-correlation orientation) and its dimensions. Everything every layer kind shares (the
sweeps against the reference on every ISA and layout, dtypes, blocking, threads, properties,
argument checks) is in test_conformance*.py."""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from lrk_testing import LAYOUTS, image_shape, window_counts

F32 = np.float32


@pytest.mark.parametrize("layout", LAYOUTS)
def test_known_values(isa, layout):
    """Exactly representable sums: an all-ones 3x3 kernel counts the in-range pixels."""
    layer = lrkernels.Conv2d(np.ones((2, 1, 3, 3)), np.array([0.0, 10.0]), padding=1, layout=layout)
    x = np.ones(image_shape(1, 1, (3, 4), layout), F32)
    y = layer(x)
    assert lrkernels.last_used_isa() == isa
    np.testing.assert_array_equal(y, window_counts([2, 3, 2], [2, 3, 3, 2], 1, [0, 10], layout))
    # Cross-correlation, not convolution: the kernel is not flipped.
    w = np.zeros((1, 1, 3, 3), F32)
    w[0, 0, 0, 0] = 1.0  # picks the pixel up-left of the output position
    x = np.arange(12, dtype=F32).reshape(3, 4)
    shift = lrkernels.Conv2d(w, padding=1, layout=layout)
    y = shift(x.reshape(image_shape(1, 1, (3, 4), layout)))
    expected = np.zeros((3, 4), F32)
    expected[1:, 1:] = x[:-1, :-1]
    np.testing.assert_array_equal(y.reshape(3, 4), expected)


def test_dimensions():
    layer = lrkernels.Conv2d(np.ones((5, 3, 2, 4)), stride=(2, 1), padding=3, dilation=(1, 2))
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (3, 5, (2, 4))
    assert (layer.stride, layer.padding, layer.dilation) == ((2, 1), (3, 3), (1, 2))
