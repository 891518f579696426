"""Sizes that overflow or exceed memory: a clear ValueError or MemoryError before any harm."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import lrkernels

# On 32-bit platforms (armv7) sizes that are merely too large for memory on 64-bit overflow size_t.
IS_64BIT = sys.maxsize > 2**32


@pytest.mark.parametrize("arg", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("value", [2**25, 2**40, 2**70, (1, 2**31)])
def test_geometry_beyond_limits_rejected(arg, value):
    w = np.ones((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=arg):
        lrkernels.Conv2d(w, **{arg: value})
    with pytest.raises(ValueError, match=arg):
        lrkernels.TuckerConv2d(
            np.ones((2, 3)), np.ones((2, 2, 3, 3)), np.ones((4, 2)), **{arg: value}
        )


def test_output_element_count_overflow_is_value_error():
    # 2^20 output channels x (2^25 x 2^25) output pixels: 2^70 elements overflow 64-bit sizes.
    layer = lrkernels.Conv2d(np.ones((2**20, 1, 1, 1), np.float32), padding=2**24)
    with pytest.raises(ValueError, match="too large"):
        layer(np.ones((1, 1, 1, 1), np.float32))


def test_output_larger_than_memory_is_memory_error():
    # (1, 1, 2^25 + 1, 2^25 + 1) float32: 4 PiB, a valid 64-bit size no machine has; on a 32-bit
    # platform the byte count overflows size_t, which is a ValueError before any allocation.
    layer = lrkernels.Conv2d(np.ones((1, 1, 1, 1), np.float32), padding=2**24)
    with pytest.raises(MemoryError if IS_64BIT else ValueError):
        layer(np.ones((1, 1, 1, 1), np.float32))


@pytest.mark.skipif(not IS_64BIT, reason="numpy cannot even create the 2^40-row view on 32-bit")
def test_input_conversion_larger_than_memory_is_memory_error():
    # A broadcast view claims 2^40 rows without storing them; converting it cannot fit in memory.
    layer = lrkernels.LowRankLinear(np.ones((3, 2), np.float32), np.ones((2, 4), np.float32))
    x = np.broadcast_to(np.ones(4, np.float64), (2**40, 4))
    with pytest.raises(MemoryError):
        layer(x)
