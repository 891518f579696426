"""Benchmark setup: one thread everywhere, so the comparison is kernel against kernel.

The thread caps must be set before numpy (and its OpenBLAS) is first imported.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lrkernels  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--lrk-threads",
        type=int,
        default=1,
        help="threads per lrkernels layer call (default 1, like numpy here)",
    )


def pytest_configure(config):
    lrkernels.set_num_threads(config.getoption("--lrk-threads"))


def _numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "numpy BLAS: (install threadpoolctl to see which kernel numpy runs)"
    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            parts.append(
                f"{pool.get('internal_api')} {pool.get('version')} "
                f"core={pool.get('architecture')} threads={pool.get('num_threads')}"
            )
    return "numpy BLAS: " + ("; ".join(parts) or "unknown")


def pytest_report_header(config):
    info = lrkernels.info()
    isa = info["isa"]
    peak = lrkernels._core.measure_peak_gflops(isa, 0.3)
    peak_text = f"{peak:.1f} GFLOP/s" if peak else "n/a"
    return [
        f"lrkernels {info['version']} isa={isa} kernels={info['kernels'].get(isa)} "
        f"threads={lrkernels.get_num_threads()} "
        f"cpu={info['cpu']!r} compiler={info['compiler']}",
        f"single-core f32 FMA peak ({isa}): {peak_text}; numpy {np.__version__}",
        _numpy_blas(),
    ]


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)
