"""lrkernels.torch on a whole model: ResNet-18 (benchmarks/resnet18.py, random weights), batch 1,
3x224x224, every 3x3 convolution but the stem Tucker-2 compressed to a quarter of its parameters.

Run:  python -m pytest benchmarks/test_bench_torch.py [--lrk-threads 2]
      python benchmarks/resnet18_report.py --threads 1 2   (ratios and the per-layer table)

torch and lrkernels are pinned to the same thread count (--lrk-threads, default 1). Groups
(compare within a group, in one run):

  resnet18 NCHW / resnet18 channels_last   the model at batch 1, in that memory format
    dense          the dense torch model (eval, no_grad)
    torch_ops      the compressed model, use_kernels=False on every factorized module
    lrkernels      the same compressed model on the fused kernels
    lrk_fused      that plus lrkernels.torch.fuse (BatchNorms folded, ReLUs fused into the
                   kernels, the stem, 1x1 downsamples and fc on lrkernels' dense layers)
    lrk_fused_cl   fuse(channels_last=True): the input converted to channels_last once at the
                   model's entry, every convolution then NHWC (the NCHW group's input is NCHW)
  overhead LowRankLinear / overhead TuckerConv2d   a tiny module called under no_grad against
    the bare lrkernels layer (module.to_layer()) on the same input's numpy view; the
    difference is the torch wrapper's per-call cost (extra_info["overhead_us"] in the report).

The compressed modules here have random factors at the ranks compress(ratio=0.25) chooses
(resnet18.random_compressed): the same shapes and ranks, hence the same speed, without
compress's minute of HOOI on 512-channel random weights; resnet18_report.py runs compress itself.
"""

import pytest

torch = pytest.importorskip("torch")

import lrkernels  # noqa: E402

lrk_torch = pytest.importorskip("lrkernels.torch")

import resnet18 as rn  # noqa: E402

# A dense ResNet-18 call is tens of ms at 1 thread: 1 s per case keeps the file near a minute.
pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=1.0, warmup=True, warmup_iterations=2)

LAYOUTS = ["NCHW", "channels_last"]
VARIANTS = ["dense", "torch_ops", "lrkernels", "lrk_fused", "lrk_fused_cl"]


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    """torch at lrkernels' thread count (--lrk-threads), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(lrkernels.get_num_threads())
    yield torch.get_num_threads()
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def models():
    dense = rn.resnet18()
    comp = rn.random_compressed(dense, 0.25)
    ops = rn.set_use_kernels(rn.random_compressed(dense, 0.25), False)
    # the torch-ops copy must be the same function: same factors
    ops.load_state_dict(comp.state_dict())
    try:
        fused = lrk_torch.fuse(comp)
        with torch.no_grad():
            fused(torch.randn(1, 3, 32, 32))
    except TypeError as e:  # the kernels' activation= is not in this build yet
        fused = e
    fused_cl = lrk_torch.fuse(comp, channels_last=True)
    return {
        "dense": dense,
        "torch_ops": ops,
        "lrkernels": comp,
        "lrk_fused": fused,
        "lrk_fused_cl": fused_cl,
    }


def _to_layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_resnet18(benchmark, models, layout, variant, torch_threads):
    model = models[variant]
    if isinstance(model, Exception):
        pytest.skip(f"fuse(): {model}")
    if layout == "channels_last":
        model = rn.to_channels_last(model)
    x = _to_layout(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)), layout)

    def fn():
        with torch.no_grad():
            return model(x)

    y = fn()
    assert tuple(y.shape) == (1, 1000) and torch.isfinite(y).all()
    if variant != "dense":  # every factorized variant computes the same function
        with torch.no_grad():
            ref = models["torch_ops"](x)
        assert torch.allclose(y, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max())), variant
    benchmark.group = f"resnet18 {layout}"
    benchmark.extra_info.update(
        variant=variant, layout=layout, batch=1, threads=torch_threads, isa=lrkernels.get_isa()
    )
    benchmark(fn)


# --- per-module overhead of the torch wrapper ---------------------------------------------------

TINY = {
    "LowRankLinear": (lambda: lrk_torch.LowRankLinear(16, 16, 4), (1, 16)),
    "TuckerConv2d": (lambda: lrk_torch.TuckerConv2d(8, 8, 3, (4, 4), padding=1), (1, 8, 4, 4)),
}


@pytest.mark.parametrize("call", ["module", "bare"])
@pytest.mark.parametrize("kind", list(TINY))
def test_overhead(benchmark, kind, call):
    make, shape = TINY[kind]
    torch.manual_seed(0)
    module = make().eval().requires_grad_(False)
    x = torch.randn(shape)
    layer = module.to_layer()
    xn = x.numpy()
    with torch.no_grad():
        ref = module(x)
    assert torch.allclose(torch.from_numpy(layer(xn)), ref)

    fn = (lambda: module(x)) if call == "module" else (lambda: layer(xn))
    benchmark.group = f"overhead {kind}"
    benchmark.extra_info.update(kind=kind, call=call, shape=list(shape))
    with torch.no_grad():  # the module's call in inference; entered once, outside the timing
        benchmark.pedantic(fn, rounds=2000, iterations=10, warmup_rounds=100)
