"""The contestants of the recurrent and embedding benchmarks (test_bench_rnn.py, rnn_report.py).

Every builder returns ``{name: callable}``: the callables take no argument and run one whole
call (a sequence of ``seq`` steps, or one lookup of ``tokens`` indices). Names:

  recurrent (cell "lstm" or "gru"; one layer, one direction, input (seq, batch, H), input = H)
    torch          torch nn.LSTM / nn.GRU (dense), under torch.inference_mode()
    lrk_dense      lrkernels.LSTM / GRU (dense), the same weights as torch
    lrk_r{r}       lrkernels.LowRankLSTM / LowRankGRU, both matrices at rank r
    torch_ops_r{r} the same factorized cell in torch ops: the input projection of all steps first,
                   (x @ V_ih.T) @ U_ih.T + biases, then a python loop over time, per step
                   (h @ V_hh.T) @ U_hh.T and the gates with torch.sigmoid / torch.tanh
    ort            onnxruntime's LSTM / GRU op (a one-node ONNX model, the dense weights converted
                   to ONNX's gate order), 1 intra-op and 1 inter-op thread; absent without onnx
  embedding (a num x dim table, rank r)
    lrk_lowrank    lrkernels.LowRankEmbedding(A, B)
    lrk_dense      lrkernels.Embedding(A @ B)
    torch_dense    torch nn.Embedding(A @ B) (F.embedding), inference_mode
    torch_lowrank  F.embedding(idx, A) @ B

Each builder checks its contestants numerically before returning them (``check=True``): the dense
ones against torch, the factorized ones against each other, onnxruntime against torch. The weights
are random (the factors at the benchmark's ranks; the dense weights torch's default init): speed
does not depend on the values.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import lrkernels

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    ort = None

GATES = {"lstm": 4, "gru": 3}
# torch's stacked gates -> ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
ONNX_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def _check(name, y, ref, tol=1e-4):
    y = np.asarray(y)
    ref = np.asarray(ref)
    assert y.shape == ref.shape, (name, y.shape, ref.shape)
    err = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))
    assert err < tol, f"{name}: max |y - ref| / max |ref| = {err:.2e}"


# --- recurrent ---------------------------------------------------------------------------------


def _factor(rng, rows, cols, rank):
    """U (rows, r), V (r, cols) with U V of about torch's init scale (entries ~ 1/sqrt(cols))."""
    U = (rng.standard_normal((rows, rank)) / np.sqrt(rank)).astype(np.float32)
    V = (rng.standard_normal((rank, cols)) / np.sqrt(cols)).astype(np.float32)
    return U, V


def _torch_ops_cell(cell, x, factors, b_ih, b_hh):
    """The factorized layer in torch ops: returns the (seq, batch, H) output."""
    (U_ih, V_ih), (U_hh, V_hh) = factors
    VihT, UihT, VhhT, UhhT = V_ih.T, U_ih.T, V_hh.T, U_hh.T
    seq, batch, _ = x.shape
    H = U_hh.shape[0] // GATES[cell]
    if cell == "lstm":
        bias = b_ih + b_hh

        def fn():
            with torch.inference_mode():
                xp = torch.addmm(bias, x.reshape(seq * batch, -1) @ VihT, UihT)
                xp = xp.reshape(seq, batch, -1)
                h = x.new_zeros(batch, H)
                c = x.new_zeros(batch, H)
                out = x.new_empty(seq, batch, H)
                for t in range(seq):
                    gates = torch.addmm(xp[t], h @ VhhT, UhhT)
                    i, f, g, o = gates.chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    out[t] = h
                return out

        return fn

    def fn():  # GRU, torch's: n = tanh(x_n + r * (W_hn h + b_hn))
        with torch.inference_mode():
            xp = torch.addmm(b_ih, x.reshape(seq * batch, -1) @ VihT, UihT).reshape(seq, batch, -1)
            h = x.new_zeros(batch, H)
            out = x.new_empty(seq, batch, H)
            for t in range(seq):
                hp = torch.addmm(b_hh, h @ VhhT, UhhT)
                xr, xz, xn = xp[t].chunk(3, 1)
                hr, hz, hn = hp.chunk(3, 1)
                r = torch.sigmoid(xr + hr)
                z = torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = n + z * (h - n)  # (1 - z) n + z h
                out[t] = h
            return out

    return fn


def _ort_session(cell, W_ih, W_hh, b_ih, b_hh, seq, batch):
    """A one-node ONNX LSTM / GRU model from torch-layout weights, on onnxruntime at 1 thread."""
    G = GATES[cell]
    H = W_hh.shape[1]

    def reorder(a):
        return np.concatenate([a[k * H : (k + 1) * H] for k in ONNX_ORDER[cell]])

    W = reorder(W_ih)[None]
    R = reorder(W_hh)[None]
    B = np.concatenate([reorder(b_ih), reorder(b_hh)])[None]
    attrs = {"hidden_size": H, "direction": "forward"}
    if cell == "gru":
        attrs["linear_before_reset"] = 1  # torch's GRU: r * (W_hn h + b_hn)
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    node = helper.make_node(cell.upper(), ["X", "W", "R", "B"], outs, **attrs)
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), n) for a, n in zip((W, R, B), "WRB")]
    graph = helper.make_graph(
        [node],
        cell,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, W_ih.shape[1]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [seq, 1, batch, H])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, batch, H]) for n in outs[1:]],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    assert W.shape == (1, G * H, W_ih.shape[1])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )


def recurrent_case(cell, hidden, batch, seq, ranks, *, input_size=None, impls=None, check=True):
    """{name: fn} for one shape (see the module docstring); ``impls`` restricts the names built
    (None: all). ``input_size`` defaults to ``hidden``."""
    inp = hidden if input_size is None else input_size
    G = GATES[cell]
    seed = 1000 * hidden + 10 * batch + inp + (0 if cell == "lstm" else 7)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    want = (lambda name: True) if impls is None else (lambda name: name in impls)
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(inp, hidden).eval()
    module.requires_grad_(False)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    W_ih, W_hh, b_ih, b_hh = (getattr(module, n).detach().numpy() for n in names)
    x = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    xt = torch.from_numpy(x)
    dense_cls = lrkernels.LSTM if cell == "lstm" else lrkernels.GRU
    lowrank_cls = lrkernels.LowRankLSTM if cell == "lstm" else lrkernels.LowRankGRU

    with torch.inference_mode():
        ref = module(xt)[0].numpy() if check else None
    fns = {}
    if want("torch"):

        def run_torch():
            with torch.inference_mode():
                return module(xt)[0]

        fns["torch"] = run_torch
    if want("lrk_dense"):
        dense = dense_cls(W_ih, W_hh, b_ih, b_hh)
        fns["lrk_dense"] = lambda: dense(x)[0]
        if check:
            _check(f"{cell} lrk_dense", fns["lrk_dense"](), ref)
    for r in ranks:
        if not (want(f"lrk_r{r}") or want(f"torch_ops_r{r}")):
            continue
        factors = (_factor(rng, G * hidden, inp, r), _factor(rng, G * hidden, hidden, r))
        layer = lowrank_cls(factors[0], factors[1], b_ih, b_hh)
        tf = [tuple(torch.from_numpy(a) for a in f) for f in factors]
        ops = _torch_ops_cell(cell, xt, tf, torch.from_numpy(b_ih), torch.from_numpy(b_hh))
        if want(f"lrk_r{r}"):
            fns[f"lrk_r{r}"] = lambda layer=layer: layer(x)[0]
        if want(f"torch_ops_r{r}"):
            fns[f"torch_ops_r{r}"] = ops
        if check:  # the fused layer and the torch-ops cell: the same function
            _check(f"{cell} lrk_r{r} vs torch ops", layer(x)[0], ops().numpy())
    if want("ort") and ort is not None:
        sess = _ort_session(cell, W_ih, W_hh, b_ih, b_hh, seq, batch)
        feed = {"X": x}
        fns["ort"] = lambda: sess.run(["Y"], feed)[0]
        if check:  # ONNX's gate order converted right: the same output as torch
            _check(f"{cell} onnxruntime vs torch", fns["ort"]()[:, 0], ref)
    return fns


def hh_weight_bytes(cell, hidden, rank=None):
    """Bytes of W_hh (its two factors at ``rank``, or dense when None) read per time step."""
    G = GATES[cell]
    if rank is None:
        return 4 * G * hidden * hidden
    return 4 * rank * (G * hidden + hidden)


# --- embedding ---------------------------------------------------------------------------------


def embedding_case(num, dim, rank, tokens, *, check=True):
    rng = np.random.default_rng(num + dim + rank)
    A = (rng.standard_normal((num, rank)) / np.sqrt(rank)).astype(np.float32)
    B = rng.standard_normal((rank, dim)).astype(np.float32)
    table = (A @ B).astype(np.float32)
    idx = rng.integers(0, num, size=tokens).astype(np.int64)
    idx_t = torch.from_numpy(idx)
    lowrank = lrkernels.LowRankEmbedding(A, B)
    dense = lrkernels.Embedding(table)
    emb = torch.nn.Embedding.from_pretrained(torch.from_numpy(table)).eval()
    At, Bt = torch.from_numpy(A), torch.from_numpy(B)

    def torch_dense():
        with torch.inference_mode():
            return emb(idx_t)

    def torch_lowrank():
        with torch.inference_mode():
            return F.embedding(idx_t, At) @ Bt

    fns = {
        "lrk_lowrank": lambda: lowrank(idx),
        "lrk_dense": lambda: dense(idx),
        "torch_dense": torch_dense,
        "torch_lowrank": torch_lowrank,
    }
    if check:
        ref = table[idx]
        for name, fn in fns.items():
            y = fn()
            _check(f"embedding {name}", y.numpy() if isinstance(y, torch.Tensor) else y, ref)
    return fns


def embedding_bytes(num, dim, rank=None):
    """Bytes of the table: the factors A, B at ``rank``, or the dense table when None."""
    return 4 * (num * dim if rank is None else rank * (num + dim))
