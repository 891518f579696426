"""TuckerConv2d (fused) against the same three convolutions run one after another and against the
dense convolution, in lrkernels, onnxruntime, PyTorch and ncnn; batch 1, at 1 and at 2 threads.

Run:  python -m pytest benchmarks/test_bench_conv.py --benchmark-json=conv.json
      python benchmarks/report.py conv.json [--markdown]   (fusion and factorization speed-ups)

The full run is 6 shapes x 16 implementations x 2 thread counts: 144 timed cases (48 skip, see
below), about 1 s of rounds each, so about 3 min. `-k t1` runs the 1-thread half only (the cases
and settings of the 1-thread-only version of this file, so its results compare with older runs).

Each group is one layer shape at one thread count (ResNet-style, ranks about a quarter of the
channels, padding k//2; "conv 256ch 14x14 3x3 r64 t2" is the 2-thread group): compare within a
group, in one run. Implementations (the names are what report.py keys on):

  tucker, tucker_nhwc             lrkernels.TuckerConv2d, the three stages fused in one call
  lrk_unfused, lrk_unfused_nhwc   three lrkernels.Conv2d calls: 1x1 Cin->R, kxk core R->R, 1x1
                                  R->Cout + bias (each writes its full output tensor)
  lrk_dense, lrk_dense_nhwc       lrkernels.Conv2d with the dense (Cout, Cin, k, k) weight
  ort_unfused, ort_dense          onnxruntime (if onnx and onnxruntime import), an ONNX graph of
                                  three Conv nodes / one Conv node, float32 NCHW, `threads`
                                  intra-op and 1 inter-op thread, ORT_ENABLE_ALL. ORT's graph
                                  optimizer may fuse or re-layout the nodes (e.g. to its NCHWc
                                  kernels): that is part of what is measured, ORT as a user would
                                  run it.
  torch_unfused, torch_dense      torch.nn.functional.conv2d under torch.no_grad(), NCHW,
                                  torch.set_num_threads(threads) (if torch imports)
  ncnn_unfused, ncnn_dense        ncnn (if it imports; `pip install ncnn`), a Net of three
                                  Convolution layers / one, loaded from a .param / .bin pair
                                  written here, CPU only (use_vulkan_compute off), opt.num_threads
                                  = threads, every other option at ncnn's default (Winograd and
                                  sgemm convolution, packing layout): ncnn as a user runs it. Each
                                  call creates its Extractor, feeds ncnn.Mat(x[0]) and converts
                                  the output with np.array(): per-inference overhead included.
                                  NCHW (ncnn has no NHWC API; it packs channels internally).
  tucker_direct, tucker_direct_nhwc, lrk_dense_direct, lrk_dense_direct_nhwc
                                  as tucker / lrk_dense with algorithm="direct" forced (the
                                  default is "auto", which may pick Winograd for 3x3 stride 1);
                                  only for 3x3 stride-1 shapes, and only when this lrkernels build
                                  has the algorithm= keyword: skipped otherwise.

Threads: each case runs at `threads` = 1 and 2 (ids ...-t1 / ...-t2, extra_info["threads"]):
lrkernels.set_num_threads(threads) and torch.set_num_threads(threads) for the case, restored
after (so --lrk-threads of conftest.py does not apply to this file), ORT intra-op threads, ncnn
opt.num_threads. On a one-core machine the t2 groups mean little.

The ort_*, torch_* and ncnn_* cases are skipped when those packages are missing (`pip install
onnx onnxruntime torch ncnn` to get them; a CPU build of torch is enough).

The dense weight is the exact product of the factors, so every implementation computes the same
function; each one is checked once against lrkernels.reference (float64) before it is timed.
`flops` is 2 x the multiply-adds of what the implementation computes (for the factorized ones the
sum of the three stages, the first at the input resolution; direct-convolution counts also for
Winograd runs); `dense_flops` is the dense convolution's, so dense_flops / flops of `tucker` is the
FLOP ratio a perfect factorized kernel would turn into speed-up.
"""

import functools
import inspect
import os

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

try:
    import ncnn
except ImportError:
    ncnn = None


def _accepts_algorithm(cls):
    """Whether cls (lrkernels.Conv2d / TuckerConv2d) takes algorithm="direct" (newer builds)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = None  # no signature (e.g. a compiled class): try it
    if params is not None:
        if "algorithm" in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    try:  # **kwargs or no signature: try it
        w = np.zeros((1, 1, 3, 3), np.float32)
        if cls is lrkernels.Conv2d:
            cls(w, algorithm="direct")
        else:
            cls(np.ones((1, 1), np.float32), w, np.ones((1, 1), np.float32), algorithm="direct")
    except TypeError:
        return False
    return True


# The *_direct cases need the algorithm= keyword (Conv2d / TuckerConv2d); skipped without it.
CONV_ALGORITHM = _accepts_algorithm(lrkernels.Conv2d)
TUCKER_ALGORITHM = _accepts_algorithm(lrkernels.TuckerConv2d)

# 144 timed cases of 0.1-6 ms: 1 s of rounds each (hundreds of rounds), the full run about 3 min.
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
    "ncnn_unfused",
    "ncnn_dense",
    "tucker_direct",
    "tucker_direct_nhwc",
    "lrk_dense_direct",
    "lrk_dense_direct_nhwc",
]
THREADS = [1, 2]


def _label(shape, threads=None):
    c, hw, k, s, r = shape
    stride = f" s{s}" if s != 1 else ""
    suffix = f" t{threads}" if threads is not None else ""
    return f"conv {c}ch {hw}x{hw} {k}x{k}{stride} r{r}{suffix}"


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


def _ort_session(case, shape, dense, threads):
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
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only (no CPU-affinity chatter in containers)
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )


# --- ncnn ------------------------------------------------------------------------------------


def _ncnn_conv(name, inp, out, cout, k, stride, pad, weight_size, bias):
    """One line of an ncnn .param file: a Convolution layer (dilation 1, groups 1)."""
    return (
        f"Convolution {name} 1 1 {inp} {out} 0={cout} 1={k} 11={k} 2=1 12=1 3={stride} "
        f"13={stride} 4={pad} 14={pad} 5={int(bias)} 6={weight_size}"
    )


def _ncnn_net(case, shape, dense, threads, folder):
    """An ncnn.Net from a .param / .bin pair written to folder; default options (Winograd,
    sgemm, packing layout), CPU only, threads threads. Input blob "data", output "output"."""
    c, hw, k, s, r = shape
    pad = k // 2
    if dense:
        # (weight OIHW, bias or None, kernel, stride, pad) per layer
        layers = [(case["dense"], case["bias"], k, s, pad)]
    else:
        layers = [
            (case["first"], None, 1, 1, 0),
            (case["core"], None, k, s, pad),
            (case["last"], case["bias"], 1, 1, 0),
        ]
    lines = [
        "7767517",
        f"{1 + len(layers)} {1 + len(layers)}",
        f"Input data 0 1 data 0={hw} 1={hw} 2={c}",
    ]
    with open(os.path.join(folder, "net.bin"), "wb") as f:
        for i, (w, b, kk, ss, pp) in enumerate(layers):
            inp = "data" if i == 0 else f"blob{i}"
            out = "output" if i == len(layers) - 1 else f"blob{i + 1}"
            lines.append(
                _ncnn_conv(f"conv{i}", inp, out, w.shape[0], kk, ss, pp, w.size, b is not None)
            )
            # ModelBin: weight with a 4-byte flag tag (0 = raw float32), bias raw float32, no tag
            f.write(np.zeros(1, np.uint32).tobytes())
            f.write(np.ascontiguousarray(w, dtype="<f4").tobytes())
            if b is not None:
                f.write(np.ascontiguousarray(b, dtype="<f4").tobytes())
    with open(os.path.join(folder, "net.param"), "w") as f:
        f.write("\n".join(lines) + "\n")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(os.path.join(folder, "net.param")) != 0:
        raise RuntimeError("ncnn load_param failed")
    if net.load_model(os.path.join(folder, "net.bin")) != 0:
        raise RuntimeError("ncnn load_model failed")
    return net


# --- the benchmark ---------------------------------------------------------------------------


def _make_fn(impl, case, shape, threads, tmp_path):
    """(callable, layout, version text) for one implementation; the callable returns y."""
    c, hw, k, s, r = shape
    conv = dict(stride=s, padding=k // 2)
    first, core, last, b = case["first"], case["core"], case["last"], case["bias"]
    base = impl.removesuffix("_nhwc")
    layout = "NHWC" if impl.endswith("_nhwc") else "NCHW"

    if base.endswith("_direct"):
        if k != 3 or s != 1:
            pytest.skip("algorithm='direct' only differs from the default for 3x3 stride 1")
        if not (TUCKER_ALGORITHM if base == "tucker_direct" else CONV_ALGORITHM):
            pytest.skip("this lrkernels build has no algorithm= keyword")
    lrk_version = f"lrkernels {lrkernels.__version__} threads={lrkernels.get_num_threads()}"

    if base.startswith(("tucker", "lrk_")):
        x = case["x"] if layout == "NCHW" else np.ascontiguousarray(case["x"].transpose(0, 2, 3, 1))
        algo = dict(algorithm="direct") if base.endswith("_direct") else {}
        if base.startswith("tucker"):
            layer = lrkernels.TuckerConv2d(first, core, last, b, layout=layout, **conv, **algo)
            return (lambda: layer(x)), layout, lrk_version
        if base.startswith("lrk_dense"):
            layer = lrkernels.Conv2d(case["dense"], b, layout=layout, **conv, **algo)
            return (lambda: layer(x)), layout, lrk_version
        c1 = lrkernels.Conv2d(first[:, :, None, None], layout=layout)
        c2 = lrkernels.Conv2d(core, layout=layout, **conv)
        c3 = lrkernels.Conv2d(last[:, :, None, None], b, layout=layout)
        return (lambda: c3(c2(c1(x)))), layout, lrk_version

    if base.startswith("ort_"):
        if ort is None:
            pytest.skip("onnxruntime / onnx not installed")
        sess = _ort_session(case, shape, dense=(base == "ort_dense"), threads=threads)
        x = case["x"]
        feed = {"x": x}
        version = f"onnxruntime {ort.__version__} threads={threads}"
        return (lambda: sess.run(None, feed)[0]), layout, version

    if base.startswith("ncnn_"):
        if ncnn is None:
            pytest.skip("ncnn not installed (pip install ncnn)")
        net = _ncnn_net(case, shape, dense=(base == "ncnn_dense"), threads=threads, folder=tmp_path)
        x0 = case["x"][0]  # (C, H, W): ncnn's Mat has no batch axis

        def fn():
            ex = net.create_extractor()  # one extractor per inference, as a user runs it
            ex.input("data", ncnn.Mat(x0))
            ret, out = ex.extract("output")
            assert ret == 0, f"ncnn extract returned {ret}"
            return np.array(out)[None]

        return fn, layout, f"ncnn {ncnn.__version__} threads={net.opt.num_threads}"

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


@pytest.fixture
def threads(request):
    """Set lrkernels' and torch's thread counts for one case, restore them after."""
    n = request.param
    prev_lrk = lrkernels.get_num_threads()
    prev_torch = torch.get_num_threads() if torch is not None else None
    lrkernels.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        lrkernels.set_num_threads(prev_lrk)
        if torch is not None:
            torch.set_num_threads(prev_torch)


@pytest.mark.parametrize("threads", THREADS, ids=lambda n: f"t{n}", indirect=True)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: _label(s).replace(" ", "-"))
def test_conv(benchmark, shape, impl, threads, tmp_path):
    c, hw, k, s, r = shape
    case = _case(shape)
    fn, layout, version = _make_fn(impl, case, shape, threads, str(tmp_path))

    # Sanity check, once, outside the timed loop: same function as the float64 reference.
    ref = case["ref_dense"] if "dense" in impl else case["ref_tucker"]
    y = _as_nchw_numpy(fn(), layout)
    assert y.shape == ref.shape and y.dtype == np.float32, (impl, y.shape, y.dtype)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err < 1e-3, f"{impl}: max |y - ref| / max |ref| = {err:.2e}"

    tucker_flops, dense_flops = _flops(shape)
    benchmark.group = _label(shape, threads)
    benchmark.extra_info.update(
        impl=impl,
        flops=dense_flops if "dense" in impl else tucker_flops,
        dense_flops=dense_flops,
        shape=_label(shape).removeprefix("conv "),
        rank=r,
        layout=layout,
        threads=threads,
        isa=lrkernels.get_isa(),
        batch=1,
        backend=version,
    )
    y = benchmark(fn)
    ho = _out_size(hw, k, s, k // 2)
    assert tuple(y.shape) == ((1, c, ho, ho) if layout == "NCHW" else (1, ho, ho, c))
