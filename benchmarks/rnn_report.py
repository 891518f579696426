"""Recurrent and embedding layers at 1 thread: the tables of issue 14 item 6.

    python benchmarks/rnn_report.py [--quick] [--cells lstm gru] [--rounds 15]

1. Per (cell, H, batch), seq 100, input_size = H: the median time of each contestant
   (benchmarks/rnn_cases.py: torch nn.LSTM/GRU, onnxruntime's op, lrkernels dense, LowRank at
   rank H/4 and H/8, the same factorized cell in torch ops) and the ratios: LowRank vs torch,
   vs the torch-ops cell, vs lrkernels dense; lrkernels dense vs torch.
2. The recurrent step's effective weight bandwidth: a seq-100 run of a layer with input_size 8
   (the input projection then negligible), per-step time = time / 100, bytes of W_hh (its
   factors) read per step / per-step time, next to the core's streaming-read probe over a
   buffer as large as those weights (lrkernels._core.measure_read_bandwidth, as
   ``lrkernels bench`` does). The probe is a reference point, not a ceiling.
3. Embeddings (30522 x 384, rank 64): bytes of the factors vs the dense table, time of 64 and 512
   looked-up tokens for lrkernels LowRankEmbedding / Embedding, torch nn.Embedding and torch's
   factorized F.embedding(idx, A) @ B.

All times are medians over interleaved rounds (each round calls every contestant of one table row
in turn; calls shorter than 0.2 ms are repeated inside a round and averaged), so the ratios of a
row come from the same minutes under the same load. lrkernels, torch, onnxruntime and numpy's BLAS
all at 1 thread. About 80 s (--quick: fewer rounds, the same tables, about 40 s) on a 2-core EPYC.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lrkernels  # noqa: E402
from lrkernels import _core  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnn_cases as rc  # noqa: E402

SEQ = 100
SHAPES = [(256, 1), (256, 16), (512, 1), (512, 16), (1024, 1), (1024, 16)]
EMB = (30522, 384, 64)
TOKENS = [64, 512]


def interleaved(fns, rounds, min_seconds=0.0):
    """{name: median seconds per call}: every fn called in turn per round, after one warm-up
    call; a fn shorter than 0.2 ms is called ``number`` times per sample (averaged)."""
    numbers = {}
    for k, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        numbers[k] = max(1, min(1000, int(2e-4 / max(dt, 1e-9))))
    times = {k: [] for k in fns}
    start = time.perf_counter()
    i = 0
    while i < rounds or time.perf_counter() - start < min_seconds:
        for k, fn in fns.items():
            n = numbers[k]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[k].append((time.perf_counter() - t0) / n)
        i += 1
    return {k: float(np.median(v)) for k, v in times.items()}


def _table(headers, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = "  ".join(
        f"{h:>{w}s}" if i else f"{h:<{w}s}" for i, (h, w) in enumerate(zip(headers, widths))
    )
    out = [line, "-" * len(line)]
    for r in rows:
        out.append(
            "  ".join(
                f"{x:>{w}s}" if i else f"{x:<{w}s}" for i, (x, w) in enumerate(zip(r, widths))
            )
        )
    return "\n".join(out)


def _ms(s):
    return f"{s * 1e3:.3f}" if s < 1e-2 else f"{s * 1e3:.2f}"


def _x(a, b):
    """How many times faster b is than a: a / b, as '2.50x'."""
    return f"{a / b:.2f}x"


def recurrent_tables(cell, shapes, rounds, min_seconds, log):
    time_rows, ratio_rows = [], []
    for hidden, batch in shapes:
        ranks = [hidden // 4, hidden // 8]
        log(f"{cell} H{hidden} batch {batch}")
        fns = rc.recurrent_case(cell, hidden, batch, SEQ, ranks)
        t = interleaved(fns, rounds, min_seconds)
        shape = f"H{hidden} b{batch}"
        time_rows.append(
            [shape, _ms(t["torch"]), _ms(t["ort"]) if "ort" in t else "-", _ms(t["lrk_dense"])]
            + [_ms(t[f"{p}_r{r}"]) for r in ranks for p in ("lrk", "torch_ops")]
        )
        for r in ranks:
            ratio_rows.append(
                [
                    shape,
                    f"r{r}",
                    _x(t["torch"], t[f"lrk_r{r}"]),
                    _x(t[f"torch_ops_r{r}"], t[f"lrk_r{r}"]),
                    _x(t["lrk_dense"], t[f"lrk_r{r}"]),
                    _x(t["torch"], t["lrk_dense"]),
                    _x(t["ort"], t["lrk_dense"]) if "ort" in t else "-",
                    _x(t["torch"], t[f"torch_ops_r{r}"]),
                ]
            )
    return (
        _table(
            ["shape", "torch", "ort", "lrk dense", "lrk H/4", "ops H/4", "lrk H/8", "ops H/8"],
            time_rows,
        ),
        _table(
            [
                "shape",
                "rank",
                "LR vs torch",
                "LR vs ops",
                "LR vs lrk dense",
                "lrk dense vs torch",
                "lrk dense vs ort",
                "ops vs torch",
            ],
            ratio_rows,
        ),
    )


def bandwidth_table(cell, shapes, rounds, min_seconds, log, probe_seconds):
    """Per-step W_hh bytes / per-step time at input_size 8, next to the read probe."""
    rows = []
    probes = {}
    for hidden, batch in shapes:
        ranks = [hidden // 4, hidden // 8]
        log(f"{cell} bandwidth H{hidden} batch {batch}")
        impls = ["torch", "lrk_dense"] + [f"lrk_r{r}" for r in ranks]
        fns = rc.recurrent_case(cell, hidden, batch, SEQ, ranks, input_size=8, impls=impls)
        t = interleaved(fns, rounds, min_seconds)
        for impl in impls:
            rank = int(impl.rsplit("_r", 1)[1]) if "_r" in impl else None
            nbytes = rc.hh_weight_bytes(cell, hidden, rank)
            if nbytes not in probes:
                probes[nbytes] = _core.measure_read_bandwidth(nbytes, probe_seconds, 1)
            step = t[impl] / SEQ
            gbs = nbytes / step / 1e9
            rows.append(
                [
                    f"H{hidden} b{batch}",
                    impl,
                    f"{nbytes / 1024:.0f}",
                    f"{step * 1e6:.2f}",
                    f"{gbs:.1f}",
                    f"{probes[nbytes]:.1f}",
                    f"{gbs / probes[nbytes]:.2f}x",
                ]
            )
    return _table(["shape", "impl", "W_hh KiB", "us/step", "GB/s", "probe GB/s", "vs probe"], rows)


def embedding_table(rounds, min_seconds, log):
    num, dim, rank = EMB
    rows = []
    for tokens in TOKENS:
        log(f"embedding {tokens} tokens")
        t = interleaved(rc.embedding_case(num, dim, rank, tokens), rounds, min_seconds)
        rows.append(
            [
                str(tokens),
                f"{t['lrk_lowrank'] * 1e6:.1f}",
                f"{t['lrk_dense'] * 1e6:.1f}",
                f"{t['torch_dense'] * 1e6:.1f}",
                f"{t['torch_lowrank'] * 1e6:.1f}",
                _x(t["torch_lowrank"], t["lrk_lowrank"]),
                _x(t["lrk_dense"], t["lrk_lowrank"]),
                _x(t["torch_dense"], t["lrk_lowrank"]),
                _x(t["torch_dense"], t["lrk_dense"]),
                f"{2 * tokens * rank * dim / t['lrk_lowrank'] / 1e9:.1f}",
            ]
        )
    dense_b, fact_b = rc.embedding_bytes(num, dim), rc.embedding_bytes(num, dim, rank)
    head = (
        f"table {num} x {dim}: dense {dense_b / 2**20:.1f} MiB; factors A ({num} x {rank}) + "
        f"B ({rank} x {dim}) {fact_b / 2**20:.2f} MiB ({dense_b / fact_b:.1f}x smaller)"
    )
    return (
        head
        + "\n"
        + _table(
            [
                "tokens",
                "lrk LR us",
                "lrk dense us",
                "torch dense us",
                "torch LR us",
                "LR vs torch LR",
                "LR vs lrk dense",
                "LR vs torch dense",
                "lrk dense vs torch",
                "LR GFLOP/s",
            ],
            rows,
        )
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about half the time)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per row (default 15, 5 quick)")
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    args = ap.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    min_seconds = 0.3 if args.quick else 1.0
    probe_seconds = 0.05 if args.quick else 0.2

    lrkernels.set_num_threads(1)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    info = lrkernels.info()

    def log(msg):
        print(f"  ... {msg}", file=sys.stderr, flush=True)

    ort_text = f"onnxruntime {rc.ort.__version__}" if rc.ort is not None else "no onnxruntime"
    lines = [
        "lrkernels recurrent / embedding benchmarks (benchmarks/rnn_report.py"
        + (" --quick" if args.quick else "")
        + ")",
        f"cpu: {info['cpu']!r} ({platform.machine()}, {os.cpu_count()} logical cores); "
        f"isa={info['isa']} kernel={info['kernels'].get(info['isa'])}",
        f"threads: lrkernels {lrkernels.get_num_threads()}, torch {torch.get_num_threads()} "
        f"(interop {torch.get_num_interop_threads()}), onnxruntime intra 1 / inter 1, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}",
        f"lrkernels {info['version']} ({info['compiler']}), torch {torch.__version__}, "
        f"{ort_text}, numpy {np.__version__}",
        f"single-core f32 FMA peak ({info['isa']}): "
        f"{_core.measure_peak_gflops(info['isa'], probe_seconds * 2) or 0:.1f} GFLOP/s; "
        f"streaming-read probe, 256 MiB buffer, 1 thread: "
        f"{_core.measure_read_bandwidth(256 << 20, probe_seconds * 2, 1):.1f} GB/s",
        f"rounds per row: {rounds} (interleaved, at least {min_seconds} s per row); seq {SEQ}, "
        "input_size = H; times are medians",
        "",
    ]
    print("\n".join(lines), flush=True)
    for cell in args.cells:
        times, ratios = recurrent_tables(cell, SHAPES, rounds, min_seconds, log)
        print(
            f"== {cell.upper()}: median ms per seq-100 call (ops = the factorized cell in torch "
            "ops, H/4 and H/8 the ranks)"
        )
        print(times)
        print()
        print(
            f"== {cell.upper()}: speed-ups (a vs b = time of b / time of a; LR = lrkernels "
            "LowRank at that rank)"
        )
        print(ratios)
        print(flush=True)
        print(
            f"== {cell.upper()}: recurrent step, effective W_hh bandwidth (input_size 8, "
            "per-step = seq-100 time / 100; bytes = W_hh or its two factors, float32)"
        )
        print(bandwidth_table(cell, SHAPES, rounds, min_seconds, log, probe_seconds))
        print(flush=True)
    print("== EMBEDDING: median us per lookup (LR = factorized A, B)")
    print(embedding_table(rounds, min_seconds, log))
    print()
    print(
        "vs probe: GB/s / the streaming-read probe over a buffer as large as those weights (the\n"
        "same cache level: the loop reads the same weights call after call, so up to a few MiB\n"
        "they come from cache, as the probe's do); a reference point, not a ceiling - above 1x\n"
        "is possible. At batch 16 the step is compute-bound: its GB/s says how far from\n"
        "memory-bound it is. LR GFLOP/s: 2 tokens rank dim / time of lrkernels' factorized\n"
        "lookup (the expansion by B is a GEMM; the dense lookup is a row copy)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
