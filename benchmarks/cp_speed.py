"""CP decomposition speed (issue 15, item 5): time and relative error of `decompose.cp` on random
and structured conv weights, and of the energy=0.9 search on 64x64x3x3. Run with
OPENBLAS_NUM_THREADS=1 and PYTHONPATH pointing at the python/ tree to measure:
``python benchmarks/cp_speed.py [random|structured] [n_iter_max]``."""

import json
import sys
import time

import numpy as np

from lrkernels import decompose


def structured(shape, seed=0):
    # smooth spatial filters + decaying spectrum: like a trained weight
    rng = np.random.default_rng(seed)
    co, ci, kh, kw = shape
    R = 2 * max(co, ci)
    s = np.exp(-np.arange(R) / (R / 8))
    A = rng.standard_normal((co, R))
    B = rng.standard_normal((ci, R))
    g = np.exp(-((np.arange(kh) - 1) ** 2)[:, None] / rng.uniform(0.5, 3, R)[None, :])
    h = np.exp(-((np.arange(kw) - 1) ** 2)[:, None] / rng.uniform(0.5, 3, R)[None, :])
    W = np.einsum("or,cr,yr,xr,r->ocyx", A, B, g, h, s)
    return W + 0.05 * np.linalg.norm(W) / np.sqrt(W.size) * rng.standard_normal(shape)


CASES = [
    ((64, 64, 3, 3), 64),
    ((64, 64, 3, 3), 140),
    ((128, 128, 3, 3), 200),
    ((256, 128, 3, 3), 378),
]


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else "random"
    nmax = int(sys.argv[2]) if len(sys.argv) > 2 else 500

    def weight(shape):
        return (
            np.random.default_rng(1).standard_normal(shape)
            if kind == "random"
            else structured(shape)
        )

    for shape, R in CASES:
        t = time.perf_counter()
        *_, info = decompose.cp(weight(shape), R, n_iter_max=nmax, return_info=True)
        row = dict(kind=kind, shape=shape, R=R, s=round(time.perf_counter() - t, 2))
        row.update(err=round(info["error"], 5), sweeps=info["iterations"], stop=info["stop"][:30])
        print(json.dumps(row), flush=True)
    t = time.perf_counter()
    *_, choice = decompose.cp_factors(weight((64, 64, 3, 3)), energy=0.9, max_seconds=None)
    print(
        kind,
        "energy=0.9:",
        choice.rank,
        round(choice.details["kept"], 5),
        round(time.perf_counter() - t, 2),
        "s",
    )


if __name__ == "__main__":
    main()
