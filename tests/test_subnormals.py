"""Subnormals on every layer kind and available ISA: what the kernels do with them
(flush-to-zero, `test_flush_to_zero_behaviour`), that the caller's floating-point mode neither
changes results with the thread count nor is left changed, and that subnormal data is not orders
of magnitude slower (`test_subnormal_data_is_not_orders_of_magnitude_slower`, a timing test:
skipped when the environment variable LRKERNELS_NO_TIMING is set, e.g. under qemu).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time

import numpy as np
import pytest

import lrkernels
from layer_table import KINDS, LINEAR_KINDS
from lrk_testing import call, image_shape, make_spec, run_in_thread

F32 = np.float32
TINY = 1e-39  # a float32 subnormal scale (the smallest normal float32 is 1.18e-38)

MACHINE = platform.machine().lower()
ARMV7 = MACHINE.startswith("arm") and MACHINE != "arm64"
# The CPUs for which the C++ core sets a flush-to-zero mode (cpp/src/fp_mode.cc).
FLUSHING_MACHINE = MACHINE in ("x86_64", "amd64", "i386", "i686", "aarch64", "arm64") or ARMV7


def subnormals_flushed(isa) -> bool:
    """What the kernels do with float32 subnormals (found by test_flush_to_zero_behaviour): every
    layer call and every pool task runs with flush-to-zero and denormals-are-zero on (x86: MXCSR
    FTZ + DAZ; aarch64: FPCR.FZ; 32-bit ARM: FPSCR.FZ, which its NEON kernels always apply), on
    every ISA, whatever mode the caller's thread is in. Elsewhere the CPU's default stays."""
    return FLUSHING_MACHINE


def _exact_subnormal_case(kind, rng):
    """Weights of small integers and x of small integer multiples of 2^-149 (the smallest
    subnormal): every product and sum is again such a multiple below 2^-126, so IEEE arithmetic
    with subnormals is exact in float32 and the float64 reference gives the exact answer."""
    g = {"stride": 1, "padding": 1, "dilation": 1, "layout": "NCHW"}
    spec = make_spec(kind, rng, cin=6, cout=5, r1=3, r2=2, kernel=3, geometry=g, bias=False)
    for w in spec.weights.values():
        if w is not None:
            w[...] = rng.integers(-2, 3, size=w.shape)
    shape = (4, 6) if kind in LINEAR_KINDS else image_shape(2, 6, (5, 4), "NCHW")
    x = (rng.integers(-3, 4, size=shape) * 2.0**-149).astype(F32)
    return spec, x


@pytest.mark.parametrize("kind", KINDS)
def test_flush_to_zero_behaviour(isa, rng, kind):
    """Documents the flush-to-zero (FTZ/DAZ) behaviour of the kernels.

    Found (since commit 501b473): every layer call, and every task a pool thread runs for it,
    switches flush-to-zero and denormals-are-zero on for its duration (x86-64: MXCSR FTZ + DAZ
    on scalar, avx2 and avx512; aarch64: FPCR.FZ; 32-bit ARM: FPSCR.FZ, which ARMv7 NEON applies
    anyway) and restores the caller's mode afterwards. So subnormal inputs and weights count as
    zero and results below FLT_MIN (1.18e-38) come out as zero: on exactly representable
    subnormal data (integer multiples of 2^-149) the output is exactly 0 where IEEE gradual
    underflow (the reference) gives the exact subnormal result. Before that commit the kernels
    kept the CPU default (IEEE: subnormals kept, except in armv7 NEON), and subnormal data ran
    30x (scalar) to 200x (AVX2/AVX-512) slower on an x86 Xeon. On other CPUs nothing is set and
    the IEEE result is expected.
    """
    spec, x = _exact_subnormal_case(kind, rng)
    ref = spec.reference(x)
    assert (ref != 0).any() and (np.abs(ref[ref != 0]) < np.finfo(F32).tiny).all()
    y = call(spec.build(), x, isa)
    if subnormals_flushed(isa):
        np.testing.assert_array_equal(y, np.zeros_like(y))
    else:
        np.testing.assert_array_equal(y, ref.astype(F32))
    # Products of normal numbers that underflow: 2^-70 * 2^-70 = 2^-140, a subnormal.
    lin = lrkernels.Linear(np.full((3, 4), 2.0**-70, F32))
    y = call(lin, np.full((2, 4), 2.0**-70, F32), isa)
    expected = 0.0 if subnormals_flushed(isa) else 4 * 2.0**-140
    np.testing.assert_array_equal(y, np.full((2, 3), expected, F32))
    # A normal result is untouched even when it comes from FLT_MIN-sized terms: 4 * 2^-126.
    y = call(lrkernels.Linear(np.ones((1, 4), F32)), np.full(4, 2.0**-126, F32), isa)
    np.testing.assert_array_equal(y, np.full(1, 2.0**-124, F32))


class CallerFlushToZero:
    """Turns flush-to-zero and denormals-are-zero on for the calling thread (x86-64: MXCSR FTZ and
    DAZ; aarch64: FPCR.FZ; 32-bit ARM: FPSCR.FZ) through glibc's fegetenv/fesetenv (fenv_t holds
    the control register: at byte 28 on x86-64, at byte 0 on ARM), and restores it afterwards:
    what a process gets when it loads a library built with -ffast-math (crtfastmath.o), or sets
    itself for speed. `supported` is False where this cannot be done from Python."""

    MACHINE = platform.machine().lower()

    def __init__(self):
        self.libm = None
        if self.MACHINE in ("x86_64", "amd64", "aarch64", "arm64") or ARMV7:
            try:
                import ctypes
                import ctypes.util

                self.ctypes = ctypes
                self.libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
            except OSError:
                self.libm = None

    @property
    def supported(self):
        return self.libm is not None

    def __enter__(self):
        self.saved = (self.ctypes.c_ubyte * 64)()  # fenv_t: 32 bytes on x86-64, 8 or 4 on ARM
        assert self.libm.fegetenv(self.saved) == 0
        env = (self.ctypes.c_ubyte * 64).from_buffer_copy(self.saved)
        if self.MACHINE in ("x86_64", "amd64"):
            offset, bits = 28, 0x8040  # __mxcsr: FTZ (bit 15) | DAZ (bit 6)
        else:
            offset, bits = 0, 1 << 24  # aarch64 __fpcr, armv7 __cw (FPSCR): FZ is bit 24
        word = int.from_bytes(bytes(env[offset : offset + 4]), "little") | bits
        env[offset : offset + 4] = list(word.to_bytes(4, "little"))
        assert self.libm.fesetenv(env) == 0
        return self

    def __exit__(self, *exc):
        assert self.libm.fesetenv(self.saved) == 0

    def control_word(self):
        """The calling thread's FP control bits (the sticky exception flags masked out)."""
        env = (self.ctypes.c_ubyte * 64)()
        assert self.libm.fegetenv(env) == 0
        if self.MACHINE in ("x86_64", "amd64"):
            return int.from_bytes(bytes(env[28:32]), "little") & ~0x3F  # MXCSR flags: bits 0-5
        word = int.from_bytes(bytes(env[0:4]), "little")
        return word if not ARMV7 else word & ~0x9F  # FPSCR flags: bits 0-4 and 7


@pytest.mark.skipif(
    not CallerFlushToZero().supported,
    reason="needs glibc fesetenv on x86-64 or ARM (through ctypes)",
)
@pytest.mark.parametrize("kind", KINDS)
def test_callers_flush_to_zero_mode_does_not_depend_on_thread_count(isa, rng, kind):
    """README: results are bitwise identical for any thread count. That must hold also when the
    calling thread runs with flush-to-zero on (set by the application, or by any library built
    with -ffast-math that the process loaded) while the pool's workers, started earlier, run with
    the default IEEE mode: whatever the kernels do with subnormals, they must do it on every
    thread. Subnormal data, 1 thread against 3 threads, bitwise.

    Found by this test (fixed in commit 501b473, which sets the mode in every call and pool
    task): the floating-point mode is per thread and the kernels left it as they found it, so
    with 3 threads the caller's share of the tiles was flushed to zero and the workers' share was
    not (one output, two arithmetics), on x86-64 (every ISA), on aarch64 (every ISA, under qemu)
    and with the scalar kernel of 32-bit ARM (its NEON kernels always flush).
    """
    before = lrkernels.get_num_threads()
    g = {"stride": 1, "padding": 1, "dilation": 1, "layout": "NHWC"}
    if kind in LINEAR_KINDS:
        spec = make_spec(kind, rng, cin=384, cout=384, r1=192, bias=False)
        x = rng.standard_normal((128, 384)).astype(F32)
    else:
        spec = make_spec(kind, rng, cin=96, cout=96, r1=48, r2=48, kernel=3, geometry=g, bias=False)
        x = rng.standard_normal(image_shape(2, 96, (24, 24), "NHWC")).astype(F32)
    layer = spec.build()
    x_sub = (x * TINY).astype(F32)
    try:
        lrkernels.set_num_threads(3)
        layer(x)  # the pool's workers exist now, started in the default (IEEE) mode

        def body():
            with CallerFlushToZero():
                lrkernels.set_num_threads(1)
                y1 = layer(x_sub)
                lrkernels.set_num_threads(3)
                y3 = layer(x_sub)
            return y1, y3

        y1, y3 = run_in_thread(body)
    finally:
        lrkernels.set_num_threads(before)
    differ = int(np.count_nonzero(y1 != y3))
    assert differ == 0, (
        f"{kind} on {isa}, caller in flush-to-zero mode: {differ} of {y1.size} outputs differ "
        f"between 1 and 3 threads ({int(np.count_nonzero(y1))} nonzero with 1 thread, "
        f"{int(np.count_nonzero(y3))} with 3)"
    )


@pytest.mark.skipif(
    not CallerFlushToZero().supported,
    reason="needs glibc fegetenv on x86-64 or ARM (through ctypes)",
)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_calls_restore_the_callers_floating_point_mode(isa, rng, kind):
    """The flush-to-zero mode a layer call switches on is undone when it returns: the calling
    thread's control word is the same after the call, both from the default mode and from a
    caller that runs with flush-to-zero itself (and after a call that raised)."""
    env = CallerFlushToZero()
    spec, x = _exact_subnormal_case(kind, rng)
    layer = spec.build()

    def body():
        words = []
        for caller_ftz in (False, True):
            with contextlib.ExitStack() as stack:
                if caller_ftz:
                    stack.enter_context(CallerFlushToZero())
                before = env.control_word()
                layer(x)
                after_call = env.control_word()
                with pytest.raises(ValueError):
                    layer(np.ones((1, 1, 1, 1, 1), F32))
                words.append((caller_ftz, before, after_call, env.control_word()))
            words.append(("restored", env.control_word()))
        return words

    words = run_in_thread(body)
    for entry in words:
        if entry[0] == "restored":
            continue
        caller_ftz, before, after_call, after_error = entry
        assert after_call == before, f"caller FTZ={caller_ftz}: {before:#x} -> {after_call:#x}"
        assert after_error == before, f"caller FTZ={caller_ftz}: {before:#x} -> {after_error:#x}"


TIMING = pytest.mark.skipif(
    bool(os.environ.get("LRKERNELS_NO_TIMING")),
    reason="timing test: LRKERNELS_NO_TIMING is set (e.g. under qemu emulation)",
)
SLOWDOWN_LIMIT = 20.0


def _seconds_per_call(fn, reps, runs, stop_above=None):
    """Min over `runs` of the mean time of `reps` calls, after a warm-up call. Stops early when a
    single call, or the best of two or more runs, is above `stop_above` (clearly slow: noise only
    ever adds time, and more runs would not bring the minimum down that far)."""
    fn()
    if stop_above is not None:  # one call first: a clearly slow one settles it
        t0 = time.perf_counter()
        fn()
        single = time.perf_counter() - t0
        if single > stop_above:
            return single
    best = float("inf")
    for run in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
        if stop_above is not None and run >= 1 and best > stop_above:
            break
    return best


@TIMING
@pytest.mark.parametrize("kind", KINDS)
def test_subnormal_data_is_not_orders_of_magnitude_slower(isa, rng, kind):
    """TIMING TEST (skipped when LRKERNELS_NO_TIMING is set). A call on subnormal inputs, and one
    on subnormal weights, each takes less than 20x the time of the same call on normal data (min
    of several runs, one thread). Without flush-to-zero, x86 cores take a microcode assist for
    subnormal operands and results, which costs orders of magnitude: before commit 501b473 (no
    flush-to-zero) this failed with 30x (scalar) to 200x (AVX2, AVX-512) on an x86 Xeon."""
    before = lrkernels.get_num_threads()
    lrkernels.set_num_threads(1)
    try:
        g = {"stride": 1, "padding": 1, "dilation": 1, "layout": "NHWC"}
        c = 64 if kind in LINEAR_KINDS else 32
        spec = make_spec(kind, rng, cin=c, cout=c, r1=c // 2, r2=c // 2, kernel=3, geometry=g)
        if kind in LINEAR_KINDS:
            x = rng.standard_normal((64, c)).astype(F32)
        else:
            x = rng.standard_normal(image_shape(1, c, (16, 16), "NHWC")).astype(F32)
        layer = spec.build()
        t_normal = _seconds_per_call(lambda: layer(x), 1, 3)
        reps = max(1, int(1e-3 / max(t_normal, 1e-7)))  # ~1 ms per timed run
        t_normal = _seconds_per_call(lambda: layer(x), reps, 7)

        x_sub = (x * TINY).astype(F32)
        assert (x_sub != 0).all() and (np.abs(x_sub) < np.finfo(F32).tiny).all()
        sub_spec = make_spec(kind, rng, cin=c, cout=c, r1=c // 2, r2=c // 2, kernel=3, geometry=g)
        for w in sub_spec.weights.values():
            if w is not None:
                w[...] = (w * TINY).astype(F32)
        sub_layer = sub_spec.build()
        stop = 3 * SLOWDOWN_LIMIT * t_normal  # clearly too slow: no need for more runs
        ratios = {
            "subnormal x": _seconds_per_call(lambda: layer(x_sub), reps, 5, stop) / t_normal,
            "subnormal weights": _seconds_per_call(lambda: sub_layer(x), reps, 5, stop) / t_normal,
        }
        assert lrkernels.last_used_isa() == isa
    finally:
        lrkernels.set_num_threads(before)
    slow = {k: round(v, 1) for k, v in ratios.items() if v >= SLOWDOWN_LIMIT}
    assert not slow, (
        f"{kind} on {isa}: subnormal data is {slow} times slower than normal data "
        f"({t_normal * 1e3:.3f} ms per call), limit {SLOWDOWN_LIMIT:g}x"
    )
