"""Summarize a pytest-benchmark JSON file: medians, ratios within each group, GFLOP/s, % of peak.

    python -m pytest benchmarks --benchmark-json=bench.json
    python benchmarks/report.py bench.json [--peak GFLOPS] [--markdown]

Without --peak the single-core FMA peak of the active ISA is measured here.

Linear groups (test_bench_linear.py): lowrank against numpy's two matmuls and the dense Linear.
Convolution groups (test_bench_conv.py, recognized by `dense_flops` in extra_info; one group per
shape and thread count, extra_info["threads"], 1 when absent): every impl's median, GFLOP/s and %
of peak (threads x the single-core peak), then per group
  fusion         tucker's speed-up over the same three convolutions run one by one
                 (lrk_unfused, ort_unfused, torch_unfused, ncnn_unfused; and tucker_nhwc over
                 lrk_unfused_nhwc); a fused kernel should be faster: values <= 1 are flagged with
                 "!"; then the geometric mean of ort_unfused / tucker per thread count
  factorization  tucker's speed-up over the fastest dense NCHW convolution measured (min of
                 lrk_dense, ort_dense, torch_dense, ncnn_dense) and tucker_nhwc's over
                 lrk_dense_nhwc, next to the FLOP ratio dense_flops / tucker flops and speed-up /
                 FLOP ratio (goal >= 70%)
  realized       the fastest dense convolution of any layout and runtime (lrk_dense,
                 lrk_dense_nhwc, ort_dense, torch_dense, ncnn_dense; named), speed-up = its
                 median / tucker's (NCHW), FLOP ratio, realized = speed-up / FLOP ratio (the
                 fraction of the FLOP ratio turned into speed-up), and tucker / tucker_nhwc
                 (NCHW against NHWC: > 1 where NHWC is faster)
  threads        per shape, t1 median / t2 median of tucker, tucker_nhwc, lrk_dense,
                 ort_unfused, ncnn_dense (2.00x is perfect scaling on 2 threads)
--markdown prints the same tables as markdown (for BENCHMARKS.md).
"""

import argparse
import json
import math
from collections import OrderedDict


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("json_file")
    ap.add_argument("--peak", type=float, default=None, help="FMA peak in GFLOP/s")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = ap.parse_args()

    with open(args.json_file) as f:
        data = json.load(f)
    peak = args.peak
    if peak is None:
        import lrkernels

        peak = lrkernels._core.measure_peak_gflops(lrkernels.get_isa(), 0.3)

    groups = OrderedDict()
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], {})[b["extra_info"]["impl"]] = b
    conv_groups = OrderedDict(
        (name, impls)
        for name, impls in groups.items()
        if any("dense_flops" in b["extra_info"] for b in impls.values())
    )
    groups = OrderedDict((name, impls) for name, impls in groups.items() if name not in conv_groups)
    print(
        f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}; "
        f"peak used for %: {peak:.1f} GFLOP/s"
        if peak
        else "peak: n/a"
    )
    if args.markdown:
        if groups:
            _linear_markdown(groups, peak)
        if conv_groups:
            _conv_report(conv_groups, peak, markdown=True)
        return
    if groups:
        _linear_text(groups, peak)
    if conv_groups:
        if groups:
            print()
        _conv_report(conv_groups, peak, markdown=False)


def _gflops(b):
    return b["extra_info"]["flops"] / b["stats"]["median"] / 1e9


def _pct(gf, peak):
    return f"{100 * gf / peak:.1f}%" if peak else "n/a"


def _linear_ratio(impl, impls):
    med = impls[impl]["stats"]["median"]
    if impl == "lowrank":
        parts = []
        if "numpy_lowrank" in impls:
            parts.append(
                f"{impls['numpy_lowrank']['stats']['median'] / med:.2f}x vs numpy 2 matmuls"
            )
        if "ort_lowrank" in impls:
            parts.append(
                f"{impls['ort_lowrank']['stats']['median'] / med:.2f}x vs onnxruntime 2 MatMuls"
            )
        if "dense" in impls:
            parts.append(f"{impls['dense']['stats']['median'] / med:.2f}x vs dense Linear")
        return ", ".join(parts)
    if impl == "dense":
        parts = [
            f"{impls[peer]['stats']['median'] / med:.2f}x vs {what}"
            for peer, what in (("numpy_dense", "numpy matmul"), ("ort_dense", "onnxruntime"))
            if peer in impls
        ]
        return ", ".join(parts)
    return ""


def _linear_markdown(groups, peak):
    rows = []
    for name, impls in groups.items():
        for impl, b in impls.items():
            gf = _gflops(b)
            rows.append(
                [
                    name,
                    impl,
                    f"{b['stats']['median'] * 1e6:.1f}",
                    f"{gf:.1f}",
                    _pct(gf, peak),
                    _linear_ratio(impl, impls),
                ]
            )
    print()
    _table(["group", "impl", "median us", "GFLOP/s", "% peak", "ratio"], rows, "llrrrl", True)


def _table(headers, rows, align, markdown):
    """Print rows (lists of str) under headers; align: one 'l' or 'r' per column."""
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        out = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)]
        return "  ".join(out).rstrip()

    print(line(headers))
    print("-" * len(line(headers)))
    for row in rows:
        print(line(row))


UNFUSED = [
    ("tucker", "lrk_unfused"),
    ("tucker", "ort_unfused"),
    ("tucker", "torch_unfused"),
    ("tucker", "ncnn_unfused"),
    ("tucker_nhwc", "lrk_unfused_nhwc"),
]
DENSE_NCHW = ["lrk_dense", "ort_dense", "torch_dense", "ncnn_dense"]
DENSE_ANY = ["lrk_dense", "lrk_dense_nhwc", "ort_dense", "torch_dense", "ncnn_dense"]
SCALING = ["tucker", "tucker_nhwc", "lrk_dense", "ort_unfused", "ncnn_dense"]
GOAL = 0.70  # of the FLOP ratio, for tucker against the fastest dense convolution


def _info(impls):
    """extra_info of any benchmark of a group (shape and threads are the same for all)."""
    return next(iter(impls.values()))["extra_info"]


def _threads(impls):
    return _info(impls).get("threads", 1)


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _conv_report(groups, peak, markdown):
    def title(text):
        print()
        print(f"**{text}**" if markdown else text)
        print()

    def median(impls, impl):
        return impls[impl]["stats"]["median"] if impl in impls else None

    def note(text):  # a line of its own, also in markdown
        print(text + ("  " if markdown else ""))

    title(
        "Convolutions, batch 1, threads as in the group name (t1, t2): median, GFLOP/s of what "
        "each impl computes (direct-convolution FLOPs: Winograd runs can pass 100%), % of "
        "threads x the single-core peak"
    )
    rows = []
    for name, impls in groups.items():
        for impl, b in impls.items():
            gf = _gflops(b)
            info = b["extra_info"]
            rows.append(
                [
                    name,
                    impl,
                    info.get("layout", ""),
                    f"{b['stats']['median'] * 1e6:.1f}",
                    f"{gf:.1f}",
                    _pct(gf, peak * info.get("threads", 1) if peak else peak),
                    info.get("backend", ""),
                ]
            )
    _table(
        ["group", "impl", "layout", "median us", "GFLOP/s", "% peak", "backend"],
        rows,
        "lllrrrl",
        markdown,
    )

    title(
        "Fusion: speed-up of tucker (fused) over the same three convolutions run one by one, "
        "tucker_nhwc in the nhwc column (should be > 1; '!' where it is not)"
    )
    rows, faster = [], {pair: [0, 0] for pair in UNFUSED}
    for name, impls in groups.items():
        row = [name]
        for fused, unfused in UNFUSED:
            a, b = median(impls, fused), median(impls, unfused)
            if a is None or b is None:
                row.append("-")
                continue
            faster[fused, unfused][0] += b / a > 1
            faster[fused, unfused][1] += 1
            row.append(f"{b / a:.2f}x" + ("" if b / a > 1 else " !"))
        rows.append(row)
    headers = ["group"] + [("" if f == "tucker" else "nhwc ") + f"vs {u}" for f, u in UNFUSED]
    _table(headers, rows, "l" + "r" * len(UNFUSED), markdown)
    ort_ratios = {}
    for impls in groups.values():
        a, b = median(impls, "tucker"), median(impls, "ort_unfused")
        if a is not None and b is not None:
            ort_ratios.setdefault(_threads(impls), []).append(b / a)
    if ort_ratios:
        print()
        for n, ratios in sorted(ort_ratios.items()):
            note(
                f"tucker vs ort_unfused (ORT's three convolutions), geometric mean over the "
                f"{len(ratios)} {n}-thread groups: {_geomean(ratios):.2f}x"
            )

    title(
        f"Factorization: speed-up of tucker over the fastest dense NCHW convolution, and of "
        f"tucker_nhwc over lrk_dense_nhwc, against the FLOP ratio dense / tucker "
        f"(goal: >= {GOAL:.0%} of it)"
    )
    rows, g_ok, g_all = [], 0, 0
    for name, impls in groups.items():
        t = impls.get("tucker") or impls.get("tucker_nhwc")
        if t is None:
            continue
        ratio = t["extra_info"]["dense_flops"] / t["extra_info"]["flops"]
        row = [name, f"{ratio:.2f}x"]
        dense = [(median(impls, d), d) for d in DENSE_NCHW if d in impls]
        for fused, (best, best_name) in (
            ("tucker", min(dense) if dense else (None, None)),
            ("tucker_nhwc", (median(impls, "lrk_dense_nhwc"), "lrk_dense_nhwc")),
        ):
            a = median(impls, fused)
            if fused == "tucker":
                row.append(f"{best_name} {best * 1e6:.1f} us" if best else "-")
            if a is None or best is None:
                row += ["-", "-"]
                continue
            speedup = best / a
            frac = speedup / ratio
            if fused == "tucker":
                g_all += 1
                g_ok += frac >= GOAL
            row += [f"{speedup:.2f}x", f"{frac:.0%}" + (" ok" if frac >= GOAL else " below")]
        rows.append(row)
    _table(
        [
            "group",
            "FLOP ratio",
            "fastest dense NCHW",
            "tucker speed-up",
            "of FLOP ratio",
            "nhwc vs lrk_dense_nhwc",
            "of FLOP ratio",
        ],
        rows,
        "lrlrrrr",
        markdown,
    )

    print()
    counts = ", ".join(
        f"{'nhwc ' if f != 'tucker' else ''}vs {u} {ok}/{n}"
        for (f, u), (ok, n) in faster.items()
        if n
    )
    print(f"fused faster than unfused: {counts}" + ("  " if markdown else ""))
    print(
        f"tucker >= {GOAL:.0%} of the FLOP ratio against the fastest dense NCHW convolution: "
        f"{g_ok}/{g_all} groups"
    )

    _realized_table(groups, markdown, title, median, note)
    _scaling_table(groups, markdown, title, median)


def _realized_table(groups, markdown, title, median, note):
    title(
        "Realized: tucker (NCHW) against the fastest dense convolution of any layout and runtime "
        f"({', '.join(DENSE_ANY)}); realized = speed-up / FLOP ratio; tucker / tucker_nhwc > 1 "
        "where NHWC is faster"
    )
    rows, realized = [], {}
    for name, impls in groups.items():
        t = median(impls, "tucker")
        info = (impls.get("tucker") or impls.get("tucker_nhwc") or {}).get("extra_info")
        if info is None:
            continue
        ratio = info["dense_flops"] / info["flops"]
        dense = [(median(impls, d), d) for d in DENSE_ANY if d in impls]
        best, best_name = min(dense) if dense else (None, None)
        nhwc = median(impls, "tucker_nhwc")
        row = [
            name,
            f"{ratio:.2f}x",
            best_name or "-",
            f"{best * 1e6:.1f}" if best else "-",
            f"{t * 1e6:.1f}" if t else "-",
        ]
        if t and best:
            speedup = best / t
            realized.setdefault(_threads(impls), []).append(speedup / ratio)
            row += [f"{speedup:.2f}x", f"{speedup / ratio:.0%}"]
        else:
            row += ["-", "-"]
        row.append(f"{t / nhwc:.2f}x" if t and nhwc else "-")
        rows.append(row)
    _table(
        [
            "group",
            "FLOP ratio",
            "fastest dense",
            "dense us",
            "tucker us",
            "speed-up",
            "realized",
            "tucker / tucker_nhwc",
        ],
        rows,
        "lrlrrrrr",
        markdown,
    )
    if realized:
        print()
        for n, fracs in sorted(realized.items()):
            note(
                f"realized, geometric mean over the {len(fracs)} {n}-thread groups: "
                f"{_geomean(fracs):.0%} of the FLOP ratio"
            )


def _scaling_table(groups, markdown, title, median):
    by_shape = OrderedDict()
    for impls in groups.values():
        info = _info(impls)
        by_shape.setdefault(info.get("shape", "?"), {})[_threads(impls)] = impls
    pairs = [(shape, t[1], t[2]) for shape, t in by_shape.items() if 1 in t and 2 in t]
    if not pairs:
        return
    title("Threads: t1 median / t2 median per shape (2.00x = perfect scaling on 2 threads)")
    rows = []
    for shape, one, two in pairs:
        row = [shape]
        for impl in SCALING:
            a, b = median(one, impl), median(two, impl)
            row.append(f"{a / b:.2f}x" if a and b else "-")
        rows.append(row)
    _table(["shape"] + SCALING, rows, "l" + "r" * len(SCALING), markdown)


def _linear_text(groups, peak):
    header = f"{'group':44s} {'impl':14s} {'median us':>10s} {'GFLOP/s':>8s} {'% peak':>7s}  ratio"
    print(header)
    print("-" * len(header))
    for name, impls in groups.items():
        for impl, b in impls.items():
            med = b["stats"]["median"]
            gf = b["extra_info"]["flops"] / med / 1e9
            pct = f"{100 * gf / peak:6.1f}%" if peak else "    n/a"
            ratio = _linear_ratio(impl, impls)
            print(f"{name:44s} {impl:14s} {med * 1e6:10.1f} {gf:8.1f} {pct}  {ratio}")


if __name__ == "__main__":
    main()
