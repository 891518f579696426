"""LowRankLinear against numpy's two matmuls and against the dense Linear, 1 thread.

Run:  python -m pytest benchmarks -q --benchmark-group-by=group
      python benchmarks/report.py .benchmarks/...json   (ratios, GFLOP/s, fraction of peak)

Each group is one (layer shape, batch); compare within a group, in one run.
"""

import numpy as np
import pytest

import lrkernels

# (out_features, in_features, rank, what it stands for)
SHAPES = [
    (1000, 1280, 128, "classifier-head"),
    (1536, 384, 64, "transformer-ffn"),
    (2048, 512, 128, "lstm-gates"),
    (4096, 4096, 256, "square-4096"),
]
BATCHES = [1, 8, 64]
IMPLS = ["lowrank", "numpy_lowrank", "dense", "numpy_dense"]


def _flops(impl, out_f, in_f, rank, batch):
    if impl in ("lowrank", "numpy_lowrank"):
        return 2 * batch * rank * (in_f + out_f)
    return 2 * batch * out_f * in_f


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s[3])
def test_linear(benchmark, rng, shape, batch, impl):
    out_f, in_f, rank, name = shape
    U = (rng.standard_normal((out_f, rank)) / np.sqrt(rank)).astype(np.float32)
    V = (rng.standard_normal((rank, in_f)) / np.sqrt(in_f)).astype(np.float32)
    b = rng.standard_normal(out_f).astype(np.float32)
    x = rng.standard_normal((batch, in_f)).astype(np.float32)

    if impl == "lowrank":
        layer = lrkernels.LowRankLinear(U, V, b)
        fn = lambda: layer(x)  # noqa: E731
    elif impl == "numpy_lowrank":
        UT, VT = U.T, V.T  # what a user writes: (x @ V.T) @ U.T + b
        fn = lambda: (x @ VT) @ UT + b  # noqa: E731
    elif impl == "dense":
        layer = lrkernels.Linear(U @ V, b)
        fn = lambda: layer(x)  # noqa: E731
    else:
        WT = (U @ V).T
        fn = lambda: x @ WT + b  # noqa: E731

    benchmark.group = f"{name} {out_f}x{in_f} r{rank} batch {batch}"
    benchmark.extra_info.update(
        impl=impl,
        flops=_flops(impl, out_f, in_f, rank, batch),
        isa=lrkernels.get_isa(),
        shape=f"{out_f}x{in_f}",
        rank=rank,
        batch=batch,
    )
    y = benchmark(fn)
    assert y.shape == (batch, out_f)
