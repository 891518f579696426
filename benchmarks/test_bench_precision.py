"""Reduced precision (issue 16): lrkernels at precision fp32 / fp16 / int8 against onnxruntime's
and torch's dynamic int8 quantization of the same matmuls; TuckerConv2d and Conv2d at the three
precisions.

Run:  python -m pytest benchmarks/test_bench_precision.py [--benchmark-json=prec.json]
      python benchmarks/report.py prec.json     (median us, GFLOP/s: flops = 2 x multiply-adds)
      python benchmarks/precision_report.py   (the issue's ratios and the accuracy tables,
                                                interleaved timing, 1 and 2 threads)

Groups (compare within a group, in one run; contestants in benchmarks/precision_cases.py):

  precision classifier-head lowrank 1000x1280 r128 batch {1,8,64}   LowRankLinear 1280->128->1000
  precision classifier-head dense 1000x1280 batch {1,8,64}          Linear 1280->1000
  precision square-4096 lowrank / dense 4096x4096 r256 batch 1      weights beyond L2
      lrk_fp32, lrk_fp16, lrk_int8, ort_int8 (quantize_dynamic QInt8), torch_int8 (qint8)
  precision conv {128ch 28x28, 256ch 14x14} 3x3 r{32,64}
      tucker_{fp32,fp16,int8} (TuckerConv2d), conv_{...} (Conv2d, the dense product weight);
      the int8 ones skip while the build refuses int8 convolutions ("not implemented")

Every contestant is checked numerically once before it is timed (relative max error vs the
float64 reference: fp32 1e-3, fp16 5e-3, int8 4e-2). Threads: lrkernels --lrk-threads (default
1), torch and onnxruntime the same count. The ort_int8 cases skip without onnx / onnxruntime, the
file without torch. Setup is a few seconds (the square-4096 dense case quantizes a 64 MiB model).
"""

import pytest

torch = pytest.importorskip("torch")

import precision_cases as pc  # noqa: E402
from test_bench_conv import _flops as conv_flops  # noqa: E402

import lrkernels  # noqa: E402

pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=0.5, warmup=True, warmup_iterations=1)

# (shape name, kind, batch)
LINEAR_CASES = [
    (name, kind, batch)
    for name, batches in (("classifier-head", (1, 8, 64)), ("square-4096", (1,)))
    for kind in ("lowrank", "dense")
    for batch in batches
]


@pytest.fixture(scope="module", autouse=True)
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(lrkernels.get_num_threads())
    yield torch.get_num_threads()
    torch.set_num_threads(old)


_CACHE = {}


def _cached(key, build):
    """One layer's contestants, built and checked once (the last layer's only: memory)."""
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = build()
    return _CACHE[key]


def _linear_id(case):
    name, kind, batch = case
    return f"{name}-{kind}-b{batch}"


@pytest.mark.parametrize("impl", pc.LINEAR_IMPLS)
@pytest.mark.parametrize("case", LINEAR_CASES, ids=_linear_id)
def test_linear_precision(benchmark, threads, case, impl):
    name, kind, batch = case
    out_f, in_f, rank, _ = pc.LINEAR_SHAPES[name]
    c = _cached(
        (name, kind, threads),
        lambda: pc.linear_case(name, kind, threads=threads, check_batches=()),
    )
    if impl in c.missing:
        pytest.skip(c.missing[impl])
    x = pc.linear_input(name, batch)
    fn = c.prepare[impl](x)
    err = pc.rel_err(pc.as_numpy(fn()), c.ref(x))  # checked once, at this batch, before timing
    assert err < pc.TOL[pc.precision_of(impl)], f"{c.label} {impl} b{batch}: error {err:.2e}"
    rank_text = f" r{rank}" if kind == "lowrank" else ""
    benchmark.group = f"precision {name} {kind} {out_f}x{in_f}{rank_text} batch {batch}"
    layer = c.layers.get(impl)
    benchmark.extra_info.update(
        impl=impl,
        precision=pc.precision_of(impl),
        kind=kind,
        flops=2 * batch * (rank * (in_f + out_f) if kind == "lowrank" else in_f * out_f),
        shape=f"{out_f}x{in_f}",
        rank=rank if kind == "lowrank" else None,
        batch=batch,
        threads=threads,
        isa=lrkernels.get_isa(),
        kernels=layer.kernels if layer is not None else None,
    )
    y = benchmark(fn)
    assert tuple(y.shape) == (batch, out_f)


@pytest.mark.parametrize("impl", pc.CONV_IMPLS)
@pytest.mark.parametrize("shape", pc.CONV_SHAPES, ids=lambda s: pc.conv_label(s).replace(" ", "-"))
def test_conv_precision(benchmark, threads, shape, impl):
    c = _cached(("conv", shape), lambda: pc.conv_case(shape))
    if impl in c.missing:
        pytest.skip(c.missing[impl])
    benchmark.group = f"precision {c.label}"
    tucker_flops, dense_flops = conv_flops(shape)
    benchmark.extra_info.update(
        impl=impl,
        flops=tucker_flops if impl.startswith("tucker") else dense_flops,
        precision=pc.precision_of(impl),
        threads=threads,
        isa=lrkernels.get_isa(),
        kernels=c.layers[impl].kernels,
    )
    y = benchmark(c.prepare[impl](c.x))
    assert y.shape[:2] == c.x.shape[:2]
