"""Command line: ``python -m lrkernels demo|bench|info`` (or ``lrkernels demo|bench|info``).

The demo builds factorized layers of common shapes on random weights, checks them against the
numpy reference and prints their speed against numpy's two matmuls and the dense layer, with the
same number of threads for both (one by default). ``bench`` compares factorized and dense layers
on this machine against its measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# (out_features, in_features, rank, name)
DEMO_SHAPES = [
    (1000, 1280, 128, "classifier head"),
    (1536, 384, 64, "transformer FFN"),
    (2048, 512, 128, "LSTM gates"),
    (4096, 4096, 256, "square 4096"),
]


def _median_seconds(fn, budget=0.15):
    number = 1
    while True:  # calibrate so one repeat takes about 10 ms
        t = timeit.timeit(fn, number=number)
        if t > 0.01 or number >= 1 << 20:
            break
        number *= 4
    repeats = max(3, min(15, int(budget / max(t, 1e-9))))
    times = sorted(timeit.repeat(fn, number=number, repeat=repeats))
    return times[len(times) // 2] / number


def demo(args) -> int:
    import numpy as np

    import lrkernels
    from lrkernels.layer_specs import spec_for

    info = lrkernels.info()
    isa = lrkernels.get_isa()
    print(f"lrkernels {info['version']} on {info['cpu']} ({info['machine']})")
    print(f"ISAs available: {', '.join(info['isas_available'])}; using {isa} "
          f"({info['kernels'][isa]}); threads: lrkernels {lrkernels.get_num_threads()}, "
          f"numpy {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    peak = lrkernels._core.measure_peak_gflops(isa, 0.2)
    if peak:
        print(f"measured single-core f32 FMA peak ({isa}): {peak:.0f} GFLOP/s")
    print()

    rng = np.random.default_rng(0)
    header = (f"{'layer':34s} {'batch':>5s} {'max rel err':>11s} {'lowrank us':>10s} "
              f"{'numpy 2mm us':>12s} {'speed-up':>8s} {'dense us':>9s} {'vs dense':>8s} {'GFLOP/s':>8s}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for out_f, in_f, rank, name in DEMO_SHAPES:
        U = (rng.standard_normal((out_f, rank)) / np.sqrt(rank)).astype(np.float32)
        V = (rng.standard_normal((rank, in_f)) / np.sqrt(in_f)).astype(np.float32)
        b = rng.standard_normal(out_f).astype(np.float32)
        layer = lrkernels.LowRankLinear(U, V, b)
        spec = spec_for(layer)  # reference output and FLOPs from the layer table
        dense = spec.dense_equivalent(layer)
        UT, VT = U.T, V.T
        for batch in args.batches:
            x = rng.standard_normal((batch, in_f)).astype(np.float32)
            y = layer(x)
            ref = spec.run_reference(layer, x)
            err = float(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-30))
            worst = max(worst, err)
            t_lr = _median_seconds(lambda: layer(x))
            t_np = _median_seconds(lambda: (x @ VT) @ UT + b)
            t_dense = _median_seconds(lambda: dense(x))
            gflops = batch * spec.flops(layer)[0] / t_lr / 1e9
            label = f"{name} {out_f}x{in_f} r{rank}"
            print(f"{label:34s} {batch:5d} {err:11.2e} {t_lr * 1e6:10.1f} {t_np * 1e6:12.1f} "
                  f"{t_np / t_lr:7.2f}x {t_dense * 1e6:9.1f} {t_dense / t_lr:7.2f}x {gflops:8.1f}")
    print()
    ok = worst < 1e-4
    print(f"all layers match the numpy reference (worst relative error {worst:.1e})" if ok
          else f"MISMATCH against the numpy reference: worst relative error {worst:.1e}")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lrkernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="check and time example layers on this machine")
    p_demo.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    p_demo.add_argument("--isa", help="run on this ISA (default: the best available)")
    p_demo.add_argument("--threads", type=int, default=1,
                        help="threads for lrkernels and numpy's BLAS alike (default 1)")
    sub.add_parser("info", help="print build and CPU facts as JSON")
    p_bench = sub.add_parser("bench", help="factorized vs dense layers on this machine (< 1 minute)")
    p_bench.add_argument("--threads", type=int, help="threads per layer call (default: all CPUs)")
    p_bench.add_argument("--isa", help="run on this ISA (default: the best available)")
    p_bench.add_argument("--quick", action="store_true", help="fewer layers and shorter timings")
    p_bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p_bench.add_argument("--plot", metavar="FILE",
                         help="draw speed-up against rank (needs matplotlib: lrkernels[plot])")
    p_bench.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    args = parser.parse_args(argv)

    if args.command == "bench":
        import lrkernels
        from lrkernels import bench

        if args.isa:
            lrkernels.set_isa(args.isa)
        if args.threads:
            lrkernels.set_num_threads(args.threads)
        return bench.main(args)

    if args.command == "info":
        import lrkernels

        print(json.dumps(lrkernels.info(), indent=2))
        return 0

    # numpy's BLAS reads its thread count once, at load: restart with the limit in the environment.
    want = str(args.threads)
    if os.environ.get("OPENBLAS_NUM_THREADS") != want and "LRKERNELS_DEMO_REEXEC" not in os.environ:
        env = dict(os.environ, LRKERNELS_DEMO_REEXEC="1", **{v: want for v in _THREAD_VARS})
        cmd = [sys.executable, "-m", "lrkernels"] + (sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()
        os.execve(sys.executable, cmd, env)
    import lrkernels

    lrkernels.set_num_threads(args.threads)
    if args.isa:
        lrkernels.set_isa(args.isa)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
