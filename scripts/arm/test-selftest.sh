#!/usr/bin/env bash
# test-selftest.sh ARCH [QEMU_CPU...] [--toolchain FILE] [--dynamic]   (ARCH = aarch64 | armv7)
#
# Cross-builds the C++ self-tests for ARCH (lrkernels_ukernel_tester: every kernel family config
# called directly; lrkernels_selftest: every layer kind) with the board toolchain (default: as
# build-wheel.sh) and runs them with ctest under qemu user-mode emulation, once per QEMU_CPU
# (default: cortex-a72 for aarch64, cortex-a15 for armv7). No Python is involved: the build is
# configured with LRKERNELS_SELFTEST_ONLY=ON (no Python module) and, unless --dynamic, linked
# statically, so it runs under qemu without the target sysroot (--dynamic runs it against the
# sysroot of setup-sysroot.sh, through the toolchain's CMAKE_CROSSCOMPILING_EMULATOR with -L).
# Build tree: build/selftest-ARCH-BOARD in the repository. Exit status: non-zero if a build or a
# ctest run failed (every CPU is tried).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

usage="usage: $0 aarch64|armv7 [QEMU_CPU...] [--toolchain FILE] [--dynamic]"
lrk_arch_args "$usage" "$@"; shift
TOOLCHAIN="$LRK_TOOLCHAIN_DEFAULT"
STATIC=ON
CPUS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --toolchain) TOOLCHAIN="$2"; shift 2 ;;
    --dynamic) STATIC=OFF; shift ;;
    -*) die "$usage" ;;
    *) CPUS+=("$1"); shift ;;
  esac
done
[ "${#CPUS[@]}" -gt 0 ] || CPUS=("$LRK_QEMU_CPU_DEFAULT")
lrk_toolchain "$TOOLCHAIN"
BUILD_DIR="$LRK_REPO/build/selftest-$LRK_ARCH-$BOARD"
if [ "$STATIC" = OFF ] && [ ! -f "$LRK_SYSROOT_DIR/.lrk-sysroot" ]; then
  die "--dynamic needs the sysroot: run setup-sysroot.sh $LRK_ARCH first"
fi

step_begin "prerequisites ($LRK_CROSS_PKG, qemu-user, cmake)"
ensure_host_packages "$LRK_CROSS_PKG" qemu-user ninja-build file
# cmake: the host venv's (build-wheel.sh made it), else one on PATH, else make the host venv.
if [ -x "$LRK_HOST_VENV/bin/cmake" ] || ! command -v cmake >/dev/null 2>&1; then
  ensure_host_venv
  export PATH="$LRK_HOST_VENV/bin:$PATH"
fi
log "$(cmake --version | head -n 1)"
step_end

step_begin "cross-build the self-tests ($BOARD, static=$STATIC)"
# The first CPU goes into the configuration; the loop below reconfigures for the others (that only
# rewrites the CTest files: no flag changes, nothing is recompiled).
cmake -S "$LRK_REPO" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" -DLRK_SYSROOT="$LRK_SYSROOT_DIR" \
  -DLRKERNELS_SELFTEST_ONLY=ON -DLRKERNELS_SELFTEST_STATIC="$STATIC" \
  -DLRK_QEMU_CPU="${CPUS[0]}" >&2
cmake --build "$BUILD_DIR" --target lrkernels_ukernel_tester lrkernels_selftest >&2
file -b "$BUILD_DIR/lrkernels_ukernel_tester" | sed 's/^/  file: /' >&2
step_end

rc=0
for cpu in "${CPUS[@]}"; do
  step_begin "ctest under $LRK_QEMU -cpu $cpu"
  cmake -S "$LRK_REPO" -B "$BUILD_DIR" -DLRK_QEMU_CPU="$cpu" >/dev/null
  (cd "$BUILD_DIR" && ctest --output-on-failure -V) >&2 || {
    rc=$?
    log "FAILURE: ctest exited with $rc ($LRK_ARCH, -cpu $cpu)"
  }
  step_end
done
print_timings "test-selftest $LRK_ARCH ($BOARD)" >&2
exit "$rc"
