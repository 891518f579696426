"""Summarize a pytest-benchmark JSON file: medians, ratios within each group, GFLOP/s, % of peak.

    python -m pytest benchmarks --benchmark-json=bench.json
    python benchmarks/report.py bench.json [--peak GFLOPS]

Without --peak the single-core FMA peak of the active ISA is measured here.
"""

import argparse
import json
from collections import OrderedDict


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("json_file")
    ap.add_argument("--peak", type=float, default=None, help="FMA peak in GFLOP/s")
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
    print(f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}; "
          f"peak used for %: {peak:.1f} GFLOP/s" if peak else "peak: n/a")
    header = f"{'group':44s} {'impl':14s} {'median us':>10s} {'GFLOP/s':>8s} {'% peak':>7s}  ratio"
    print(header)
    print("-" * len(header))
    for name, impls in groups.items():
        for impl, b in impls.items():
            med = b["stats"]["median"]
            gf = b["extra_info"]["flops"] / med / 1e9
            pct = f"{100 * gf / peak:6.1f}%" if peak else "    n/a"
            ratio = ""
            if impl == "lowrank":
                parts = []
                if "numpy_lowrank" in impls:
                    parts.append(f"{impls['numpy_lowrank']['stats']['median'] / med:.2f}x vs numpy 2 matmuls")
                if "dense" in impls:
                    parts.append(f"{impls['dense']['stats']['median'] / med:.2f}x vs dense Linear")
                ratio = ", ".join(parts)
            elif impl == "dense" and "numpy_dense" in impls:
                ratio = f"{impls['numpy_dense']['stats']['median'] / med:.2f}x vs numpy matmul"
            print(f"{name:44s} {impl:14s} {med * 1e6:10.1f} {gf:8.1f} {pct}  {ratio}")


if __name__ == "__main__":
    main()
