"""Threads: set/get_num_threads, LRKERNELS_NUM_THREADS, and results bitwise identical for any count.

Work is split over output tiles only (never over a reduction), so every thread count must give
exactly the same bits on the same ISA. Shapes are large enough to pass the per-thread work
threshold, so the split really happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import lrkernels
from layer_table import KINDS, LAYOUTS, SPEC
from lrk_testing import make_model

THREAD_COUNTS = (1, 2, 3, 4, 7)

no_subprocess = pytest.mark.skipif(
    bool(os.environ.get("LRKERNELS_NO_SUBPROCESS")),
    reason="LRKERNELS_NO_SUBPROCESS is set (e.g. under qemu user emulation)",
)


@pytest.fixture
def restore_threads():
    before = lrkernels.get_num_threads()
    yield
    lrkernels.set_num_threads(before)


def _same_for_every_thread_count(make_output, case):
    outputs = []
    for n in THREAD_COUNTS:
        lrkernels.set_num_threads(n)
        outputs.append(make_output())
    for n, out in zip(THREAD_COUNTS[1:], outputs[1:]):
        assert out.dtype == np.float32 and out.shape == outputs[0].shape, case
        assert np.array_equal(out, outputs[0]), (
            f"{case}: {n} threads differ from 1 thread (max |diff| "
            f"{float(np.max(np.abs(out - outputs[0]))):.3g})"
        )


def test_num_threads_api(restore_threads):
    assert lrkernels.get_num_threads() >= 1
    assert lrkernels.info()["default_num_threads"] >= 1
    lrkernels.set_num_threads(3)
    assert lrkernels.get_num_threads() == 3
    assert lrkernels.info()["num_threads"] == 3
    for bad in (0, -2):
        with pytest.raises(ValueError, match="n >= 1"):
            lrkernels.set_num_threads(bad)
    for bad in (1.5, "2", True, None):
        with pytest.raises(TypeError):
            lrkernels.set_num_threads(bad)
    assert lrkernels.get_num_threads() == 3


CONV_CASES = [
    # (N, Cin, Cout, H, W, k, stride, padding, dilation, rank)
    (1, 32, 48, 30, 29, 3, 1, 1, 1, 16),
    (2, 24, 40, 17, 23, 5, 2, 2, 1, 9),
    (1, 64, 64, 7, 7, 3, 1, 1, 1, 33),
    (3, 16, 20, 12, 40, 3, 1, 2, 2, 8),
]


def _bitwise_cases():
    """Every kind of the table: linear layers (out 700, in 900, rank 72) at several batches,
    convolutions in both layouts on CONV_CASES (ranks r and r + 1)."""
    for kind in KINDS:
        if not SPEC[kind].conv:
            for batch in (1, 5, 8, 64, 200):
                yield pytest.param(kind, None, (batch,), id=f"{kind}-batch{batch}")
            continue
        for layout in LAYOUTS:
            for case in CONV_CASES:
                yield pytest.param(
                    kind, layout, case, id=f"{kind}-{layout}-" + "x".join(map(str, case))
                )


@pytest.mark.parametrize("kind, layout, case", list(_bitwise_cases()))
def test_bitwise_identical_for_every_thread_count(isa, rng, restore_threads, kind, layout, case):
    if layout is None:
        m = make_model(rng, kind, 900, 700, (72,))
        x = m.make_input(rng, case[0])
    else:
        n, cin, cout, h, w, k, s, p, d, r = case
        m = make_model(
            rng, kind, cin, cout, (r, r + 1), k, stride=s, padding=p, dilation=d, layout=layout
        )
        x = m.make_input(rng, n, (h, w))
    _same_for_every_thread_count(lambda: m.layer(x), f"{kind} {isa} {layout} {case}")
    assert lrkernels.last_used_isa() == isa


def test_concurrent_callers_with_a_busy_pool(rng, restore_threads):
    """Python threads sharing the pool: one gets it, the others run inline; all results exact."""
    lrkernels.set_num_threads(2)
    layer = lrkernels.TuckerConv2d(
        rng.standard_normal((16, 32)),
        rng.standard_normal((16, 16, 3, 3)),
        rng.standard_normal((32, 16)),
        padding=1,
        layout="NHWC",
    )
    inputs = [rng.standard_normal((1, 28, 28, 32)).astype(np.float32) for _ in range(6)]
    expected = [layer(x) for x in inputs]
    errors = []

    def worker(i):
        try:
            for _ in range(5):
                if not np.array_equal(layer(inputs[i]), expected[i]):
                    errors.append(f"thread {i}: result changed")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(f"thread {i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@no_subprocess
@pytest.mark.parametrize("value, expect", [("3", "3"), ("0", "ValueError"), ("two", "ValueError")])
def test_environment_variable(value, expect):
    code = "import lrkernels\nprint(lrkernels.get_num_threads())\n"
    env = dict(os.environ, LRKERNELS_NUM_THREADS=value)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if expect == "ValueError":
        assert proc.returncode != 0 and "LRKERNELS_NUM_THREADS" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == expect


@no_subprocess
def test_scratch_growth_bounded_by_thread_count():
    """With a pool, each thread grows its own scratch at most once per size: never per call.

    In a fresh process: in this one, earlier tests started more workers than two, and which of
    them claims a call's task varies, so each could grow its scratch once (workspaces above the
    kept size are also freed after the call that needed them)."""
    code = (
        "import numpy as np, lrkernels\n"
        "from lrkernels import _core\n"
        "lrkernels.set_num_threads(2)\n"
        "rng = np.random.default_rng(0)\n"
        "layer = lrkernels.TuckerConv2d(rng.standard_normal((16, 48)),\n"
        "                               rng.standard_normal((16, 16, 3, 3)),\n"
        "                               rng.standard_normal((48, 16)), padding=1, layout='NCHW')\n"
        "x = rng.standard_normal((2, 48, 40, 40)).astype(np.float32)\n"
        "layer(x)\n"
        "before = _core._scratch_allocations()\n"
        "for _ in range(30):\n"
        "    layer(x)\n"
        "print(_core._scratch_allocations() - before)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) <= 2


@no_subprocess
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_can_compute(rng, restore_threads):
    """multiprocessing's fork after the pool started: the child gets a fresh pool, not a hang."""
    import multiprocessing as mp

    lrkernels.set_num_threads(2)
    layer = lrkernels.Linear(rng.standard_normal((256, 512)).astype(np.float32))
    x = rng.standard_normal((64, 512)).astype(np.float32)
    expected = layer(x)  # starts the pool's workers in the parent
    _FORKED["layer"], _FORKED["x"] = layer, x  # inherited by the forked child, not pickled
    try:
        with mp.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_call_forked_layer).get(timeout=120)
    finally:
        _FORKED.clear()
    assert np.array_equal(got, expected)


_FORKED: dict = {}


def _call_forked_layer():
    return _FORKED["layer"](_FORKED["x"])
