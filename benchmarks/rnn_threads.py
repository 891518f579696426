"""LSTM layers at 1 and 2 lrkernels threads: seq 100, H = input_size, rank H/4, batch 1 and 16.

    python benchmarks/rnn_threads.py

Median ms per call of lrkernels' dense LSTM and LowRankLSTM at each thread count (lrkernels
only: a thread-scaling check of the recurrent driver, not a comparison between libraries).
"""

from __future__ import annotations

import time

import numpy as np

import lrkernels


def median_seconds(fn, rounds=15):
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    info = lrkernels.info()
    print(f"cpu {info['cpu']!r}, isa {info['isa']}; median ms at 1 / 2 lrkernels threads")
    for hidden in (256, 512, 1024):
        w = (rng.standard_normal((4 * hidden, hidden)) * 0.05).astype(np.float32)
        dense = lrkernels.LSTM(w, w)
        low = lrkernels.LowRankLSTM.from_dense(w, w, rank=hidden // 4)
        for batch in (1, 16):
            x = rng.standard_normal((100, batch, hidden)).astype(np.float32)
            cells = []
            for layer in (dense, low):
                t = []
                for threads in (1, 2):
                    lrkernels.set_num_threads(threads)
                    t.append(median_seconds(lambda layer=layer: layer(x)))
                cells.append(f"{t[0] * 1e3:8.2f} / {t[1] * 1e3:8.2f} ({t[0] / t[1]:.2f}x)")
            print(f"H={hidden:5d} batch={batch:3d}: dense {cells[0]}   low-rank {cells[1]}")


if __name__ == "__main__":
    main()
