# shellcheck shell=bash disable=SC2034  # (variables set here are used by the sourcing scripts)
# Shared helpers for scripts/arm/*.sh (sourced, not run): per-architecture settings, cache paths,
# step timing, and the host build venv. Nothing here installs into the host outside apt and pip.

LRK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LRK_CACHE="${LRK_CACHE:-$HOME/.cache/lrkernels-arm}"
LRK_PYVER=3.11   # the target CPython: Debian bookworm's (Raspberry Pi OS bookworm, JetPack 6 / Ubuntu 22.04+)

log() { printf '[arm] %s\n' "$*" >&2; }
die() { printf '[arm] ERROR: %s\n' "$*" >&2; exit 1; }

# lrk_arch_setup ARCH: sets the per-architecture variables used by every script.
lrk_arch_setup() {
  LRK_ARCH="${1:-}"
  case "$LRK_ARCH" in
    aarch64)
      LRK_DEB_ARCH=arm64              # Debian architecture name
      LRK_TRIPLE=aarch64-linux-gnu    # GNU triple = Debian multiarch dir
      LRK_CROSS_PKG=g++-aarch64-linux-gnu
      LRK_QEMU=qemu-aarch64
      LRK_QEMU_CPU_DEFAULT=cortex-a72 # Raspberry Pi 4, the default board
      LRK_WHEEL_PLAT=linux_aarch64
      LRK_TOOLCHAIN_DEFAULT="$LRK_REPO/toolchains/raspberry-pi-4.cmake"
      ;;
    armv7)
      LRK_DEB_ARCH=armhf
      LRK_TRIPLE=arm-linux-gnueabihf
      LRK_CROSS_PKG=g++-arm-linux-gnueabihf
      LRK_QEMU=qemu-arm
      LRK_QEMU_CPU_DEFAULT=cortex-a15 # ARMv7-A with NEON + VFPv4, as the armv7 build assumes
      LRK_WHEEL_PLAT=linux_armv7l
      LRK_TOOLCHAIN_DEFAULT="$LRK_REPO/toolchains/raspberry-pi-armv7.cmake"
      ;;
    *) die "ARCH must be aarch64 or armv7 (got '${LRK_ARCH}')" ;;
  esac
  LRK_SYSROOT_DIR="${LRK_SYSROOT:-$LRK_CACHE/sysroot-$LRK_ARCH}"
  LRK_TARGET_SITE="$LRK_SYSROOT_DIR/lrk-site"           # target numpy/pytest (pip --target)
  LRK_TARGET_PYTHON="$LRK_SYSROOT_DIR/usr/bin/python$LRK_PYVER"
  # What the target's sysconfig.get_config_var('EXT_SUFFIX') says (checked against the emulated
  # interpreter when it can run; see lrk_target_ext_suffix).
  LRK_EXT_SUFFIX_KNOWN=".cpython-${LRK_PYVER//./}-$LRK_TRIPLE.so"
  LRK_WHEEL_TAG="cp${LRK_PYVER//./}-cp${LRK_PYVER//./}-$LRK_WHEEL_PLAT"
  export LRK_CACHE
}

# The start of a script's argument parsing: lrk_arch_args USAGE "$@" dies with USAGE when there is
# no ARCH argument, else sets the architecture up (lrk_arch_setup); the caller shifts ARCH off.
lrk_arch_args() {
  local usage="$1"; shift
  [ $# -ge 1 ] || die "$usage"
  lrk_arch_setup "$1"
}

# A CMake toolchain file for LRK_ARCH: lrk_toolchain FILE checks that it exists and sets TOOLCHAIN
# (its absolute path) and BOARD (its name without .cmake).
lrk_toolchain() {
  TOOLCHAIN="$1"
  [ -f "$TOOLCHAIN" ] || die "no toolchain file $TOOLCHAIN"
  TOOLCHAIN="$(cd "$(dirname "$TOOLCHAIN")" && pwd)/$(basename "$TOOLCHAIN")"
  BOARD="$(basename "$TOOLCHAIN" .cmake)"
}

# Run the target interpreter under qemu user-mode emulation: lrk_qemu_python [QEMU_CPU] -- ARGS...
lrk_qemu_python() {
  local cpu="$1"; shift
  [ "${1:-}" = "--" ] && shift
  "$LRK_QEMU" -cpu "$cpu" -L "$LRK_SYSROOT_DIR" "$LRK_TARGET_PYTHON" "$@"
}

# The target's EXT_SUFFIX, read from the emulated interpreter; the known value if it cannot run yet.
lrk_target_ext_suffix() {
  local s=""
  if [ -x "$LRK_TARGET_PYTHON" ] && command -v "$LRK_QEMU" >/dev/null 2>&1; then
    s="$(lrk_qemu_python "$LRK_QEMU_CPU_DEFAULT" -- -S -c \
          'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null || true)"
  fi
  if [ -z "$s" ]; then
    log "emulated python not runnable yet; using the known EXT_SUFFIX $LRK_EXT_SUFFIX_KNOWN"
    s="$LRK_EXT_SUFFIX_KNOWN"
  fi
  printf '%s\n' "$s"
}

# ---- timing -------------------------------------------------------------------------------------
_lrk_now() { date +%s.%N; }
_lrk_t0=""
_lrk_step=""
LRK_TIMINGS=()   # "label<TAB>seconds" per finished step
step_begin() { _lrk_step="$1"; _lrk_t0="$(_lrk_now)"; log "-- $1"; }
step_end() {
  local dt
  dt="$(awk -v a="$_lrk_t0" -v b="$(_lrk_now)" 'BEGIN { printf "%.1f", b - a }')"
  LRK_TIMINGS+=("$_lrk_step	$dt")
  log "   $_lrk_step: ${dt}s"
}
print_timings() {
  local title="$1" line
  printf '\n== %s\n' "$title"
  for line in "${LRK_TIMINGS[@]}"; do
    printf '  %-58s %8ss\n' "${line%%	*}" "${line##*	}"
  done
}

# ---- host packages ------------------------------------------------------------------------------
_lrk_apt_updated=0
# apt_update: once per script run. The Debian mirror can fail single index files (e.g. "Mirror sync
# in progress"); apt then reports an error but keeps the other lists, so only warn here and let the
# callers check that what they need is known to apt.
apt_update() {
  [ "$_lrk_apt_updated" = 1 ] && return 0
  log "apt-get update"
  apt-get update -qq -o DPkg::Lock::Timeout=600 || log "WARNING: apt-get update reported errors (continuing; missing packages are checked next)"
  _lrk_apt_updated=1
}
_deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep 'install ok installed' >/dev/null; }

# ensure_host_packages PKG...: apt-get install (without recommends: qemu-user recommends the binfmt
# registration, which we do not want) only those not installed yet.
ensure_host_packages() {
  local missing=() p
  for p in "$@"; do _deb_installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then apt_update; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# ---- host build venv ----------------------------------------------------------------------------
LRK_HOST_VENV="${LRK_HOST_VENV:-$LRK_CACHE/host-venv}"
LRK_HOST_BUILD_REQS=("scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.18" "ninja")
# ensure_host_venv: a host (x86_64) venv with the build backend and the tools; pip also runs the
# target installs from here (with --platform/--target, it never runs target code).
ensure_host_venv() {
  local stamp="$LRK_HOST_VENV/.lrk-reqs" want
  want="$(printf '%s\n' "${LRK_HOST_BUILD_REQS[@]}")"
  if [ -x "$LRK_HOST_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  local py="${LRK_HOST_PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 || ensure_host_packages python3
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then ensure_host_packages python3-venv; fi
  log "creating host venv $LRK_HOST_VENV ($("$py" --version 2>&1))"
  rm -rf "$LRK_HOST_VENV"
  "$py" -m venv "$LRK_HOST_VENV"
  "$LRK_HOST_VENV/bin/python" -m pip install -q --upgrade pip
  "$LRK_HOST_VENV/bin/python" -m pip install -q "${LRK_HOST_BUILD_REQS[@]}"
  printf '%s\n' "$want" >"$stamp"
}
