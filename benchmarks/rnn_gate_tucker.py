"""Stacked SVD against a Tucker-2 of the gate tensor, at equal parameters, on real LSTM weights.

An LSTM's stacked matrix W (4H, in) can be factorized as one truncated SVD, W ~ U V (what
lrkernels.LowRankLSTM stores: r (4H + in) parameters), or as a Tucker-2 of the gate tensor
T (4, H, in) ~ C x_2 P x_3 Q (P: H x k1, Q: in x k2, core 4 x k1 x k2). This script compares the
relative Frobenius error of both at the same parameter count (Tucker-2 by HOOI, the largest square
(k, k) core that fits), on the pretrained LSTM of Silero VAD (`pip install silero-vad --no-deps`:
the package ships the TorchScript model; torch is needed to read it).

    python benchmarks/rnn_gate_tucker.py
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np


def silero_lstm_weights():
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("silero-vad is not installed: pip install silero-vad --no-deps")
    import torch

    path = pathlib.Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.jit"
    model = torch.jit.load(str(path), map_location="cpu")
    params = {n: p.detach().double().numpy() for n, p in model.named_parameters()}
    return {n: w for n, w in params.items() if n.startswith("_model.") and ".rnn.weight_" in n}


def svd_error(W, r):
    s = np.linalg.svd(W, compute_uv=False)
    return float(np.sqrt((s[r:] ** 2).sum() / (s**2).sum()))


def tucker2_error(T, k1, k2, sweeps=20):
    """Relative error of a Tucker-2 (modes 2 and 3) of T by HOSVD then HOOI sweeps."""
    G, H, In = T.shape
    Q = np.linalg.svd(T.transpose(2, 0, 1).reshape(In, -1), full_matrices=False)[0][:, :k2]
    for _ in range(sweeps):
        P = np.linalg.svd((T @ Q).transpose(1, 0, 2).reshape(H, -1), full_matrices=False)[0]
        P = P[:, :k1]
        Q = np.linalg.svd((P.T @ T).transpose(2, 0, 1).reshape(In, -1), full_matrices=False)[0]
        Q = Q[:, :k2]
    R = P @ (P.T @ T @ Q) @ Q.T
    return float(np.linalg.norm(T - R) / np.linalg.norm(T))


def main():
    print(
        "Stacked SVD vs Tucker-2 of the gate tensor at equal parameters (relative Frobenius error)"
    )
    for name, W in silero_lstm_weights().items():
        GH, In = W.shape
        H = GH // 4
        T = W.reshape(4, H, In)
        print(f"\n{name} {W.shape} (Silero VAD, pretrained)")
        print(f"{'params':>8} {'SVD rank':>8} {'SVD err':>8} {'Tucker k':>8} {'Tucker err':>10}")
        for r in (8, 16, 32, 64):
            budget = r * (GH + In)
            k = max(k for k in range(1, min(H, In) + 1) if H * k + In * k + 4 * k * k <= budget)
            print(
                f"{budget:>8} {r:>8} {svd_error(W, r):>8.4f} {k:>8} {tucker2_error(T, k, k):>10.4f}"
            )


if __name__ == "__main__":
    main()
