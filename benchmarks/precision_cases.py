"""The contestants of the reduced-precision benchmarks (test_bench_precision.py,
precision_report.py), issue 16.

Linear cases (``linear_case(shape, kind)``; the shapes are test_bench_linear.py's classifier head
1280 -> 128 -> 1000 and square 4096 -> 256 -> 4096): ``kind`` "lowrank" is y = (x V^T) U^T + b,
"dense" is y = x W^T + b with W = U V (float32). Contestants, each ``prepare(x) -> fn`` where
``fn()`` runs one call on x (so timing loops call ``fn`` and accuracy tables call ``prepare`` on
other inputs):

  lrk_fp32, lrk_fp16, lrk_int8   lrkernels.LowRankLinear / Linear at that precision=
  ort_int8    onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, its defaults otherwise:
              per-tensor weights) of an ONNX graph of MatMul (x V^T, then U^T) + Add nodes,
              intra_op_num_threads pinned, ORT_ENABLE_ALL (which fuses the quantize / MatMulInteger
              / rescale nodes into DynamicQuantizeMatMul): onnxruntime as a user would run it
  torch_int8  torch.ao.quantization.quantize_dynamic(qint8) of nn.Sequential(nn.Linear(in, r,
              bias=False), nn.Linear(r, out)) (nn.Linear(in, out) for "dense"), inference_mode,
              the thread count is torch.set_num_threads (set by the caller)

Conv cases (``conv_case(shape)``, two of test_bench_conv.py's shapes and its factors): tucker_<p>
(lrkernels.TuckerConv2d) and conv_<p> (lrkernels.Conv2d with the dense product weight), NCHW, for
p in fp32 / fp16 / int8; a precision the build refuses for convolutions (ValueError "not
implemented") is left out and listed in ``case.missing``.

Every contestant is checked against the float64 reference of the float32 weights before it is
returned: max |y - ref| / max |ref| below TOL[its precision].
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings

import numpy as np
import torch
from rnn_cases import _check
from test_bench_conv import SHAPES as CONV_BENCH_SHAPES
from test_bench_conv import _case as conv_bench_case
from test_bench_conv import _label as conv_label
from test_bench_linear import SHAPES as LINEAR_BENCH_SHAPES

import lrkernels
from lrkernels import reference

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
except ImportError:
    ort = None

PRECISIONS = ["fp32", "fp16", "int8"]
# relative max error vs the float64 reference; fp32 as test_bench_conv.py checks
# (int8: torch's dynamic quantization measures 3.0-3.1e-2 on the low-rank pair here: its x86
# engine quantizes activations to 7 bits, per tensor, twice; lrkernels and onnxruntime 1-2.3e-2)
TOL = {"fp32": 1e-3, "fp16": 5e-3, "int8": 4e-2}
LINEAR_SHAPES = {s[3]: s for s in LINEAR_BENCH_SHAPES if s[3] in ("classifier-head", "square-4096")}
LINEAR_IMPLS = [f"lrk_{p}" for p in PRECISIONS] + ["ort_int8", "torch_int8"]
CONV_SHAPES = [s for s in CONV_BENCH_SHAPES if s[:2] in ((128, 28), (256, 14))]
CONV_IMPLS = [f"{k}_{p}" for p in PRECISIONS for k in ("tucker", "conv")]


def precision_of(impl):
    return impl.rsplit("_", 1)[1]


def rel_err(y, ref):
    """max |y - ref| / max |ref|"""
    y, ref = np.asarray(y, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def as_numpy(y):
    return y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)


def outlier_input(x, columns=4, scale=50.0, seed=0):
    """x with ``columns`` random input columns scaled by ``scale`` (outlier channels)."""
    rng = np.random.default_rng(seed)
    y = x.copy()
    y[:, rng.choice(x.shape[1], columns, replace=False)] *= scale
    return y


class Case:
    """One layer: ``prepare[name](x) -> fn``, ``layers[name]`` (the lrkernels layers), ``ref(x)``
    (float64 reference; None for convolutions), ``missing`` ({name: reason})."""

    def __init__(self, label, ref):
        self.label = label
        self.ref = ref
        self.prepare = {}
        self.layers = {}
        self.missing = {}

    def fns(self, x, names=None):
        return {k: p(x) for k, p in self.prepare.items() if names is None or k in names}

    def check(self, x):
        ref = self.ref(x)
        for name, prep in self.prepare.items():
            _check(f"{self.label} {name}", as_numpy(prep(x)()), ref, TOL[precision_of(name)])


# --- linear ------------------------------------------------------------------------------------


@functools.cache
def _linear_weights(name):
    out_f, in_f, rank, _ = LINEAR_SHAPES[name]
    rng = np.random.default_rng(16_000 + in_f + rank)
    U = (rng.standard_normal((out_f, rank)) / np.sqrt(rank)).astype(np.float32)
    V = (rng.standard_normal((rank, in_f)) / np.sqrt(in_f)).astype(np.float32)
    b = (0.1 * rng.standard_normal(out_f)).astype(np.float32)
    return U, V, b


def linear_input(name, batch, seed=0):
    in_f = LINEAR_SHAPES[name][1]
    return np.random.default_rng(seed + batch).standard_normal((batch, in_f)).astype(np.float32)


def _session_options(threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only (no CPU-affinity chatter in containers)
    return so


def ort_int8_session(weights, bias, threads=1, per_channel=False):
    """onnxruntime session of x @ weights[0] @ weights[1] ... + bias (MatMul nodes, one Add),
    dynamically quantized to int8 weights; the batch dimension is symbolic."""
    nodes, inits, cur = [], [], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"t{i}"], name=f"matmul{i}"))
        cur = f"t{i}"
    inits.append(numpy_helper.from_array(bias, "b"))
    nodes.append(helper.make_node("Add", [cur, "b"], ["y"], name="bias"))
    in_f, out_f = weights[0].shape[0], weights[-1].shape[1]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_f])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # as test_bench_conv.py: loadable by any onnxruntime knowing opset 17
    onnx.checker.check_model(model)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "Please consider to run pre-processing before quantization"
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = os.path.join(tmp, "int8.onnx")
            quantize_dynamic(model, path, weight_type=QuantType.QInt8, per_channel=per_channel)
            with open(path, "rb") as f:
                data = f.read()
    finally:
        logging.disable(disabled)
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert "MatMul" not in ops and "MatMulInteger" in ops, ops  # every MatMul quantized
    return ort.InferenceSession(
        data, sess_options=_session_options(threads), providers=["CPUExecutionProvider"]
    )


def torch_int8_module(U, V, b, kind):
    """torch's dynamic int8 quantization of the float module (Sequential of two Linear, or one)."""
    nn = torch.nn
    if kind == "lowrank":
        mod = nn.Sequential(nn.Linear(V.shape[1], V.shape[0], bias=False), nn.Linear(*U.T.shape))
        mod[0].weight.data = torch.from_numpy(V.copy())
        mod[1].weight.data = torch.from_numpy(U.copy())
        mod[1].bias.data = torch.from_numpy(b.copy())
    else:  # in a Sequential too: quantize_dynamic swaps submodules, never the root module
        mod = nn.Sequential(nn.Linear(V.shape[1], U.shape[0]))
        mod[0].weight.data = torch.from_numpy((U @ V).astype(np.float32))
        mod[0].bias.data = torch.from_numpy(b.copy())
    mod.eval().requires_grad_(False)
    with warnings.catch_warnings():  # torch.ao.quantization: DeprecationWarning (torchao)
        warnings.simplefilter("ignore")
        qmod = torch.ao.quantization.quantize_dynamic(mod, {nn.Linear}, dtype=torch.qint8)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert all(isinstance(m, dynamic_linear) for m in qmod), qmod
    return qmod


def _torch_prepare(mod):
    def prepare(x):
        xt = torch.from_numpy(x)

        def fn():
            with torch.inference_mode():
                return mod(xt)

        return fn

    return prepare


def _layer_prepare(layer):
    return lambda x: lambda: layer(x)


def _ort_prepare(sess):
    def prepare(x):
        feed = {"x": x}
        return lambda: sess.run(None, feed)[0]

    return prepare


def linear_case(name, kind, *, threads=1, impls=None, check_batches=(1,)):
    """Case for LINEAR_SHAPES[name] and kind "lowrank" / "dense"; ``impls`` restricts the
    contestants built (None: all, LINEAR_IMPLS); ort_int8 is missing without onnxruntime.
    ``threads``: onnxruntime's intra-op threads (lrkernels and torch: set by the caller)."""
    out_f, in_f, rank, _ = LINEAR_SHAPES[name]
    U, V, b = _linear_weights(name)
    W = (U @ V).astype(np.float32) if kind == "dense" else None
    want = set(LINEAR_IMPLS if impls is None else impls)
    if kind == "lowrank":
        case = Case(f"{name} lowrank", lambda x: reference.lowrank_linear(x, U, V, b))
    else:
        case = Case(f"{name} dense", lambda x: reference.linear(x, W, b))
    for p in PRECISIONS:
        if f"lrk_{p}" in want:
            if kind == "lowrank":
                layer = lrkernels.LowRankLinear(U, V, b, precision=p)
            else:
                layer = lrkernels.Linear(W, b, precision=p)
            case.layers[f"lrk_{p}"] = layer
            case.prepare[f"lrk_{p}"] = _layer_prepare(layer)
    if "ort_int8" in want:
        if ort is None:
            case.missing["ort_int8"] = "onnx / onnxruntime not installed"
        else:
            mats = [V.T, U.T] if kind == "lowrank" else [W.T]
            case.prepare["ort_int8"] = _ort_prepare(ort_int8_session(mats, b, threads))
    if "torch_int8" in want:
        case.prepare["torch_int8"] = _torch_prepare(torch_int8_module(U, V, b, kind))
    for batch in check_batches:
        case.check(linear_input(name, batch))
    return case


# --- convolutions ------------------------------------------------------------------------------


def conv_case(shape, *, impls=None, check=True):
    """Case for one of CONV_SHAPES (batch 1, NCHW, test_bench_conv.py's factors and input)."""
    c, hw, k, s, r = shape
    d = conv_bench_case(shape)
    conv = dict(stride=s, padding=k // 2)
    want = set(CONV_IMPLS if impls is None else impls)

    case = Case(conv_label(shape), None)  # checked against test_bench_conv's references
    case.x = d["x"]
    for name in CONV_IMPLS:
        if name not in want:
            continue
        kind, p = name.split("_")
        try:
            if kind == "tucker":
                layer = lrkernels.TuckerConv2d(
                    d["first"], d["core"], d["last"], d["bias"], precision=p, **conv
                )
            else:
                layer = lrkernels.Conv2d(d["dense"], d["bias"], precision=p, **conv)
        except ValueError as e:
            if "not implemented" not in str(e):
                raise
            case.missing[name] = str(e)
            continue
        case.layers[name] = layer
        case.prepare[name] = _layer_prepare(layer)
        if check:
            ref_y = d["ref_dense"] if kind == "conv" else d["ref_tucker"]
            _check(f"{case.label} {name}", layer(d["x"]), ref_y, TOL[p])
    return case
