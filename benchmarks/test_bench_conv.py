"""TuckerConv2d (fused) against the same three convolutions run one after another and against the
dense convolution, in lrkernels, onnxruntime and PyTorch; batch 1, 1 thread everywhere.

Run:  python -m pytest benchmarks/test_bench_conv.py --benchmark-json=conv.json
      python benchmarks/report.py conv.json [--markdown]   (fusion and factorization speed-ups)

Each group is one layer shape (ResNet-style, ranks about a quarter of the channels, padding k//2);
compare within a group, in one run. Implementations (the names are what report.py keys on):

  tucker, tucker_nhwc             lrkernels.TuckerConv2d, the three stages fused in one call
  lrk_unfused, lrk_unfused_nhwc   three lrkernels.Conv2d calls: 1x1 Cin->R, kxk core R->R, 1x1
                                  R->Cout + bias (each writes its full output tensor)
  lrk_dense, lrk_dense_nhwc       lrkernels.Conv2d with the dense (Cout, Cin, k, k) weight
  ort_unfused, ort_dense          onnxruntime (if onnx and onnxruntime import), an ONNX graph of
                                  three Conv nodes / one Conv node, float32 NCHW, 1 intra-op and 1
                                  inter-op thread, ORT_ENABLE_ALL. ORT's graph optimizer may fuse or
                                  re-layout the nodes (e.g. to its NCHWc kernels): that is part of
                                  what is measured, ORT as a user would run it.
  torch_unfused, torch_dense      torch.nn.functional.conv2d under torch.no_grad(), NCHW,
                                  torch.set_num_threads(1) (if torch imports)

The ort_* and torch_* cases are skipped when those packages are missing (`pip install onnx
onnxruntime torch` to get them; a CPU build of torch is enough).

The dense weight is the exact product of the factors, so every implementation computes the same
function; each one is checked once against lrkernels.reference (float64) before it is timed.
`flops` is 2 x the multiply-adds of what the implementation computes (for the factorized ones the
sum of the three stages, the first at the input resolution); `dense_flops` is the dense
convolution's, so dense_flops / flops of `tucker` is the FLOP ratio a perfect factorized kernel
would turn into speed-up.
"""

import functools

import numpy as np
import pytest

import lrkernels

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    ort = None

try:
    import torch
except ImportError:
    torch = None
else:
    torch.set_num_threads(1)

# 60 cases of 0.1-6 ms: 1 s of rounds each (hundreds of rounds) keeps the full run near 70 s.
pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=1.0, warmup=True, warmup_iterations=2)

# (channels, H = W, kernel, stride, rank): Cin = Cout = channels, R_in = R_out = rank.
SHAPES = [
    (64, 56, 3, 1, 16),
    (128, 28, 3, 1, 32),
    (256, 14, 3, 1, 64),
    (512, 7, 3, 1, 128),
    (128, 56, 3, 2, 32),  # downsampling layer
    (64, 28, 5, 1, 16),
]
IMPLS = [
    "tucker",
    "lrk_unfused",
    "lrk_dense",
    "tucker_nhwc",
    "lrk_unfused_nhwc",
    "lrk_dense_nhwc",
    "ort_unfused",
    "ort_dense",
    "torch_unfused",
    "torch_dense",
]


def _label(shape):
    c, hw, k, s, r = shape
    stride = f" s{s}" if s != 1 else ""
    return f"conv {c}ch {hw}x{hw} {k}x{k}{stride} r{r}"


def _out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


@functools.cache
def _case(shape):
    """Factors, dense weight, bias, input and the two float64 references; fixed seed per shape."""
    c, hw, k, s, r = shape
    rng = np.random.default_rng(2024 + SHAPES.index(shape))
    first = (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float32)
    core = (rng.standard_normal((r, r, k, k)) / np.sqrt(r * k * k)).astype(np.float32)
    last = (rng.standard_normal((c, r)) / np.sqrt(r)).astype(np.float32)
    bias = (rng.standard_normal(c) / np.sqrt(c)).astype(np.float32)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    # W[o, i, y, x] = sum_{s, t} last[o, s] core[s, t, y, x] first[t, i], in float64.
    dense = np.einsum(
        "os,styx,ti->oiyx",
        last.astype(np.float64),
        core.astype(np.float64),
        first.astype(np.float64),
        optimize=True,
    ).astype(np.float32)
    conv = dict(stride=s, padding=k // 2)
    ref_tucker = lrkernels.reference.tucker_conv2d(x, first, core, last, bias, **conv)
    ref_dense = lrkernels.reference.conv2d(x, dense, bias, **conv)
    return dict(
        first=first,
        core=core,
        last=last,
        bias=bias,
        dense=dense,
        x=x,
        ref_tucker=ref_tucker,
        ref_dense=ref_dense,
    )


def _flops(shape):
    """(tucker_flops, dense_flops) for batch 1: 2 x multiply-adds."""
    c, hw, k, s, r = shape
    ho = _out_size(hw, k, s, k // 2)
    stage1 = 2 * r * c * hw * hw  # 1x1 at the input resolution
    stage2 = 2 * r * r * k * k * ho * ho
    stage3 = 2 * c * r * ho * ho
    dense = 2 * c * c * k * k * ho * ho
    return stage1 + stage2 + stage3, dense


# --- onnxruntime -----------------------------------------------------------------------------


def _ort_conv(name, inp, out, w_name, b_name, k, stride, pad):
    inputs = [inp, w_name] + ([b_name] if b_name else [])
    return helper.make_node(
        "Conv",
        inputs,
        [out],
        name=name,
        kernel_shape=[k, k],
        strides=[stride, stride],
        pads=[pad, pad, pad, pad],
        dilations=[1, 1],
        group=1,
    )


def _ort_session(case, shape, dense):
    c, hw, k, s, r = shape
    pad = k // 2
    ho = _out_size(hw, k, s, pad)
    inits = [numpy_helper.from_array(case["bias"], "b")]
    if dense:
        inits.append(numpy_helper.from_array(case["dense"], "w"))
        nodes = [_ort_conv("dense", "x", "y", "w", "b", k, s, pad)]
    else:
        inits += [
            numpy_helper.from_array(case["first"][:, :, None, None], "w1"),
            numpy_helper.from_array(case["core"], "w2"),
            numpy_helper.from_array(np.ascontiguousarray(case["last"][:, :, None, None]), "w3"),
        ]
        nodes = [
            _ort_conv("first", "x", "t", "w1", None, 1, 1, 0),
            _ort_conv("core", "t", "u", "w2", None, k, s, pad),
            _ort_conv("last", "u", "y", "w3", "b", 1, 1, 0),
        ]
    graph = helper.make_graph(
        nodes,
        "tucker" if not dense else "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, ho, ho])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's IR version: loadable by any onnxruntime that knows opset 17
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only (no CPU-affinity chatter in containers)
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )


# --- the benchmark ---------------------------------------------------------------------------


def _make_fn(impl, case, shape):
    """(callable, layout, version text) for one implementation; the callable returns y."""
    c, hw, k, s, r = shape
    conv = dict(stride=s, padding=k // 2)
    first, core, last, b = case["first"], case["core"], case["last"], case["bias"]
    base = impl.removesuffix("_nhwc")
    layout = "NHWC" if impl.endswith("_nhwc") else "NCHW"

    if base in ("tucker", "lrk_unfused", "lrk_dense"):
        x = case["x"] if layout == "NCHW" else np.ascontiguousarray(case["x"].transpose(0, 2, 3, 1))
        if base == "tucker":
            layer = lrkernels.TuckerConv2d(first, core, last, b, layout=layout, **conv)
            return (lambda: layer(x)), layout, f"lrkernels {lrkernels.__version__}"
        if base == "lrk_dense":
            layer = lrkernels.Conv2d(case["dense"], b, layout=layout, **conv)
            return (lambda: layer(x)), layout, f"lrkernels {lrkernels.__version__}"
        c1 = lrkernels.Conv2d(first[:, :, None, None], layout=layout)
        c2 = lrkernels.Conv2d(core, layout=layout, **conv)
        c3 = lrkernels.Conv2d(last[:, :, None, None], b, layout=layout)
        return (lambda: c3(c2(c1(x)))), layout, f"lrkernels {lrkernels.__version__}"

    if base.startswith("ort_"):
        if ort is None:
            pytest.skip("onnxruntime / onnx not installed")
        sess = _ort_session(case, shape, dense=(base == "ort_dense"))
        x = case["x"]
        feed = {"x": x}
        return (lambda: sess.run(None, feed)[0]), layout, f"onnxruntime {ort.__version__}"

    if torch is None:
        pytest.skip("torch not installed")
    F = torch.nn.functional
    xt = torch.from_numpy(case["x"])
    bt = torch.from_numpy(b)
    if base == "torch_dense":
        wt = torch.from_numpy(case["dense"])

        def fn():
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, **conv)
    else:
        w1 = torch.from_numpy(np.ascontiguousarray(first[:, :, None, None]))
        w2 = torch.from_numpy(core)
        w3 = torch.from_numpy(np.ascontiguousarray(last[:, :, None, None]))

        def fn():
            with torch.no_grad():
                return F.conv2d(F.conv2d(F.conv2d(xt, w1), w2, **conv), w3, bt)

    return fn, layout, f"torch {torch.__version__} threads={torch.get_num_threads()}"


def _as_nchw_numpy(y, layout):
    if torch is not None and isinstance(y, torch.Tensor):
        y = y.numpy()
    y = np.asarray(y)
    return y.transpose(0, 3, 1, 2) if layout == "NHWC" else y


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: _label(s).replace(" ", "-"))
def test_conv(benchmark, shape, impl):
    c, hw, k, s, r = shape
    case = _case(shape)
    fn, layout, version = _make_fn(impl, case, shape)

    # Sanity check, once, outside the timed loop: same function as the float64 reference.
    ref = case["ref_dense"] if "dense" in impl else case["ref_tucker"]
    y = _as_nchw_numpy(fn(), layout)
    assert y.shape == ref.shape and y.dtype == np.float32, (impl, y.shape, y.dtype)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err < 1e-3, f"{impl}: max |y - ref| / max |ref| = {err:.2e}"

    tucker_flops, dense_flops = _flops(shape)
    benchmark.group = _label(shape)
    benchmark.extra_info.update(
        impl=impl,
        flops=dense_flops if "dense" in impl else tucker_flops,
        dense_flops=dense_flops,
        shape=_label(shape).removeprefix("conv "),
        rank=r,
        layout=layout,
        isa=lrkernels.get_isa(),
        batch=1,
        backend=version,
    )
    y = benchmark(fn)
    ho = _out_size(hw, k, s, k // 2)
    assert tuple(y.shape) == ((1, c, ho, ho) if layout == "NCHW" else (1, ho, ho, c))
