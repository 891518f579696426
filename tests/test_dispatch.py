"""ISA discovery and selection: available_isas, set/get_isa, LRKERNELS_ISA, info(), kernel_tile."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import lrkernels
from lrk_testing import CANONICAL_ISAS, make_model
from lrkernels import _core

KNOWN_TILES = {
    "scalar": (4, 8),
    "avx2": (6, 16),
    "avx512": (8, 32),
    # 32 NEON registers on aarch64 allow 8x8; armv7's 16 q registers 4x8.
    "neon": (8, 8) if platform.machine().lower() in ("aarch64", "arm64") else (4, 8),
}

no_subprocess = pytest.mark.skipif(
    bool(os.environ.get("LRKERNELS_NO_SUBPROCESS")),
    reason="LRKERNELS_NO_SUBPROCESS is set (e.g. under qemu user emulation)",
)


def _cpuinfo_flags(key: str) -> set:
    """The union of the `key` lines ('flags' on x86, 'Features' on ARM) of /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        pytest.skip("/proc/cpuinfo is not readable")
    flags = set()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key.lower():
            flags.update(value.split())
    return flags


# --------------------------------------------------------------------------------------------
# What is available
# --------------------------------------------------------------------------------------------


def test_scalar_is_always_available():
    assert "scalar" in lrkernels.available_isas()


def test_available_isas_are_known_unique_and_ordered():
    isas = lrkernels.available_isas()
    assert isinstance(isas, list)
    assert all(isinstance(i, str) for i in isas)
    assert set(isas) <= set(CANONICAL_ISAS), isas
    assert len(set(isas)) == len(isas), isas
    assert isas == sorted(isas, key=CANONICAL_ISAS.index), f"not slowest first: {isas}"
    assert isas[0] == "scalar"


def test_available_isas_are_compiled_and_supported_by_cpu():
    info = lrkernels.info()
    compiled, cpu = info["isas_compiled"], info["isas_supported_by_cpu"]
    for name in lrkernels.available_isas():
        assert name in compiled, f"{name} available but not in isas_compiled={compiled}"
        assert name in cpu, f"{name} available but not in isas_supported_by_cpu={cpu}"
    # Available is exactly "compiled AND supported".
    assert lrkernels.available_isas() == [i for i in compiled if i in cpu]
    assert info["isas_available"] == lrkernels.available_isas()


def _machine() -> str:
    return platform.machine().lower()


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and _machine() in ("x86_64", "amd64")),
    reason="x86_64 Linux only",
)
def test_x86_isas_match_cpuinfo():
    """A CPU with AVX-512F / AVX2+FMA gets those kernels: a build that dropped them fails here."""
    flags = _cpuinfo_flags("flags")
    available = lrkernels.available_isas()
    if "avx512f" in flags:
        assert "avx512" in available, (
            f"/proc/cpuinfo has avx512f but available_isas() = {available}"
        )
    if "avx2" in flags and "fma" in flags:
        assert "avx2" in available, (
            f"/proc/cpuinfo has avx2 and fma but available_isas() = {available}"
        )
    assert "neon" not in available


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and _machine() in ("aarch64", "arm64")),
    reason="aarch64 Linux only",
)
def test_aarch64_has_neon():
    assert "neon" in lrkernels.available_isas()


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and _machine().startswith("armv7")),
    reason="armv7 Linux only",
)
def test_armv7_neon_matches_cpuinfo():
    features = _cpuinfo_flags("Features")
    if "neon" in features and "vfpv4" in features:
        assert "neon" in lrkernels.available_isas(), f"Features={sorted(features)}"


def test_default_isa_is_available():
    assert lrkernels.get_isa() in lrkernels.available_isas()


# --------------------------------------------------------------------------------------------
# set_isa / get_isa
# --------------------------------------------------------------------------------------------


def test_get_isa_reflects_set_isa():
    previous = lrkernels.get_isa()
    try:
        for name in lrkernels.available_isas() + list(reversed(lrkernels.available_isas())):
            lrkernels.set_isa(name)
            assert lrkernels.get_isa() == name
            assert lrkernels.info()["isa"] == name
    finally:
        lrkernels.set_isa(previous)
    assert lrkernels.get_isa() == previous


@pytest.mark.parametrize("name", ["bogus", "", "avx", "sse2", "avx512f"])
def test_set_isa_unknown_name(name):
    before = lrkernels.get_isa()
    with pytest.raises(ValueError) as exc_info:
        lrkernels.set_isa(name)
    if name:
        assert name in str(exc_info.value)
    assert lrkernels.get_isa() == before, "a failed set_isa changed the active ISA"


def test_set_isa_unavailable():
    unavailable = [i for i in CANONICAL_ISAS if i not in lrkernels.available_isas()]
    if not unavailable:
        pytest.skip("every ISA is available on this machine")
    before = lrkernels.get_isa()
    for name in unavailable:
        with pytest.raises(ValueError, match=name):
            lrkernels.set_isa(name)
        assert lrkernels.get_isa() == before


def test_set_isa_wrong_type():
    with pytest.raises(TypeError):
        lrkernels.set_isa(None)
    with pytest.raises(TypeError):
        lrkernels.set_isa(3)


def test_isa_fixture_restores(isa):
    assert lrkernels.get_isa() == isa


def test_last_used_isa_follows_calls(isa, rng):
    layer = lrkernels.LowRankLinear(np.ones((3, 2)), np.ones((2, 4)), np.zeros(3))
    dense = lrkernels.Linear(np.ones((3, 4)), np.zeros(3))
    for other in lrkernels.available_isas():
        lrkernels.set_isa(other)
        layer(rng.standard_normal(4))
        assert lrkernels.last_used_isa() == other
        lrkernels.set_isa(isa)
        dense(rng.standard_normal((2, 4)))
        assert lrkernels.last_used_isa() == isa


# --------------------------------------------------------------------------------------------
# info(), kernel_tile
# --------------------------------------------------------------------------------------------


def test_info():
    info = lrkernels.info()
    assert set(info) == {
        "version",
        "compiler",
        "build_flags",
        "machine",
        "cpu",
        "isas_compiled",
        "isas_supported_by_cpu",
        "isas_available",
        "isa",
        "kernels",
        "num_threads",
        "default_num_threads",
        "cpu_features",
        "disabled_cpu_features",
        "precision_kernels",
    }
    assert set(info["precision_kernels"]) == set(info["isas_available"])
    for kernels in info["precision_kernels"].values():
        assert set(kernels) == {"fp32", "fp16", "int8"}
        # fp16: f16w (fp16 weights, f32 arithmetic) or f16-gemm (ARMv8.2 fp16 arithmetic) rows
        assert kernels["fp16"].startswith(("f16w-gemm-", "f16-gemm-"))
        assert kernels["int8"].startswith("qd8-")
    assert info["version"] == lrkernels.__version__
    assert isinstance(info["version"], str) and info["version"]
    for key in ("compiler", "build_flags", "machine", "cpu"):
        assert isinstance(info[key], str), key
    assert info["machine"] == platform.machine()
    assert info["isa"] == lrkernels.get_isa()
    assert "scalar" in info["isas_compiled"]
    assert "scalar" in info["isas_supported_by_cpu"]
    for key in ("isas_compiled", "isas_supported_by_cpu"):
        assert set(info[key]) <= set(CANONICAL_ISAS), info[key]
    assert set(info["kernels"]) == set(lrkernels.available_isas())
    for name, kernel in info["kernels"].items():
        assert isinstance(kernel, str) and name in kernel, (name, kernel)


def test_kernel_tile():
    for name in lrkernels.available_isas():
        mr, nr, kc = _core.kernel_tile(name)
        assert all(isinstance(v, int) and v > 0 for v in (mr, nr, kc)), (name, mr, nr, kc)
        assert mr <= 16, (name, mr)  # the kernel table holds at most 16 row variants
        if name in KNOWN_TILES:
            assert (mr, nr) == KNOWN_TILES[name], (name, mr, nr)
        assert f"{mr}x{nr}" in lrkernels.info()["kernels"][name]


def test_kernel_tile_bad_names():
    with pytest.raises(ValueError):
        _core.kernel_tile("bogus")
    for name in CANONICAL_ISAS:
        if name not in lrkernels.available_isas():
            with pytest.raises(ValueError):
                _core.kernel_tile(name)


def test_set_blocking_restores(blocking, rng):
    """The blocking hook changes nothing but the schedule: results stay within the bound."""
    m = make_model(rng, "LowRankLinear", 30, 20, (10,))
    x = rng.standard_normal((50, 30)).astype(np.float32)
    default = m.layer(x)
    blocking(kc=3, nc=1, mc=1, mb=1)
    blocked = m.layer(x)
    blocking()
    np.testing.assert_array_equal(m.layer(x), default)
    np.testing.assert_allclose(blocked, default, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# LRKERNELS_ISA (in a subprocess: it is read at import)
# --------------------------------------------------------------------------------------------


def _python(code: str, tmp_path, isa_env=None):
    env = dict(os.environ)
    env.pop("LRKERNELS_ISA", None)
    if isa_env is not None:
        env["LRKERNELS_ISA"] = isa_env
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # not the source tree: import the installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


_PRINT_ISA = (
    "import numpy as np, lrkernels\n"
    "lrkernels.Linear(np.ones((2, 3)))(np.ones(3))\n"
    "print(lrkernels.get_isa(), lrkernels.last_used_isa())\n"
)


@no_subprocess
def test_env_isa_each_available(tmp_path):
    for name in lrkernels.available_isas():
        r = _python(_PRINT_ISA, tmp_path, name)
        assert r.returncode == 0, f"LRKERNELS_ISA={name}: {r.stderr}"
        assert r.stdout.split() == [name, name], f"LRKERNELS_ISA={name}: {r.stdout!r}"


@no_subprocess
def test_env_isa_scalar(tmp_path):
    r = _python(_PRINT_ISA, tmp_path, "scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["scalar", "scalar"]


@no_subprocess
def test_env_isa_unset_gives_best_available(tmp_path):
    r = _python(_PRINT_ISA + "print(lrkernels.available_isas()[-1])\n", tmp_path)
    assert r.returncode == 0, r.stderr
    got, used, best = r.stdout.split()
    assert got == best == used, r.stdout
    r = _python(_PRINT_ISA, tmp_path, "")  # empty: same as unset
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == best


@no_subprocess
@pytest.mark.parametrize("value", ["bogus", "AVX9"])
def test_env_isa_bogus_raises_at_import(tmp_path, value):
    r = _python("import lrkernels\n", tmp_path, value)
    assert r.returncode != 0, f"import succeeded with LRKERNELS_ISA={value!r}"
    assert "ValueError" in r.stderr, r.stderr
    assert "LRKERNELS_ISA" in r.stderr and value in r.stderr, r.stderr


@no_subprocess
def test_env_isa_unavailable_raises_at_import(tmp_path):
    unavailable = [i for i in CANONICAL_ISAS if i not in lrkernels.available_isas()]
    if not unavailable:
        pytest.skip("every ISA is available on this machine")
    r = _python("import lrkernels\n", tmp_path, unavailable[0])
    assert r.returncode != 0
    assert "ValueError" in r.stderr and unavailable[0] in r.stderr, r.stderr
