#!/usr/bin/env bash
# build-wheel.sh ARCH [TOOLCHAIN_FILE]   (ARCH = aarch64 | armv7)
#
# Cross-builds, on x86_64 Debian, an lrkernels wheel for ARCH into dist/ (LRK_DIST overrides):
# lrkernels-<version>-cp311-cp311-linux_aarch64.whl or ...-linux_armv7l.whl, whose extension module
# is named for the target (_core.cpython-311-aarch64-linux-gnu.so / ...-arm-linux-gnueabihf.so).
# TOOLCHAIN_FILE defaults to toolchains/raspberry-pi-4.cmake (aarch64) or
# toolchains/raspberry-pi-armv7.cmake (armv7); any board file in toolchains/ works.
# How: `pip wheel --no-build-isolation` from a host venv holding scikit-build-core, pybind11, cmake
# and ninja; the CMake toolchain file does the cross-compiling; SETUPTOOLS_EXT_SUFFIX and
# wheel.tags name the module and the wheel for the target. Runs setup-sysroot.sh first when the
# sysroot is missing. The wheel's path is the last line of stdout; everything else goes to stderr.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: $0 aarch64|armv7 [TOOLCHAIN_FILE]"; fi
lrk_arch_setup "$1"
lrk_toolchain "${2:-$LRK_TOOLCHAIN_DEFAULT}"
if grep -q 'set(LRK_CROSS_ARCH ' "$TOOLCHAIN" && ! grep -q "set(LRK_CROSS_ARCH $LRK_ARCH)" "$TOOLCHAIN"; then
  die "$TOOLCHAIN is a toolchain for another architecture than $LRK_ARCH"
fi
DIST="${LRK_DIST:-$LRK_REPO/dist}"
BUILD_DIR="build/cross-$LRK_ARCH-$BOARD"   # relative to the repo: one per board (toolchain)

step_begin "prerequisites (sysroot, host venv, file/unzip)"
if [ ! -f "$LRK_SYSROOT_DIR/.lrk-sysroot" ]; then
  log "no sysroot at $LRK_SYSROOT_DIR yet: running setup-sysroot.sh $LRK_ARCH"
  "$(dirname "$0")/setup-sysroot.sh" "$LRK_ARCH" >&2
fi
ensure_host_packages "$LRK_CROSS_PKG" ninja-build file unzip binutils
ensure_host_venv
EXT_SUFFIX="$(lrk_target_ext_suffix)"
[ "$EXT_SUFFIX" = "$LRK_EXT_SUFFIX_KNOWN" ] \
  || log "WARNING: the target python says EXT_SUFFIX=$EXT_SUFFIX (expected $LRK_EXT_SUFFIX_KNOWN)"
step_end

step_begin "pip wheel ($BOARD, $LRK_WHEEL_TAG)"
mkdir -p "$DIST"
wheel_glob="lrkernels-*-$LRK_WHEEL_TAG.whl"
# shellcheck disable=SC2086  # (a glob, on purpose)
rm -f "$DIST"/$wheel_glob
(
  cd "$LRK_REPO"
  export PATH="$LRK_HOST_VENV/bin:$PATH"
  export SETUPTOOLS_EXT_SUFFIX="$EXT_SUFFIX"
  python -m pip wheel . --no-build-isolation --no-deps --disable-pip-version-check -w "$DIST" \
    -C cmake.python-hints=false \
    -C wheel.tags="$LRK_WHEEL_TAG" \
    -C build-dir="$BUILD_DIR" \
    -C cmake.define.CMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" \
    -C cmake.define.LRK_SYSROOT="$LRK_SYSROOT_DIR" \
    ${LRK_PIP_VERBOSE:+-v}
) >&2
shopt -s nullglob
# shellcheck disable=SC2206
wheels=("$DIST"/$wheel_glob)
shopt -u nullglob
[ "${#wheels[@]}" -eq 1 ] || die "expected one $wheel_glob in $DIST, found ${#wheels[@]}"
WHEEL="${wheels[0]}"
step_end

step_begin "verify the wheel"
module="lrkernels/_core$EXT_SUFFIX"
unzip -l "$WHEEL" >&2
unzip -Z1 "$WHEEL" | grep -x "$module" >/dev/null || die "$WHEEL has no $module"
others="$(unzip -Z1 "$WHEEL" | grep '\.so$' | grep -vx "$module" || true)"
[ -z "$others" ] || die "$WHEEL holds other extension modules too: $others"
unzip -p "$WHEEL" 'lrkernels-*.dist-info/WHEEL' | grep -x "Tag: $LRK_WHEEL_TAG" >/dev/null \
  || die "the wheel's WHEEL file does not carry Tag: $LRK_WHEEL_TAG"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$WHEEL" "$module" -d "$tmp"
so="$tmp/$module"
file -b "$so" | sed 's/^/  file: /' >&2
readelf -h "$so" | grep -E 'Class|Machine|Flags' | sed 's/^ */  readelf: /' >&2
if [ "$LRK_ARCH" = aarch64 ]; then
  readelf -h "$so" | grep 'Machine:.*AArch64' >/dev/null || die "$module is not an AArch64 ELF"
else
  readelf -h "$so" | grep 'Machine:.*ARM$' >/dev/null || die "$module is not a 32-bit ARM ELF"
  readelf -h "$so" | grep 'hard-float' >/dev/null || die "$module is not hard-float (armhf)"
fi
# The newest glibc / libstdc++ symbol versions the module needs (what the target OS must have).
readelf -V "$so" | grep -oE 'GLIBC(XX)?_[0-9.]+' | sort -t_ -k2 -V -u \
  | awk -F_ '{ max[$1] = $0 } END { printf "  needs: %s %s\n", max["GLIBC"], max["GLIBCXX"] }' >&2
step_end

print_timings "build-wheel $LRK_ARCH ($BOARD)" >&2
log "wheel: $WHEEL"
printf '%s\n' "$WHEEL"
