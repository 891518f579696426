"""Numpy reference implementations of every lrkernels kernel: written for clarity, not speed.

They compute in float64 and are the oracle the tests compare the fast kernels with. Names and
arguments match the layers: ``lowrank_linear(x, U, V, bias)`` is ``LowRankLinear(U, V, bias)(x)``.
"""

from __future__ import annotations

import numpy as np


def linear(x, W, bias=None):
    """y = x W^T + bias for x of shape (in,) or (batch, in) and W of shape (out, in)."""
    x = np.asarray(x, dtype=np.float64)
    y = x @ np.asarray(W, dtype=np.float64).T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y


def lowrank_linear(x, U, V, bias=None):
    """y = U (V x) + bias, for U (out, rank) and V (rank, in): the two stages one after the other."""
    x = np.asarray(x, dtype=np.float64)
    t = x @ np.asarray(V, dtype=np.float64).T  # (..., rank)
    y = t @ np.asarray(U, dtype=np.float64).T  # (..., out)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y
