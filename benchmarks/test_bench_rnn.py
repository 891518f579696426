"""Recurrent and embedding layers: lrkernels' fused low-rank layers against their dense
counterparts, the same factorized math in torch ops, torch's dense layers and onnxruntime; 1 thread.

Run:  python -m pytest benchmarks/test_bench_rnn.py [--benchmark-json=rnn.json]
      python benchmarks/rnn_report.py   (the ratio and bandwidth tables, interleaved timing)

Groups (compare within a group, in one run):

  lstm H{H} batch {b} seq 100 / gru ...   one layer, one direction, input_size = H; contestants
    (benchmarks/rnn_cases.py): torch (nn.LSTM, inference_mode), lrk_dense (lrkernels.LSTM),
    lrk_r{r} (LowRankLSTM, both matrices at rank r = H/4 and H/8), torch_ops_r{r} (the same
    factorized cell in torch ops, a python loop over time), ort (onnxruntime's LSTM op)
  embedding 30522x384 r64 {n} tokens   lrk_lowrank, lrk_dense, torch_dense, torch_lowrank

The whole file takes about 80 s at 1 thread (the slowest case, torch's H = 1024 batch 16 LSTM, is
about a quarter second a call). Each contestant is checked numerically once before it is timed
(rnn_cases.py); the ort cases skip without onnx/onnxruntime, the file without torch.
"""

import pytest

torch = pytest.importorskip("torch")

import rnn_cases as rc  # noqa: E402

import lrkernels  # noqa: E402

# Cases of 3 us - 0.25 s: 5 rounds at least, 0.5 s each keeps the file near 80 s.
pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=0.5, warmup=True, warmup_iterations=1)

SEQ = 100
LSTM_SHAPES = [(256, 1), (256, 16), (512, 1), (512, 16), (1024, 1), (1024, 16)]
GRU_SHAPES = LSTM_SHAPES


def _impls(hidden):
    ranks = [hidden // 4, hidden // 8]
    return (
        ["torch", "lrk_dense"]
        + [f"{p}_r{r}" for r in ranks for p in ("lrk", "torch_ops")]
        + ["ort"]
    )


def _params(cell, shapes):
    return [
        pytest.param(cell, h, b, impl, id=f"{cell}-H{h}-b{b}-{impl}")
        for h, b in shapes
        for impl in _impls(h)
    ]


@pytest.fixture(scope="module", autouse=True)
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(lrkernels.get_num_threads())
    yield torch.get_num_threads()
    torch.set_num_threads(old)


_CACHE = {}


def _fns(cell, hidden, batch):
    """One shape's contestants, built and checked once (the last shape's only: memory)."""
    key = (cell, hidden, batch)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = rc.recurrent_case(cell, hidden, batch, SEQ, [hidden // 4, hidden // 8])
    return _CACHE[key]


@pytest.mark.parametrize(
    "cell, hidden, batch, impl", _params("lstm", LSTM_SHAPES) + _params("gru", GRU_SHAPES)
)
def test_recurrent(benchmark, threads, cell, hidden, batch, impl):
    fns = _fns(cell, hidden, batch)
    if impl == "ort" and impl not in fns:
        pytest.skip("onnx / onnxruntime not installed")
    rank = int(impl.rsplit("_r", 1)[1]) if "_r" in impl else None
    benchmark.group = f"{cell} H{hidden} batch {batch} seq {SEQ}"
    benchmark.extra_info.update(
        impl=impl,
        cell=cell,
        hidden=hidden,
        input_size=hidden,
        batch=batch,
        seq=SEQ,
        rank=rank,
        hh_weight_bytes=rc.hh_weight_bytes(cell, hidden, rank),
        threads=threads,
        isa=lrkernels.get_isa(),
    )
    y = benchmark(fns[impl])
    assert tuple(y.shape)[0] == SEQ


EMB = (30522, 384, 64)


@pytest.mark.parametrize("impl", ["lrk_lowrank", "lrk_dense", "torch_dense", "torch_lowrank"])
@pytest.mark.parametrize("tokens", [64, 512])
def test_embedding(benchmark, threads, tokens, impl):
    num, dim, rank = EMB
    key = ("embedding", tokens)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = rc.embedding_case(num, dim, rank, tokens)
    benchmark.group = f"embedding {num}x{dim} r{rank} {tokens} tokens"
    benchmark.extra_info.update(
        impl=impl,
        tokens=tokens,
        table_bytes=rc.embedding_bytes(num, dim, rank if "lowrank" in impl else None),
        threads=threads,
        isa=lrkernels.get_isa(),
    )
    y = benchmark(_CACHE[key][impl])
    assert tuple(y.shape) == (tokens, dim)
