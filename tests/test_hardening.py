"""Regression tests for crashes, hangs and leaks found by an outside attack on the public API.

Each scenario that could kill the process runs in a subprocess, so a regression fails one test
instead of the whole run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lrkernels
from lrkernels import _core

no_subprocess = pytest.mark.skipif(
    bool(os.environ.get("LRKERNELS_NO_SUBPROCESS")),
    reason="LRKERNELS_NO_SUBPROCESS is set (e.g. under qemu user emulation)",
)

LAYER_CLASSES = [
    lrkernels.LowRankLinear,
    lrkernels.Linear,
    lrkernels.Conv2d,
    lrkernels.TuckerConv2d,
    lrkernels.CPConv2d,
]


def run_python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_conv_scratch_size_wrapping_in_bytes_is_an_error():
    # Every value is below the 2^24 geometry limit, but the workspace in bytes wraps size_t.
    C, d, pw = 4144, 16777188, 16582904
    layer = lrkernels.Conv2d(np.ones((1, C, 3, 1), np.float32), padding=(d, pw), dilation=(d, 1))
    with pytest.raises((ValueError, MemoryError)):
        layer(np.ones((1, C, 1, 8), np.float32))


def test_read_bandwidth_probe_rejects_an_impossible_size():
    size_max = 2 * sys.maxsize + 1  # SIZE_MAX: 2**64 - 1, or 2**32 - 1 on armv7
    with pytest.raises((ValueError, MemoryError)):
        _core.measure_read_bandwidth(size_max, 0.01, 1)


@no_subprocess
def test_daemon_thread_calling_layers_at_interpreter_exit_exits_cleanly():
    # CPython ends a daemon thread that re-takes the GIL during finalization; that must not abort.
    code = """
        import threading, time
        import numpy as np
        import lrkernels as L
        conv = L.Conv2d(np.ones((16, 16, 3, 3), np.float32), padding=1)
        lin = L.LowRankLinear(np.ones((64, 8), np.float32), np.ones((8, 64), np.float32))
        x, v = np.ones((1, 16, 32, 32), np.float32), np.ones((4, 64), np.float32)
        def loop():
            while True:
                conv(x)
                lin(v)
        for _ in range(2):
            threading.Thread(target=loop, daemon=True).start()
        time.sleep(0.2)
    """
    for _ in range(3):
        r = run_python(code)
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])


@no_subprocess
@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=lambda c: c.__name__)
def test_uninitialized_object_raises_type_error(cls):
    code = f"""
        import numpy as np
        import lrkernels as L
        obj = L.{cls.__name__}.__new__(L.{cls.__name__})
        for name in ("bias", "factors", "ranks", "kind") + tuple(L.{cls.__name__}.factor_names):
            try:
                getattr(obj, name)
            except TypeError as e:
                assert "not initialized" in str(e), e
            else:
                raise SystemExit("no TypeError for " + name)
        try:
            obj(np.ones(3))
        except TypeError:
            pass
        else:
            raise SystemExit("no TypeError for a call")
        print("ok")
    """
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (
        r.returncode,
        r.stdout,
        r.stderr[-2000:],
    )


def test_set_num_threads_is_capped():
    # (Not set to the cap itself: starting that many workers would change which thread takes a
    # task in later tests that count scratch growth per thread.)
    cap = _core.max_num_threads()
    assert cap >= 16
    previous = lrkernels.get_num_threads()
    try:
        with pytest.raises(ValueError, match=str(cap)):
            lrkernels.set_num_threads(cap + 1)
        with pytest.raises(ValueError, match="n <="):
            lrkernels.set_num_threads(2**70)
    finally:
        lrkernels.set_num_threads(previous)


def test_wide_convolution_does_not_keep_its_workspace():
    # A workspace above the kept size (8 MiB) is freed when the call ends, on this thread.
    layer = lrkernels.Conv2d(np.ones((8, 1024, 3, 3), np.float32), padding=1, layout="NHWC")
    x = np.ones((1, 3, 1024, 1024), np.float32)  # a 3-row ring of 1026 x 1024 floats: 12.6 MB
    previous = lrkernels.get_num_threads()
    lrkernels.set_num_threads(1)
    try:
        layer(x)
    finally:
        lrkernels.set_num_threads(previous)
    assert _core._scratch_held() <= 8 << 20


def test_masked_array_is_refused_not_silently_unmasked():
    layer = lrkernels.Linear(np.ones((2, 3)))
    x = np.ma.masked_array(np.ones(3), mask=[True, False, False])
    with pytest.raises(TypeError, match="masked"):
        layer(x)
    with pytest.raises(TypeError, match="masked"):
        lrkernels.Linear(np.ma.masked_array(np.ones((2, 3))))


def test_conversion_failure_keeps_its_cause():
    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("no numpy view of this object")

    layer = lrkernels.Linear(np.ones((2, 3)))
    with pytest.raises(TypeError, match="no numpy view") as info:
        layer(Unconvertible())
    assert isinstance(info.value.__cause__, RuntimeError)


def test_torch_like_tensor_failure_says_what_to_do():
    # torch raises from __array__ for a tensor that requires grad (and for bfloat16).
    Tensor = type(
        "Tensor",
        (),
        {
            "__array__": lambda self, *a, **k: (_ for _ in ()).throw(
                RuntimeError("Can't call numpy() on Tensor that requires grad.")
            )
        },
    )
    with pytest.raises(TypeError, match=r"detach\(\)\.float\(\)"):
        lrkernels.Linear(np.ones((2, 3)))(Tensor())


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_weights_beyond_float32_range_are_an_error():
    with pytest.raises(ValueError, match="float32 range"):
        lrkernels.LowRankLinear(np.full((2, 2), 1e300), np.ones((2, 3)))
    with pytest.raises(ValueError, match="bias.*float32 range"):
        lrkernels.Linear(np.ones((2, 3)), bias=np.array([1e300, 0.0]))
    # Infinity given as such is the user's value, not an overflow: accepted (as numpy would).
    lrkernels.Linear(np.array([[np.inf, 0.0, 0.0]]))


def test_float64_input_beyond_float32_range_converts_as_numpy_does():
    layer = lrkernels.Linear(np.ones((1, 2)))
    with pytest.warns(RuntimeWarning, match="overflow"):
        y = layer(np.array([1e300, 0.0]))
    assert np.isinf(y).all()


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=lambda c: c.__name__)
def test_second_init_is_refused(cls):
    spec = lrkernels.layer_specs.spec_for(cls)
    shapes = spec.factor_shapes(
        3,
        4,
        ranks=(2, 2) if cls is lrkernels.TuckerConv2d else (2,) if spec.factorized else (),
        kernel=(1, 1),
    )
    layer = cls(*[np.ones(s, np.float32) for s in shapes])
    with pytest.raises(TypeError, match="already initialized"):
        layer.__init__(*[np.ones(s, np.float32) for s in shapes])
    assert layer._initialized and isinstance(layer, lrkernels.Layer)


def test_workspace_above_the_kept_size_stays_valid_while_workers_use_it(restore_threads_3):
    """Fuzzer finding F2: the calling thread freed its scratch (> 8 MiB) when it finished its own
    tasks of a parallel stage, while workers and the enclosing stage still used it. The output must
    match the one-thread result, every time (ASan in CI reports the use after free itself)."""
    layer = lrkernels.TuckerConv2d(
        np.ones((6, 2), np.float32),
        np.ones((4, 6, 3, 1), np.float32),
        np.ones((1, 4), np.float32),
        stride=(3, 1),
        padding=(2, 0),
        dilation=(3, 1),
    )
    x = np.ones((1, 2, 5, 50178), np.float32)  # about 13 MB of scratch
    lrkernels.set_num_threads(1)
    expected = layer(x)
    lrkernels.set_num_threads(3)
    for _ in range(5):
        np.testing.assert_array_equal(layer(x), expected)


def test_lowrank_intermediate_above_the_kept_size_survives_its_first_gemm(
    restore_threads_3, blocking
):
    """F2's linear form: lowrank_gemm's intermediate (16 MB) freed between its two GEMMs."""
    rng = np.random.default_rng(0)
    U = rng.standard_normal((1, 100000)).astype(np.float32)
    V = rng.standard_normal((100000, 1)).astype(np.float32)
    layer = lrkernels.LowRankLinear(U, V)
    x = rng.standard_normal((48, 1)).astype(np.float32)
    blocking(mb=40)
    lrkernels.set_num_threads(3)
    y = layer(x)
    ref = (x.astype(np.float64) @ V.T.astype(np.float64)) @ U.T.astype(np.float64)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


@pytest.fixture
def restore_threads_3():
    before = lrkernels.get_num_threads()
    yield
    lrkernels.set_num_threads(before)
