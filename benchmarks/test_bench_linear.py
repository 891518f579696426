"""LowRankLinear against numpy's two matmuls, onnxruntime's two MatMuls and the dense Linear, 1
thread (onnxruntime: 1 intra-op and 1 inter-op thread, ORT_ENABLE_ALL; skipped when onnx or
onnxruntime is missing).

Run:  python -m pytest benchmarks -q --benchmark-group-by=group
      python benchmarks/report.py .benchmarks/...json   (ratios, GFLOP/s, fraction of peak)

Each group is one (layer shape, batch); compare within a group, in one run.
"""

import numpy as np
import pytest

import lrkernels

try:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    ort = None

# (out_features, in_features, rank, what it stands for)
SHAPES = [
    (1000, 1280, 128, "classifier-head"),
    (1536, 384, 64, "transformer-ffn"),
    (2048, 512, 128, "lstm-gates"),
    (4096, 4096, 256, "square-4096"),
]
BATCHES = [1, 8, 64]
IMPLS = ["lowrank", "numpy_lowrank", "ort_lowrank", "dense", "numpy_dense", "ort_dense"]


def _ort_session(weights, b, batch):
    """y = x @ weights[0]^T [@ weights[1]^T] + b as an ONNX graph of MatMul nodes and an Add, 1
    thread."""
    nodes, inits, src = [], [numpy_helper.from_array(b, "b")], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"t{i}"]))
        src = f"t{i}"
    nodes.append(helper.make_node("Add", [src, "b"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, weights[0].shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, weights[-1].shape[0]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )


def _flops(impl, out_f, in_f, rank, batch):
    if impl in ("lowrank", "numpy_lowrank", "ort_lowrank"):
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
    elif impl.startswith("ort_"):
        if ort is None:
            pytest.skip("onnxruntime / onnx not installed")
        sess = _ort_session([V, U] if impl == "ort_lowrank" else [U @ V], b, batch)
        feed = {"x": x}
        fn = lambda: sess.run(None, feed)[0]  # noqa: E731
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
    ref = (x.astype(np.float64) @ V.T.astype(np.float64)) @ U.T.astype(np.float64) + b
    err = np.abs(fn() - ref).max() / np.abs(ref).max()
    assert err < 1e-4, f"{impl}: max |y - ref| / max |ref| = {err:.2e}"
    y = benchmark(fn)
    assert y.shape == (batch, out_f)
