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
    print(
        f"ISAs available: {', '.join(info['isas_available'])}; using {isa} "
        f"({info['kernels'][isa]}); threads: lrkernels {lrkernels.get_num_threads()}, "
        f"numpy {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}"
    )
    peak = lrkernels._core.measure_peak_gflops(isa, 0.2)
    if peak:
        print(f"measured single-core f32 FMA peak ({isa}): {peak:.0f} GFLOP/s")
    print()

    rng = np.random.default_rng(0)
    header = (
        f"{'layer':34s} {'batch':>5s} {'max rel err':>11s} {'lowrank us':>10s} "
        f"{'numpy 2mm us':>12s} {'speed-up':>8s} {'dense us':>9s} {'vs dense':>8s} "
        f"{'GFLOP/s':>8s}"
    )
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
            print(
                f"{label:34s} {batch:5d} {err:11.2e} {t_lr * 1e6:10.1f} {t_np * 1e6:12.1f} "
                f"{t_np / t_lr:7.2f}x {t_dense * 1e6:9.1f} {t_dense / t_lr:7.2f}x {gflops:8.1f}"
            )
    print()
    ok = worst < 1e-4
    print(
        f"all layers match the numpy reference (worst relative error {worst:.1e})"
        if ok
        else f"MISMATCH against the numpy reference: worst relative error {worst:.1e}"
    )
    return 0 if ok else 1


def model_demo(args, parser) -> int:
    if args.plot:
        if not _have_matplotlib():
            parser.error("--plot needs matplotlib: pip install 'lrkernels[plot]'")
        _check_writable(parser, "--plot", args.plot)
    try:
        import lrkernels.torch  # noqa: F401
        from lrkernels.torch import digits_demo
    except ImportError as e:
        print(f"demo --model: {e}", file=sys.stderr)
        return 2
    kw = dict(levels=(0.3, 0.15), folds=2, epochs=12, finetune_epochs=3) if args.quick else {}
    res = digits_demo.run(threads=args.threads, plot=args.plot, **kw)
    ok = res["reloaded_acc"] == res["fused_acc"] and res["compressed_acc"] > 0.8
    return 0 if ok else 1


def _positive_int(text):
    """argparse type: an int >= 1 (batch sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _threads(text):
    """argparse type: a thread count lrkernels.set_num_threads accepts (1..max_num_threads())."""
    from lrkernels import _core

    top = _core.max_num_threads()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= top:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {top} (lrkernels._core.max_num_threads() on this "
            f"machine), got {text!r}"
        )
    return value


def _isa(text):
    """argparse type: an ISA this build has and this CPU supports (set_isa's own check and
    message, the ISA in use restored)."""
    import lrkernels

    before = lrkernels.get_isa()
    try:
        lrkernels.set_isa(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    finally:
        lrkernels.set_isa(before)
    return text


def _check_writable(parser, option, path):
    """parser.error unless `path` can be written (checked before the run, which takes a while):
    an existing file is opened for appending (its content untouched), a new one is created and
    removed again."""
    try:
        if os.path.exists(path):
            if os.path.isdir(path):
                raise IsADirectoryError(f"{path!r} is a directory")
            with open(path, "a"):
                pass
        else:
            with open(path, "x"):
                pass
            os.remove(path)
    except OSError as exc:
        parser.error(f"{option} {path}: cannot write there ({exc.strerror or exc})")


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lrkernels", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="check and time example layers on this machine")
    p_demo.add_argument(
        "--batches",
        type=_positive_int,
        nargs="+",
        default=[1, 8, 64],
        help="batch sizes (integers >= 1; default 1 8 64)",
    )
    p_demo.add_argument("--isa", type=_isa, help="run on this ISA (default: the best available)")
    p_demo.add_argument(
        "--threads",
        type=_threads,
        default=1,
        help="threads for lrkernels and numpy's BLAS alike (default 1)",
    )
    p_demo.add_argument(
        "--model",
        action="store_true",
        help="the end-to-end PyTorch example instead: train a CNN on scikit-learn's digits, "
        "compress, fine-tune, choose the level by cross-validation, time it (needs "
        "lrkernels[torch,demo]; a few minutes)",
    )
    p_demo.add_argument("--plot", metavar="FILE", help="--model: save the trade-off plot (PNG)")
    p_demo.add_argument(
        "--quick", action="store_true", help="--model: fewer levels and epochs (about a minute)"
    )
    sub.add_parser("info", help="print build and CPU facts as JSON")
    from lrkernels.bench import COLUMNS_HELP

    p_bench = sub.add_parser(
        "bench",
        help="factorized vs dense layers on this machine (< 1 minute)",
        epilog="Columns:\n" + COLUMNS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_bench.add_argument(
        "--threads",
        type=_threads,
        help="threads per layer call, 1 to lrkernels._core.max_num_threads() (default: all CPUs)",
    )
    p_bench.add_argument("--isa", type=_isa, help="run on this ISA (default: the best available)")
    p_bench.add_argument("--quick", action="store_true", help="fewer layers and shorter timings")
    p_bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p_bench.add_argument(
        "--plot",
        metavar="FILE",
        help="draw speed-up against rank (needs matplotlib: lrkernels[plot])",
    )
    p_bench.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    args = parser.parse_args(argv)

    if args.command == "bench":
        # Everything that can fail is checked before the run (a minute), not after it.
        if args.plot and not _have_matplotlib():
            p_bench.error("--plot needs matplotlib: pip install 'lrkernels[plot]'")
        for option in ("json", "plot"):
            if getattr(args, option):
                _check_writable(p_bench, "--" + option, getattr(args, option))
        import lrkernels
        from lrkernels import bench

        if args.isa:
            lrkernels.set_isa(args.isa)
        if args.threads is not None:
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
    if args.model:
        return model_demo(args, p_demo)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
