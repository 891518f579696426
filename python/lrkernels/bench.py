"""``lrkernels bench``: factorized against dense layers on this machine, in under a minute.

Runs a standard set of linear and convolution layers from edge models (the shapes of
benchmarks/), each factorized layer next to its dense counterpart, and prints time, GFLOP/s, the
fraction of the FMA peak, and the speed-up of factorization. Batch-1 linear layers are bound by
memory, not FMAs: for them it also prints the weight bytes read per second (GB/s) next to a
streaming-read probe (a plain read loop over a buffer as large as the weights). The probe is a
reference point, not a ceiling - the layer's own loads, prefetching and threads can beat it - so
it is shown as a ratio ("vs read", 1.9x), never as a percentage of a peak. The FMA peak and the
probe are measured on the spot by small loops in the C++ core.

A second, smaller table: recurrent layers (LowRankLSTM/LowRankGRU against the dense LSTM/GRU, a
100-step sequence at batch 1) and embedding lookups (LowRankEmbedding against Embedding).
benchmarks/rnn_report.py has the full comparison (torch, onnxruntime, bandwidth per step).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _core
from ._core import Conv2d, Linear, LowRankLinear, TuckerConv2d, get_isa, get_num_threads
from .embedding import Embedding, LowRankEmbedding
from .layer_specs import spec_for
from .recurrent import GRU, LSTM, LowRankGRU, LowRankLSTM

# The explanation printed under the table (and in ``lrkernels bench --help``).
COLUMNS_HELP = (
    "% FMA: GFLOP/s as a fraction of the FMA peak (the measured single-core f32 FMA throughput\n"
    "of the ISA x threads). Batch-1 linear layers are bound by memory, not FMAs: GB/s is the\n"
    "weight bytes read per second, and 'vs read' compares it with a streaming-read probe over a\n"
    "buffer as large as the weights - a reference point, not a ceiling (the layer's loads,\n"
    "prefetching and threads can beat it: above 1x is possible).\n"
    "Convolutions count the direct algorithm's FLOPs: a 3x3 stage computed by Winograd\n"
    'F(2x2, 3x3) (algorithm="auto" picks it from 16 channels on) does 2.25x fewer\n'
    "multiply-adds, so its GFLOP/s are effective ones and % FMA can exceed 100%.\n"
    "speed-up: dense time / factorized time."
)

# (out_features, in_features, rank, name): as in benchmarks/test_bench_linear.py
LINEAR_SHAPES = [
    (1000, 1280, 128, "classifier head"),
    (1536, 384, 64, "transformer FFN"),
    (2048, 512, 128, "LSTM gates"),
    (4096, 4096, 256, "square 4096"),
]
# (channels, size, kernel, stride, name): ResNet-style, rank a quarter of the channels
CONV_SHAPES = [
    (64, 56, 3, 1, "resnet 64ch 56x56"),
    (128, 28, 3, 1, "resnet 128ch 28x28"),
    (256, 14, 3, 1, "resnet 256ch 14x14"),
    (512, 7, 3, 1, "resnet 512ch 7x7"),
    (128, 56, 3, 2, "downsample 128ch s2"),
    (64, 28, 5, 1, "5x5 64ch 28x28"),
]
# (cell, hidden = input_size, batch, rank, name): one layer, one direction, a 100-step sequence
RECURRENT_SHAPES = [
    ("lstm", 512, 1, 128, "LSTM 512"),
    ("gru", 512, 1, 128, "GRU 512"),
    ("lstm", 1024, 1, 256, "LSTM 1024"),
]
RECURRENT_SEQ = 100
# (num_embeddings, embedding_dim, rank, tokens, name)
EMBEDDING_SHAPES = [(30522, 384, 64, 64, "embedding 30522x384"), (30522, 384, 64, 512, "")]


@dataclass
class Result:
    layer: str
    kind: str  # the layer class name: "LowRankLinear", "Linear", "TuckerConv2d", "Conv2d"
    shape: str
    batch: int
    rank: str
    seconds: float
    flops: float
    weight_bytes: int
    gflops: float = 0.0
    gbytes_per_s: float = 0.0
    fraction_of_peak: float = 0.0  # of the FMA peak (0 when it could not be measured)
    peak_basis: str = ""  # "FMA peak", or "" without one
    speedup_vs_dense: float = 0.0
    extra: dict = field(default_factory=dict)
    factorized: bool = False  # the factorized layer of a pair (the other is its dense baseline)


def _median_seconds(fn, budget: float) -> float:
    fn()  # warm-up: packing for this ISA, scratch growth, page faults
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt > budget / 20 or number >= 1 << 16:
            break
        number *= 2
    times = [dt / number]
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline and len(times) < 50:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return float(np.median(times))


def _progress(i: int, total: int, label: str, stream) -> None:
    if stream is not None:
        stream.write(f"\r[{i:2d}/{total}] {label:<60.60s}")
        stream.flush()


def machine_peaks(quick: bool, threads: int, bandwidth_bytes: int = 256 << 20) -> dict:
    isa = get_isa()
    seconds = 0.1 if quick else 0.3
    fma = _core.measure_peak_gflops(isa, seconds)
    bandwidth = _core.measure_read_bandwidth(bandwidth_bytes, seconds, threads)
    return {
        "isa": isa,
        "threads": threads,
        "fma_peak_gflops_per_core": fma,
        "fma_peak_gflops": fma * threads if fma else None,
        "read_bandwidth_gbs": bandwidth,
    }


def _case(name, shape, batch, layer, x, input_hw=None):
    """One benchmark case: (name, kind, shape, batch, rank, call, flops, weight bytes), the kind,
    rank, FLOPs and weight bytes read from the layer table (FLOPs per batch / per image)."""
    spec = spec_for(layer)
    flops = spec.flops(layer, input_hw)[0] * (1 if spec.conv else batch)
    ranks = spec.ranks(layer)
    rank = "-" if not ranks else str(ranks[0]) if len(ranks) == 1 else str(ranks)
    return (
        name,
        spec.name,
        shape,
        batch,
        rank,
        lambda: layer(x),
        float(flops),
        4 * spec.num_factor_params(layer),
    )


def _cases(quick: bool):
    rng = np.random.default_rng(0)
    batches = [1, 8] if quick else [1, 8, 64]
    for out_f, in_f, rank, name in LINEAR_SHAPES:
        if quick and out_f == 4096:
            continue
        U = (rng.standard_normal((out_f, rank)) / np.sqrt(rank)).astype(np.float32)
        V = (rng.standard_normal((rank, in_f)) / np.sqrt(in_f)).astype(np.float32)
        lowrank, dense = LowRankLinear(U, V), Linear(U @ V)
        for batch in batches:
            x = rng.standard_normal((batch, in_f)).astype(np.float32)
            shape = f"{out_f}x{in_f}"
            yield _case(name, shape, batch, lowrank, x)
            yield _case(name, shape, batch, dense, x)
    for channels, size, k, stride, name in CONV_SHAPES:
        if quick and channels == 512:
            continue
        r = channels // 4
        pad = k // 2
        first = rng.standard_normal((r, channels)).astype(np.float32)
        core = rng.standard_normal((r, r, k, k)).astype(np.float32)
        last = rng.standard_normal((channels, r)).astype(np.float32)
        tucker = TuckerConv2d(first, core, last, stride=stride, padding=pad, layout="NHWC")
        dense = spec_for(tucker).dense_equivalent(tucker)
        x = rng.standard_normal((1, size, size, channels)).astype(np.float32)
        shape = f"{channels}ch {size}x{size} {k}x{k}" + (f" s{stride}" if stride > 1 else "")
        yield _case(name, shape, 1, tucker, x, (size, size))
        yield _case(name, shape, 1, dense, x, (size, size))


def run(
    quick: bool = False, progress=sys.stderr, bandwidth_bytes: int = 256 << 20
) -> tuple[dict, list[Result]]:
    threads = get_num_threads()
    peaks = machine_peaks(quick, threads, bandwidth_bytes)
    budget = 0.1 if quick else 0.25
    cases = list(_cases(quick))
    results: list[Result] = []
    bandwidth: dict[int, float] = {}
    for i, (name, kind, shape, batch, rank, fn, flops, weight_bytes) in enumerate(cases, 1):
        _progress(i, len(cases), f"{name} {shape} batch {batch} {kind}", progress)
        seconds = _median_seconds(fn, budget)
        res = Result(name, kind, shape, batch, rank, seconds, flops, weight_bytes)
        res.factorized = spec_for(kind).factorized
        res.gflops = flops / seconds / 1e9
        res.gbytes_per_s = weight_bytes / seconds / 1e9
        if peaks["fma_peak_gflops"]:  # a true ceiling of the arithmetic
            res.peak_basis = "FMA peak"
            res.fraction_of_peak = res.gflops / peaks["fma_peak_gflops"]
        if batch == 1 and not spec_for(kind).conv:  # batch-1 linear: memory-bound
            # Next to a read loop over a buffer as large as the weights, read over and over like
            # the benchmark loop does (the same cache level serves both). Not a ceiling: the
            # layer's loads can beat the probe's (up to ~2x seen), so it is a ratio, not a "%".
            if weight_bytes not in bandwidth:
                bandwidth[weight_bytes] = _core.measure_read_bandwidth(
                    weight_bytes, 0.05 if quick else 0.1, threads
                )
            res.extra["read_probe_gbs"] = bandwidth[weight_bytes]
            res.extra["vs_read_probe"] = res.gbytes_per_s / bandwidth[weight_bytes]
        results.append(res)
    if progress is not None:
        progress.write("\r" + " " * 70 + "\r")
    for fact, dense in zip(results[0::2], results[1::2]):
        fact.speedup_vs_dense = dense.seconds / fact.seconds
    return peaks, results


def _timed_row(layer, shape, batch, rank, lowrank, dense, x, budget) -> dict:
    """One row of sequence_rows: the factorized and the dense layer timed on the same input."""
    t_fact = _median_seconds(lambda: lowrank(x), budget)
    t_dense = _median_seconds(lambda: dense(x), budget)
    return dict(
        layer=layer,
        shape=shape,
        batch=batch,
        rank=rank,
        factorized_seconds=t_fact,
        dense_seconds=t_dense,
        speedup_vs_dense=t_dense / t_fact,
        factor_bytes=4 * lowrank.num_params(),
        dense_bytes=4 * dense.num_params(),
    )


def sequence_rows(quick: bool = False, progress=sys.stderr) -> list[dict]:
    """Recurrent layers (a whole sequence, factorized LowRankLSTM/GRU against the dense LSTM/GRU)
    and embedding lookups (LowRankEmbedding against Embedding): one dict per row."""
    rng = np.random.default_rng(2)
    budget = 0.1 if quick else 0.25
    rows = []
    recurrent = [s for s in RECURRENT_SHAPES if not (quick and s[1] > 512)]
    total = len(recurrent) + len(EMBEDDING_SHAPES)
    i = 0
    for cell, hidden, batch, rank, name in recurrent:
        i += 1
        _progress(i, total, f"{name} batch {batch}", progress)
        G = 4 if cell == "lstm" else 3
        dense_cls, lowrank_cls = (LSTM, LowRankLSTM) if cell == "lstm" else (GRU, LowRankGRU)
        factors = [
            (
                (rng.standard_normal((G * hidden, rank)) / np.sqrt(rank)).astype(np.float32),
                (rng.standard_normal((rank, hidden)) / np.sqrt(hidden)).astype(np.float32),
            )
            for _ in range(2)
        ]
        lowrank = lowrank_cls(*factors)
        dense = dense_cls(*lowrank.dense_weights())
        x = rng.standard_normal((RECURRENT_SEQ, batch, hidden)).astype(np.float32)
        shape = f"H{hidden} seq {RECURRENT_SEQ}"
        rows.append(_timed_row(name, shape, batch, rank, lowrank, dense, x, budget))
    tables = {}
    for num, dim, rank, tokens, name in EMBEDDING_SHAPES:
        i += 1
        _progress(i, total, f"embedding {num}x{dim} {tokens} tokens", progress)
        if (num, dim, rank) not in tables:
            A = (rng.standard_normal((num, rank)) / np.sqrt(rank)).astype(np.float32)
            B = rng.standard_normal((rank, dim)).astype(np.float32)
            tables[num, dim, rank] = (LowRankEmbedding(A, B), Embedding(A @ B))
        lowrank, dense = tables[num, dim, rank]
        idx = rng.integers(0, num, size=tokens)
        layer = name or f"embedding {num}x{dim}"
        rows.append(
            _timed_row(layer, f"{tokens} tokens", tokens, rank, lowrank, dense, idx, budget)
        )
    if progress is not None:
        progress.write("\r" + " " * 70 + "\r")
    return rows


def format_sequence_table(rows: list[dict]) -> str:
    lines = [
        f"{'layer':22s} {'shape':16s} {'rank':>5s} {'factorized us':>14s} {'dense us':>10s} "
        f"{'speed-up':>9s} {'weights':>8s}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        lines.append(
            f"{r['layer']:22s} {r['shape']:16s} {r['rank']:5d} "
            f"{r['factorized_seconds'] * 1e6:14.1f} {r['dense_seconds'] * 1e6:10.1f} "
            f"{r['speedup_vs_dense']:8.2f}x {r['dense_bytes'] / r['factor_bytes']:7.1f}x"
        )
    lines.append("")
    lines.append(
        "Recurrent: one layer, input_size = H, batch 1, the whole sequence per call; embedding:\n"
        "one lookup of that many tokens (the factorized lookup multiplies the rows of A by B: it\n"
        "saves memory, the dense row copy is faster). weights: dense bytes / factor bytes."
    )
    return "\n".join(lines)


def format_table(peaks: dict, results: list[Result]) -> str:
    fma = peaks["fma_peak_gflops"]
    lines = [
        f"lrkernels bench: isa={peaks['isa']} threads={peaks['threads']} FMA peak={fma:.0f} GFLOP/s"
        if fma
        else f"lrkernels bench: isa={peaks['isa']}",
        f"streaming-read probe (large buffer, {peaks['threads']} thread(s)): "
        f"{peaks['read_bandwidth_gbs']:.1f} GB/s",
        "",
        f"{'layer':22s} {'shape':24s} {'batch':>5s} {'kind':13s} {'rank':>10s} {'time us':>9s} "
        f"{'GFLOP/s':>8s} {'% FMA':>6s} {'GB/s':>7s} {'vs read':>7s} {'speed-up':>9s}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in results:
        speed = f"{r.speedup_vs_dense:8.2f}x" if r.factorized else ""
        pct = f"{100 * r.fraction_of_peak:5.1f}%" if r.peak_basis else f"{'-':>6s}"
        if "vs_read_probe" in r.extra:
            gbs, vs = f"{r.gbytes_per_s:7.1f}", f"{r.extra['vs_read_probe']:6.2f}x"
        else:
            gbs, vs = f"{'-':>7s}", f"{'-':>7s}"
        lines.append(
            f"{r.layer:22s} {r.shape:24s} {r.batch:5d} {r.kind:13s} {r.rank:>10s} "
            f"{r.seconds * 1e6:9.1f} {r.gflops:8.1f} {pct} {gbs} {vs} {speed}"
        )
    lines.append("")
    lines.append(COLUMNS_HELP)
    return "\n".join(lines)


def rank_sweep(quick: bool = False) -> dict:
    """Speed-up of LowRankLinear over Linear (1000x1280, batch 8) and of TuckerConv2d over Conv2d
    (128ch 28x28 3x3) against rank: where factorization starts to pay on this machine."""
    rng = np.random.default_rng(1)
    budget = 0.1 if quick else 0.25
    out_f, in_f, batch = 1000, 1280, 8
    x = rng.standard_normal((batch, in_f)).astype(np.float32)
    dense_lin = Linear(rng.standard_normal((out_f, in_f)).astype(np.float32))
    t_dense = _median_seconds(lambda: dense_lin(x), budget)
    ranks = (
        [8, 32, 128, 256, 512, 768]
        if quick
        else [8, 16, 32, 64, 128, 256, 384, 512, 640, 768, 1000]
    )
    linear = []
    for r in ranks:
        layer = LowRankLinear(rng.standard_normal((out_f, r)), rng.standard_normal((r, in_f)))
        linear.append((r, t_dense / _median_seconds(lambda: layer(x), budget)))
    c, size = 128, 28
    xc = rng.standard_normal((1, size, size, c)).astype(np.float32)
    dense_conv = Conv2d(rng.standard_normal((c, c, 3, 3)), padding=1, layout="NHWC")
    t_dense_conv = _median_seconds(lambda: dense_conv(xc), budget)
    conv = []
    for r in [8, 32, 64, 96, 128] if quick else [8, 16, 32, 48, 64, 80, 96, 112, 128]:
        layer = TuckerConv2d(
            rng.standard_normal((r, c)),
            rng.standard_normal((r, r, 3, 3)),
            rng.standard_normal((c, r)),
            padding=1,
            layout="NHWC",
        )
        conv.append((r, t_dense_conv / _median_seconds(lambda: layer(xc), budget)))
    return {"linear 1000x1280 batch 8": linear, "tucker 128ch 28x28 3x3": conv}


def plot_sweep(sweep: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'lrkernels[plot]'") from None
    fig, axes = plt.subplots(1, len(sweep), figsize=(5 * len(sweep), 4))
    for ax, (title, points) in zip(np.atleast_1d(axes), sweep.items()):
        ranks, speedups = zip(*points)
        ax.plot(ranks, speedups, marker="o")
        ax.axhline(1.0, color="grey", linestyle="--", label="dense")
        ax.set_title(title)
        ax.set_xlabel("rank (R_in = R_out for Tucker)")
        ax.set_ylabel("speed-up over dense")
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"lrkernels on {_core.cpu_name()} ({get_isa()}, {get_num_threads()} thread(s))")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(args) -> int:
    progress = None if args.no_progress else sys.stderr
    peaks, results = run(quick=args.quick, progress=progress)
    print(format_table(peaks, results))
    sequence = sequence_rows(args.quick, progress)
    print()
    print(format_sequence_table(sequence))
    sweep = None
    if args.plot or args.json:
        sweep = rank_sweep(args.quick)
    if args.plot:
        plot_sweep(sweep, args.plot)
        print(f"\nspeed-up against rank written to {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": peaks,
                    "cpu": _core.cpu_name(),
                    "results": [asdict(r) for r in results],
                    "sequence_results": sequence,
                    "rank_sweep": sweep,
                },
                f,
                indent=2,
            )
        print(f"results written to {args.json}")
    return 0
