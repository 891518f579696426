#!/usr/bin/env bash
# test-emulated.sh ARCH [QEMU_CPU] [--wheel WHEEL] [--toolchain FILE] [--smoke-only] [-- PYTEST_ARGS...]
#
# Runs lrkernels' pytest suite (tests/) for ARCH (aarch64 | armv7) on this x86_64 host under qemu
# user-mode emulation: the target CPython 3.11 from the sysroot (setup-sysroot.sh), the target numpy
# and pytest, and the cross-built wheel (build-wheel.sh, or --wheel / $LRK_WHEEL), unzipped into a
# fresh site dir. Before pytest, a smoke check imports the package, prints lrkernels.info() and runs
# a LowRankLinear on every available ISA against lrkernels.reference (--smoke-only stops there).
# PYTEST_ARGS that name tests (tests/test_precision.py, tests/test_x.py::test_y) replace the default
# 'tests' (the whole suite), e.g. `-- tests/test_precision.py -x`; other arguments are added to it.
# QEMU_CPU defaults to cortex-a72 (aarch64) / cortex-a15 (armv7); e.g. cortex-a53 for the plainest
# ARMv8.0 core, or cortex-a76 / max for ARMv8.2 builds. The tests run from a temporary copy of tests/
# (with pyproject.toml for the pytest settings) so the in-tree python/ folder cannot shadow the
# installed package. LRKERNELS_NO_SUBPROCESS=1 is set (emulated python cannot exec itself here) and
# LRKERNELS_NO_TIMING=1 (timing under emulation means nothing).
# Exit status: pytest's; "no tests collected" (pytest's 5) is reported as a failure.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

usage="usage: $0 aarch64|armv7 [QEMU_CPU] [--wheel WHEEL] [--toolchain FILE] [--smoke-only] [-- PYTEST_ARGS...]"
lrk_arch_args "$usage" "$@"; shift
QEMU_CPU="$LRK_QEMU_CPU_DEFAULT"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then QEMU_CPU="$1"; shift; fi
WHEEL="${LRK_WHEEL:-}"
TOOLCHAIN=""
SMOKE_ONLY=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL="$2"; shift 2 ;;
    --toolchain) TOOLCHAIN="$2"; shift 2 ;;
    --smoke-only) SMOKE_ONLY=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) die "$usage" ;;
  esac
done
step_begin "sysroot $LRK_ARCH"
if [ ! -f "$LRK_SYSROOT_DIR/.lrk-sysroot" ] || [ ! -f "$LRK_TARGET_SITE/.lrk-site" ]; then
  "$(dirname "$0")/setup-sysroot.sh" "$LRK_ARCH" >/dev/null   # (ci.sh runs it; here only if missing)
fi
cpus="$("$LRK_QEMU" -cpu help || true)"   # (qemu exits 1 after listing)
grep -w -- "$QEMU_CPU" <<<"$cpus" >/dev/null \
  || die "$LRK_QEMU knows no CPU '$QEMU_CPU' (see $LRK_QEMU -cpu help)"
step_end

if [ -z "$WHEEL" ]; then
  step_begin "build-wheel $LRK_ARCH"
  WHEEL="$("$(dirname "$0")/build-wheel.sh" "$LRK_ARCH" ${TOOLCHAIN:+"$TOOLCHAIN"} | tail -n 1)"
  step_end
fi
[ -f "$WHEEL" ] || die "no wheel at '$WHEEL'"
case "$(basename "$WHEEL")" in
  *"-$LRK_WHEEL_PLAT.whl") ;;
  *) die "$WHEEL is not a $LRK_WHEEL_PLAT wheel" ;;
esac

step_begin "install wheel + copy tests into a scratch dir"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lrk-emu-$LRK_ARCH.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
unzip -q "$WHEEL" -d "$WORK/site"               # a wheel is a zip: package dir + dist-info
cp -r "$LRK_REPO/tests" "$WORK/tests"
cp "$LRK_REPO/pyproject.toml" "$WORK/"          # the same [tool.pytest.ini_options]
find "$WORK/tests" -name __pycache__ -prune -exec rm -rf {} +
log "wheel $(basename "$WHEEL") -> $WORK/site"
step_end

# The emulated interpreter: target site dirs only, nothing from the host's Python environment.
# (Not lrk_qemu_python: env runs programs, not shell functions.)
run_target() {
  (cd "$WORK" && env -u PYTHONHOME -u PYTHONSTARTUP \
     PYTHONPATH="$WORK/site:$LRK_TARGET_SITE" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
     LRKERNELS_NO_SUBPROCESS=1 LRKERNELS_NO_TIMING=1 \
     "$LRK_QEMU" -cpu "$QEMU_CPU" -L "$LRK_SYSROOT_DIR" "$LRK_TARGET_PYTHON" "$@")
}

step_begin "smoke check ($LRK_QEMU -cpu $QEMU_CPU)"
run_target - "$WORK/site" <<'EOF'
import sys
import numpy as np
import lrkernels
from lrkernels import reference

site = sys.argv[1]
assert lrkernels.__file__.startswith(site), f"lrkernels imported from {lrkernels.__file__}, not {site}"
info = lrkernels.info()
for key in sorted(info):
    print(f"  {key}: {info[key]}")
rng = np.random.default_rng(0)
U = rng.standard_normal((70, 9), dtype=np.float32)
V = rng.standard_normal((9, 45), dtype=np.float32)
b = rng.standard_normal(70, dtype=np.float32)
for isa in lrkernels.available_isas():
    lrkernels.set_isa(isa)
    layer = lrkernels.LowRankLinear(U, V, bias=b)
    for batch in (1, 3, 17):
        x = rng.standard_normal((batch, 45), dtype=np.float32)
        want = reference.lowrank_linear(x, U, V, b)
        got = layer(x)
        assert lrkernels.last_used_isa() == isa, (lrkernels.last_used_isa(), isa)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    print(f"  LowRankLinear on {isa}: matches reference (batches 1, 3, 17)")
EOF
step_end

rc=0
if [ "$SMOKE_ONLY" = 0 ]; then
  step_begin "pytest tests under $LRK_QEMU -cpu $QEMU_CPU"
  # The whole tests/ unless PYTEST_ARGS name tests of their own (tests, tests/FILE[::TEST]): pytest
  # runs the union of the paths it is given, so "tests" before them would run everything.
  paths=(tests)
  for arg in "${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}"; do
    case "$arg" in tests | tests/*) paths=(); break ;; esac
  done
  run_target -m pytest "${paths[@]+"${paths[@]}"}" -q -p no:cacheprovider \
    "${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}" || rc=$?
  step_end
  if [ "$rc" -eq 5 ]; then
    log "FAILURE: pytest collected no tests ($LRK_ARCH, -cpu $QEMU_CPU): tests/ missing or all deselected?"
  elif [ "$rc" -gt 128 ]; then
    sig="SIG$(kill -l $((rc - 128)) 2>/dev/null || echo "?")"
    case "$sig" in
      SIGBUS) why="a misaligned load/store that this CPU refuses" ;;
      SIGILL) why="an instruction that -cpu $QEMU_CPU lacks (code built for a newer core?)" ;;
      SIGSEGV) why="an invalid memory access" ;;
      *) why="" ;;
    esac
    log "FAILURE: the emulated python died of $sig${why:+: $why} ($LRK_ARCH, -cpu $QEMU_CPU)." \
        "The test that ran is in the 'Fatal Python error' traceback above."
  elif [ "$rc" -ne 0 ]; then
    log "FAILURE: pytest exited with $rc ($LRK_ARCH, -cpu $QEMU_CPU)"
  fi
fi

print_timings "test-emulated $LRK_ARCH (-cpu $QEMU_CPU)"
exit "$rc"
