"""Issue 15 items 1-2 on synthetic data: held-out output error of weight-only vs data-aware
reg=0 vs reg="auto" (LowRankLinear, rank 32), and the energy rank of an outlier-channel layer
before/after the energy floor. Synthetic data only; run: python benchmarks/calib_reg.py"""

import warnings

import numpy as np

import lrkernels
from lrkernels.decompose import linear_factors
from lrkernels.rank import by_energy


def case(seed, d=256, n_cal=200, n_test=2000):
    rng = np.random.default_rng(seed)
    Q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    W = (Q1 * np.arange(1, d + 1) ** -0.7) @ Q2.T  # decaying spectrum
    Qx, _ = np.linalg.qr(rng.standard_normal((d, d)))
    L = Qx * np.arange(1, d + 1) ** -0.5  # correlated inputs (covariance eigenvalues i^-1)
    X = rng.standard_normal((n_cal + n_test, d)) @ L.T
    return W, X[:n_cal], X[n_cal:]


def err(W, U, V, X):
    return np.linalg.norm(X @ (W - U @ V).T) / np.linalg.norm(X @ W.T)


def main():
    print("| seed | weight-only | reg=0 | reg=1e-6 (old default) | reg='auto' (chosen) |")
    print("|---|---|---|---|---|")
    for seed in range(3):
        W, Xc, Xt = case(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = [err(W, *linear_factors(W, rank=32)[:2], Xt)]
            for reg in (0.0, 1e-6, "auto"):
                U, V, ch = linear_factors(W, rank=32, calibration=Xc, reg=reg)
                row.append(err(W, U, V, Xt))
        print(f"| {seed} | " + " | ".join(f"{e:.4f}" for e in row) + f" ({ch.details['reg']:g}) |")

    # conv: few calibration patches (4 images 8x8: 256 patches, input dimension 32 x 9 = 288)
    rng = np.random.default_rng(1)
    cin, cout = 32, 32
    Qc, _ = np.linalg.qr(rng.standard_normal((cin, cin)))
    mix = Qc * np.arange(1, cin + 1) ** -0.7  # correlated channels
    imgs = np.einsum("dc,nchw->ndhw", mix, rng.standard_normal((36, cin, 8, 8)))
    T = rng.standard_normal((cout, cin, 3, 3)) * np.arange(1, cin + 1)[None, :, None, None] ** -0.5
    cal, test = imgs[:4], imgs[4:]
    print("\n| conv 32x32x3x3, 4 calibration images | weight-only | reg=0 | reg='auto' (chosen) |")
    print("|---|---|---|---|")
    for name, kind, rk in (
        ("Tucker-2 (8, 8)", lrkernels.TuckerConv2d, (8, 8)),
        ("CP rank 24", lrkernels.CPConv2d, 24),
    ):
        row = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for kw in ({}, {"calibration": cal, "reg": 0.0}, {"calibration": cal}):
                layer = kind.from_dense(T, rank=rk, padding=1, **kw)
                row.append(lrkernels.report.layer_report(layer, T, test)["output_error"])
        chosen = layer.rank_choice.details["reg"]
        print(f"| {name} | " + " | ".join(f"{e:.4f}" for e in row) + f" ({chosen:g}) |")

    # outlier channel: one input direction with 100x the standard deviation
    rng = np.random.default_rng(0)
    d = 256
    Q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    W = (Q1 * np.arange(1, d + 1) ** -0.5) @ Q2.T
    X = rng.standard_normal((4096, d))
    X[:, 7] *= 100.0
    for e in (0.5, 0.9, 0.99):
        old = by_energy(W @ np.linalg.cholesky(X.T @ X / len(X) + 1e-6 * np.eye(d)), e).rank
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            layer = lrkernels.LowRankLinear.from_dense(W, energy=e, calibration=X)
        warned = [x.category.__name__ for x in w]
        print(
            f"energy={e}: weight-only rank {by_energy(W, e).rank}, data-aware before {old}, "
            f"after {layer.rank_choice.rank}, warnings {warned}"
        )


if __name__ == "__main__":
    main()
