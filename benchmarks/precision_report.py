"""Reduced precision (issue 16): the tables of the issue, in markdown.

    python benchmarks/precision_report.py [--rounds 25] [--min-seconds 1.0] [--threads2 2]

1. Linear layers (benchmarks/precision_cases.py: LowRankLinear 1280 -> 128 -> 1000 and the dense
   Linear 1280 -> 1000 at batch 1, 8, 64; 4096 -> 256 -> 4096 at batch 1 and 64, its dense Linear
   at batch 1): median us of lrkernels at precision fp32 / fp16 / int8, onnxruntime's and torch's
   dynamic int8 quantization of the same matmuls, every library at 1 thread; then lrkernels alone
   at --threads2 threads (0: no such table).
2. TuckerConv2d and Conv2d at fp32 / fp16 / int8 on two of test_bench_conv.py's shapes (int8:
   "n/a" while the build refuses int8 convolutions).
3. The issue's ratios (a vs b = time of b / time of a) next to its goals.
4. Accuracy: relative max error (max |y - y32| / max |y32|, y32 = lrkernels' fp32 output) of
   fp16 and int8 on Gaussian inputs and on the same inputs with 4 input columns (channels) x50.

All times are medians over interleaved rounds (rnn_report.interleaved: each round calls every
contestant of one row in turn; calls under 0.2 ms are repeated within a round and averaged), so
the ratios of a row come from the same seconds under the same load. Every contestant is checked
against the float64 reference before it is timed. About 40 s on a 2-core EPYC.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lrkernels  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import precision_cases as pc  # noqa: E402
from resnet18_report import load, machine, table  # noqa: E402
from rnn_report import interleaved  # noqa: E402

# (shape name, kind, batches)
LINEAR_ROWS = [
    ("classifier-head", "lowrank", (1, 8, 64)),
    ("classifier-head", "dense", (1, 8, 64)),
    ("square-4096", "lowrank", (1, 64)),
    ("square-4096", "dense", (1,)),
]
LRK = [f"lrk_{p}" for p in pc.PRECISIONS]
ACCURACY_BATCH = 64


def _us(t):
    return "n/a" if t is None else f"{t * 1e6:.1f}" if t < 1e-3 else f"{t * 1e6:.0f}"


def _ratio(a, b):
    """time a / time b as '2.50x' (how many times faster b is), or 'n/a'."""
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def _err(e):
    return "n/a" if e is None else f"{e:.1e}"


def _row_label(name, kind, batch):
    return f"{name} {kind} b{batch}"


def linear_timings(rounds, min_seconds, threads2, log):
    """{(name, kind, batch): {impl: s}} at 1 thread, the same for lrkernels at threads2, the
    kernels of each layer {(name, kind): {impl: [names]}} and the accuracy rows."""
    t1, t2, kernels, accuracy = {}, {}, {}, []
    for name, kind, batches in LINEAR_ROWS:
        log(f"build {name} {kind}")
        case = pc.linear_case(name, kind, threads=1, check_batches=batches)
        kernels[(name, kind)] = {k: case.layers[k].kernels for k in LRK}
        for batch in batches:
            log(f"time {name} {kind} batch {batch}")
            x = pc.linear_input(name, batch)
            t1[(name, kind, batch)] = interleaved(case.fns(x), rounds, min_seconds)
            if threads2:
                lrkernels.set_num_threads(threads2)
                t2[(name, kind, batch)] = interleaved(case.fns(x, LRK), rounds, min_seconds)
                lrkernels.set_num_threads(1)
        x = pc.linear_input(name, ACCURACY_BATCH, seed=1)
        for label, xi in (("gaussian", x), ("outliers x50", pc.outlier_input(x))):
            y = {k: pc.as_numpy(p(xi)()) for k, p in case.prepare.items()}
            errs = {k: pc.rel_err(y[k], y["lrk_fp32"]) for k in y if k != "lrk_fp32"}
            accuracy.append((f"{name} {kind}", label, errs))
    return t1, t2, kernels, accuracy


def conv_timings(rounds, min_seconds, log):
    res, accuracy = [], []
    for shape in pc.CONV_SHAPES:
        log(f"conv {pc.conv_label(shape)}")
        case = pc.conv_case(shape)
        t = interleaved(case.fns(case.x), rounds, min_seconds)
        for label, xi in (("gaussian", case.x), ("outliers x50", pc.outlier_input(case.x))):
            y = {k: p(xi)() for k, p in case.prepare.items()}
            errs = {}
            for k in pc.CONV_IMPLS:
                base = k.split("_")[0] + "_fp32"
                if k != base:
                    errs[k] = pc.rel_err(y[k], y[base]) if k in y else None
            accuracy.append((case.label, label, errs))
        res.append((case, t))
    return res, accuracy


def _linear_time_table(t1):
    head = ["layer", "lrk fp32", "lrk fp16", "lrk int8", "ort int8", "torch int8"]
    head += ["fp16 vs fp32", "int8 vs fp32", "int8 vs ort", "int8 vs torch"]
    rows = []
    for (name, kind, batch), t in t1.items():
        g = t.get
        rows.append(
            [_row_label(name, kind, batch)]
            + [_us(g(k)) for k in LRK + ["ort_int8", "torch_int8"]]
            + [
                _ratio(g("lrk_fp32"), g("lrk_fp16")),
                _ratio(g("lrk_fp32"), g("lrk_int8")),
                _ratio(g("ort_int8"), g("lrk_int8")),
                _ratio(g("torch_int8"), g("lrk_int8")),
            ]
        )
    return table(head, rows)


def _threads_table(t1, t2, n):
    head = ["layer"] + [f"{p} us" for p in pc.PRECISIONS]
    head += [f"{p} vs 1 thread" for p in pc.PRECISIONS]
    head += ["fp16 vs fp32", "int8 vs fp32"]
    rows = []
    for key, t in t2.items():
        rows.append(
            [_row_label(*key)]
            + [_us(t[k]) for k in LRK]
            + [_ratio(t1[key][k], t[k]) for k in LRK]
            + [_ratio(t["lrk_fp32"], t["lrk_fp16"]), _ratio(t["lrk_fp32"], t["lrk_int8"])]
        )
    return table(head, rows)


def _conv_table(conv):
    head = ["layer"] + [k.replace("_", " ") for k in pc.CONV_IMPLS]
    head += ["tucker fp16 vs fp32", "tucker int8 vs fp32", "conv int8 vs fp32"]
    rows = []
    for case, t in conv:
        g = t.get
        rows.append(
            [case.label.removeprefix("conv ")]
            + [_us(g(k)) for k in pc.CONV_IMPLS]
            + [
                _ratio(g("tucker_fp32"), g("tucker_fp16")),
                _ratio(g("tucker_fp32"), g("tucker_int8")),
                _ratio(g("conv_fp32"), g("conv_int8")),
            ]
        )
    return table(head, rows)


def _goal(goal, values, threshold):
    """A goals-table row: values [(label, ratio or None)], met when every ratio >= threshold."""
    shown = ", ".join(
        " ".join(filter(None, [lab, _ratio(r, 1.0) if r else "n/a"])) for lab, r in values
    )
    rs = [r for _, r in values]
    if threshold is None:
        met = "(no goal)"
    elif any(r is None for r in rs):
        met = "n/a"
    else:
        met = "yes" if all(r >= threshold for r in rs) else "no"
    return [goal, shown, met]


def _goals_table(t1, conv):
    def r(key, a, b):
        t = t1.get(key, {})
        return t[a] / t[b] if a in t and b in t else None

    ch = "classifier-head"
    vs_ort = [(f"b{b}", r((ch, "lowrank", b), "ort_int8", "lrk_int8")) for b in (1, 8, 64)]
    have = [v for _, v in vs_ort if v is not None]
    geomean = math.exp(sum(math.log(v) for v in have) / len(have)) if len(have) == 3 else None
    rows = [
        _goal("int8 LowRankLinear vs onnxruntime int8 (1280-128-1000), each >= 1.3x", vs_ort, 1.3),
        _goal("  geomean of the three >= 1.5x", [("geomean", geomean)], 1.5),
        _goal(
            "int8 vs lrkernels fp32, LowRankLinear 1280-128-1000 batch 64, >= 2.5x",
            [("b64", r((ch, "lowrank", 64), "lrk_fp32", "lrk_int8"))],
            2.5,
        ),
        _goal(
            "fp16 vs fp32, LowRankLinear 4096-256-4096 batch 1, >= 1.7x",
            [("b1", r(("square-4096", "lowrank", 1), "lrk_fp32", "lrk_fp16"))],
            1.7,
        ),
        _goal(
            "fp16 vs fp32 at batch 64 (LowRank 1280-128-1000, dense 1280-1000, LowRank 4096)",
            [
                ("LR", r((ch, "lowrank", 64), "lrk_fp32", "lrk_fp16")),
                ("dense", r((ch, "dense", 64), "lrk_fp32", "lrk_fp16")),
                ("LR 4096", r(("square-4096", "lowrank", 64), "lrk_fp32", "lrk_fp16")),
            ],
            None,
        ),
    ]
    for case, t in conv:
        ratio = t["tucker_fp32"] / t["tucker_int8"] if "tucker_int8" in t else None
        rows.append(
            _goal(
                f"int8 TuckerConv2d vs fp32, {case.label.removeprefix('conv ')}, >= 2x",
                [("", ratio)],
                2.0,
            )
        )
    return table(["goal", "measured", "met"], rows)


def _accuracy_table(rows, impls):
    head = ["layer", "input"] + [k.replace("_", " ") for k in impls]
    return table(head, [[lay, inp] + [_err(e.get(k)) for k in impls] for lay, inp, e in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=25, help="interleaved rounds per row")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="at least this long per row")
    ap.add_argument("--threads2", type=int, default=2, help="lrkernels-only table (0: none)")
    args = ap.parse_args(argv)

    lrkernels.set_num_threads(1)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    info = lrkernels.info()

    def log(msg):
        print(f"  ... {msg}", file=sys.stderr, flush=True)

    isa = info["isa"]
    pk = info["precision_kernels"][isa]
    ort_text = f"onnxruntime {pc.ort.__version__}" if pc.ort is not None else "no onnxruntime"
    print("# lrkernels reduced precision (benchmarks/precision_report.py)\n")
    print(f"machine: {machine()}; {load()}")
    print(
        f"lrkernels {info['version']} ({info['compiler']}); isa={isa}; cpu_features="
        f"{info['cpu_features']}; disabled={info['disabled_cpu_features']}; preferred kernels "
        f"fp32 {pk['fp32']}, fp16 {pk['fp16']}, int8 {pk['int8']}"
    )
    if "scalar" in pk["int8"] and isa != "scalar":
        print(
            f"NOTE: the int8 GEMM on isa={isa} is the scalar row {pk['int8']} (no SIMD int8 row "
            "in this build or for this CPU): the int8 times are not the issue's kernels"
        )
    print(
        f"threads: lrkernels {lrkernels.get_num_threads()} (and {args.threads2} in the second "
        f"table), torch {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}, "
        f"engine {torch.backends.quantized.engine}), onnxruntime intra 1 / inter 1, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )
    print(f"torch {torch.__version__}, {ort_text}, numpy {np.__version__}")
    print(
        f"rounds per row: {args.rounds} (interleaved, at least {args.min_seconds} s per row); "
        "times are medians, us per call\n",
        flush=True,
    )

    t1, t2, kernels, lin_acc = linear_timings(args.rounds, args.min_seconds, args.threads2, log)
    conv, conv_acc = conv_timings(args.rounds, args.min_seconds, log)

    print("## Kernels (layer.kernels at each precision)\n")
    rows = [[f"{n} {k}"] + [", ".join(ks[i]) for i in LRK] for (n, k), ks in kernels.items()]
    for case, _ in conv:
        for kind in ("tucker", "conv"):
            rows.append(
                [f"{case.label} {kind}"]
                + [
                    ", ".join(case.layers[f"{kind}_{p}"].kernels)
                    if f"{kind}_{p}" in case.layers
                    else "n/a (not implemented)"
                    for p in pc.PRECISIONS
                ]
            )
    print(table(["layer", "fp32", "fp16", "int8"], rows))
    print("\n## Linear layers, 1 thread everywhere: median us per call\n")
    print(_linear_time_table(t1))
    if t2:
        print(f"\n## lrkernels at {args.threads2} threads: median us per call\n")
        print(_threads_table(t1, t2, args.threads2))
    print("\n## Convolutions, batch 1, NCHW, 1 thread: median us per call\n")
    print(_conv_table(conv))
    print("\n## The issue's goals (1 thread; a vs b = time of b / time of a)\n")
    print(_goals_table(t1, conv))
    print(
        f"\n## Accuracy: max |y - y_fp32| / max |y_fp32| (y_fp32 = lrkernels fp32), batch "
        f"{ACCURACY_BATCH}; outliers: 4 input columns x50\n"
    )
    print(_accuracy_table(lin_acc, ["lrk_fp16", "lrk_int8", "ort_int8", "torch_int8"]))
    print()
    print(_accuracy_table(conv_acc, [k for k in pc.CONV_IMPLS if not k.endswith("fp32")]))
    print(
        "\nonnxruntime: quantize_dynamic(weight_type=QInt8), per-tensor weight scales (its "
        "default), uint8 activations per tensor; torch: quantize_dynamic(qint8), per-tensor "
        "weights, activations per tensor at 7 bits on x86 (reduce_range); lrkernels int8: "
        "per-channel weights, per-row activations."
    )
    print(f"\nend: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
