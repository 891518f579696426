"""ResNet-18, batch 1, 3x224x224: dense torch vs the Tucker-2 compressed model (every 3x3 conv but
the stem at a quarter of its parameters, ``lrkernels.torch.compress(ratio=0.25)``) in torch ops
vs on lrkernels (vs BatchNorm folded, vs fused with the ReLU), NCHW and channels_last, at each
thread count; then the per-layer table and the torch wrapper's per-call overhead.

    python benchmarks/resnet18_report.py --threads 1 2 [--rounds 30] [--fast]

All times are medians over interleaved rounds (each round calls every variant once, in turn), so
the ratios of one table come from one run under the same load. torch and lrkernels are pinned to
the same thread count. --fast: random factors at compress's ranks instead of running compress
(same shapes and ranks, same speed; compress's HOOI takes about a minute on these random weights).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS: before numpy is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lrkernels  # noqa: E402
import lrkernels.torch as lrk_torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resnet18 as rn  # noqa: E402


def interleaved(fns, rounds, min_rounds_s=0.0):
    """{name: median seconds} of each fn, called in turn ``rounds`` times (after one warm-up
    round); continues past ``rounds`` until ``min_rounds_s`` seconds have passed."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    start = time.perf_counter()
    i = 0
    while i < rounds or time.perf_counter() - start < min_rounds_s:
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        i += 1
    return {k: float(np.median(v)) for k, v in times.items()}


def no_grad(fn, *args):
    def call():
        with torch.no_grad():
            return fn(*args)

    return call


def table(head, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(out)


def machine():
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "?"
        )
    except OSError:
        model = "?"
    info = lrkernels.info()
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {model!r}, lrkernels {info['version']} "
        f"isa={info['isa']}, torch {torch.__version__}"
    )


def load():
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average n/a"


def build_models(fast, threads):
    dense = rn.resnet18()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    if fast:
        comp, report = rn.random_compressed(dense, 0.25), None
    else:
        t0 = time.perf_counter()
        comp, report = rn.compressed(dense, 0.25, num_threads=threads, example_inputs=x)
        print(f"compress(ratio=0.25): {time.perf_counter() - t0:.0f} s", flush=True)
    ops = rn.set_use_kernels(copy.deepcopy(comp), False)
    folded = rn.fold_block_batchnorms(comp)
    fused = lrk_torch.fuse(comp)
    try:
        with torch.no_grad():
            fused(x)
    except TypeError as e:  # the kernels' activation= is not in this build yet
        fused = e
    models = {
        "dense torch": dense,
        "compressed, torch ops": ops,
        "lrkernels": comp,
        "lrkernels + BN folded": folded,
        "lrkernels + fuse()": fused,
        "lrkernels + fuse(channels_last=True)": lrk_torch.fuse(comp, channels_last=True),
    }
    return models, report, x


def model_table(models, x, rounds, threads):
    rows, res = [], {}
    for layout in ("NCHW", "channels_last"):
        fns = {}
        for name, m in models.items():
            if isinstance(m, Exception):
                continue
            xi = x
            if layout == "channels_last":
                m = rn.to_channels_last(m)
                xi = x.contiguous(memory_format=torch.channels_last)
            fns[name] = no_grad(m, xi)
        med = interleaved(fns, rounds)
        res[layout] = med
        d, o = med["dense torch"], med["compressed, torch ops"]
        for name, m in models.items():
            if isinstance(m, Exception):
                rows.append((layout, name, "n/a", "-", "-", f"{type(m).__name__}: {m}"[:60]))
                continue
            t = med[name]
            rows.append((layout, name, f"{t * 1e3:.2f}", f"{d / t:.2f}x", f"{o / t:.2f}x", ""))
    head = ("layout", "model", "median ms", "vs dense", "vs torch ops", "note")
    print(f"\n### Model, batch 1, 3x224x224, {threads} thread(s) ({load()})\n")
    print(table(head, rows))
    return res


def layer_table(models, report, x, rounds, threads, model_res):
    dense, comp = models["dense torch"], models["lrkernels"]
    names = rn.conv3x3_names(dense)
    shapes = {}
    if report is not None:
        shapes = {r.name: r.input_shape for r in report.layers}
    if not shapes:  # record the input shapes
        hooks = [
            dense.get_submodule(n).register_forward_pre_hook(
                lambda mod, a, n=n: shapes.setdefault(n, tuple(a[0].shape)) and None
            )
            for n in names
        ]
        with torch.no_grad():
            dense(x)
        for h in hooks:
            h.remove()
    for layout in ("NCHW", "channels_last"):
        rows, sums = [], np.zeros(3)
        for n in names:
            conv = dense.get_submodule(n)
            fact = comp.get_submodule(n)
            ops = rn.set_use_kernels(copy.deepcopy(fact), False)
            xi = torch.randn(shapes[n])
            if layout == "channels_last":
                conv, fact, ops = (rn.to_channels_last(m) for m in (conv, fact, ops))
                xi = xi.contiguous(memory_format=torch.channels_last)
            med = interleaved(
                {"dense": no_grad(conv, xi), "ops": no_grad(ops, xi), "lrk": no_grad(fact, xi)},
                rounds,
            )
            t = np.array([med["dense"], med["ops"], med["lrk"]])
            sums += t
            c = conv
            rows.append(
                (
                    n,
                    f"{c.in_channels}>{c.out_channels} {shapes[n][2]}x{shapes[n][3]}"
                    + (f" s{c.stride[0]}" if c.stride[0] != 1 else ""),
                    str(fact.rank).replace(" ", ""),
                    f"{t[0] * 1e6:.0f}",
                    f"{t[1] * 1e6:.0f}",
                    f"{t[2] * 1e6:.0f}",
                    f"{t[0] / t[2]:.2f}x",
                    f"{t[1] / t[2]:.2f}x",
                )
            )
        rows.append(
            (
                "sum (16 convs)",
                "",
                "",
                f"{sums[0] * 1e6:.0f}",
                f"{sums[1] * 1e6:.0f}",
                f"{sums[2] * 1e6:.0f}",
                f"{sums[0] / sums[2]:.2f}x",
                f"{sums[1] / sums[2]:.2f}x",
            )
        )
        head = (
            "layer",
            "Cin>Cout HxW",
            "ranks",
            "dense us",
            "torch ops us",
            "lrkernels us",
            "vs dense",
            "vs torch ops",
        )
        print(f"\n### Per layer, {layout}, {threads} thread(s) ({load()})\n")
        print(table(head, rows))
        m = model_res[layout]
        rest_dense = m["dense torch"] - sums[0]
        rest_lrk = m["lrkernels"] - sums[2]
        rest_ops = m["compressed, torch ops"] - sums[1]
        print(
            f"\nwhere the model time goes ({layout}): dense model {m['dense torch'] * 1e3:.2f} ms "
            f"= 3x3 convs {sums[0] * 1e3:.2f} + rest {rest_dense * 1e3:.2f}; torch-ops model "
            f"{m['compressed, torch ops'] * 1e3:.2f} = convs {sums[1] * 1e3:.2f} + rest "
            f"{rest_ops * 1e3:.2f}; lrkernels model {m['lrkernels'] * 1e3:.2f} = convs "
            f"{sums[2] * 1e3:.2f} + rest {rest_lrk * 1e3:.2f} (rest: stem, maxpool, BN, ReLU, "
            f"adds, downsamples, pool, fc, as measured in the model minus the layers timed alone). "
            f"Bound with the rest as in the dense model: "
            f"{m['dense torch'] / (rest_dense + sums[2]):.2f}x vs dense; with the rest at 0: "
            f"{m['dense torch'] / sums[2]:.2f}x."
        )


def overhead_table(rounds_calls=20000):
    rows = []
    cases = (
        ("LowRankLinear 16>16 r4, (1, 16)", lrk_torch.LowRankLinear(16, 16, 4), (1, 16)),
        (
            "TuckerConv2d 8>8 3x3 r(4,4), (1, 8, 4, 4)",
            lrk_torch.TuckerConv2d(8, 8, 3, (4, 4), padding=1),
            (1, 8, 4, 4),
        ),
    )
    import timeit

    for label, m, shape in cases:
        m.eval().requires_grad_(False)
        x = torch.randn(shape)
        xn = x.numpy()
        layer = m.to_layer()
        with torch.no_grad():
            mod, bare = [], []
            for _ in range(7):
                mod.append(timeit.timeit(lambda: m(x), number=rounds_calls) / rounds_calls)
                bare.append(timeit.timeit(lambda: layer(xn), number=rounds_calls) / rounds_calls)
        a, b = np.median(mod) * 1e6, np.median(bare) * 1e6
        rows.append((label, f"{a:.2f}", f"{b:.2f}", f"{a - b:.2f}"))
    print(f"\n### Per-call overhead of the torch wrapper ({load()})\n")
    print(
        table(
            ("module (input)", "module(x) us, no_grad", "to_layer()(x.numpy()) us", "overhead us"),
            rows,
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds per table")
    ap.add_argument("--fast", action="store_true", help="random factors at compress's ranks")
    args = ap.parse_args()
    print(f"machine: {machine()}; {load()}")
    torch.set_num_threads(args.threads[0])
    lrkernels.set_num_threads(args.threads[0])
    models, report, x = build_models(args.fast, args.threads[0])
    if report is not None:
        print(f"\ncompress report (latencies at {report.num_threads} thread(s)):\n{report}")
    for n in args.threads:
        torch.set_num_threads(n)
        lrkernels.set_num_threads(n)
        print(
            f"\n## {n} thread(s): torch.get_num_threads()={torch.get_num_threads()}, "
            f"lrkernels.get_num_threads()={lrkernels.get_num_threads()}"
        )
        res = model_table(models, x, args.rounds, n)
        layer_table(models, report, x, args.rounds, n, res)
    torch.set_num_threads(1)
    lrkernels.set_num_threads(1)
    overhead_table()
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
