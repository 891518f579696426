#!/usr/bin/env bash
# setup-sysroot.sh ARCH   (ARCH = aarch64 | armv7)
#
# Prepares, on an x86_64 Debian host, everything needed to cross-build lrkernels for ARCH and to test
# it under qemu user-mode emulation (no Docker, no binfmt):
#   - host packages: the cross g++, qemu-user, ninja (apt, only the missing ones);
#   - a target sysroot: Debian's CPython 3.11 (interpreter, stdlib, headers) and the runtime libraries
#     it needs, for the target architecture, fetched with `apt-get download` and unpacked with
#     `dpkg -x` (never installed into the host), dependencies resolved from the apt metadata;
#   - target numpy + pytest in SYSROOT/lrk-site: PyPI manylinux wheels for aarch64; for armv7 (PyPI has
#     no armv7l numpy) Debian's python3-numpy:armhf with its BLAS/LAPACK, pytest from PyPI (pure Python).
# Idempotent: a second run only re-checks and prints the paths. Env: LRK_CACHE (default
# ~/.cache/lrkernels-arm), LRK_SYSROOT (default $LRK_CACHE/sysroot-ARCH), LRK_REFRESH=1 (rebuild the
# sysroot and the target site dir), LRK_TARGET_PIP_PACKAGES (override the target PyPI packages).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 aarch64|armv7"
lrk_arch_setup "$1"
DEBS="$LRK_CACHE/debs-$LRK_ARCH"

# What the sysroot must contain; their Depends/Pre-Depends are added recursively (below).
ROOTS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libpython3.11-dev libpython3.11
       libstdc++6 libgcc-s1 libc6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0
       libuuid1)
if [ "$LRK_ARCH" = armv7 ]; then
  ROOTS+=(python3-numpy libblas3 liblapack3)   # liblapack3 brings libgfortran5
fi
# Dependencies not followed: package-management tools, perl, data-only packages, Debian's python3
# meta packages (we run python3.11 directly), and -dev packages (the cross compiler brings its own
# libc headers; only libpython3.11-dev, a root, is wanted).
PRUNE='^(dpkg|tar|install-info|debconf.*|perl.*|libperl.*|tzdata|media-types|mime-support|mailcap|readline-common|python3|python3-minimal|python3\.11|python3-pkg-resources|libc-dev-bin|rpcsvc-proto|linux-libc-dev|.*-dev)$'

# Target packages from PyPI (pytest >= 8 needs pygments).
if [ "$LRK_ARCH" = aarch64 ]; then
  DEFAULT_PIP=(numpy pytest pluggy iniconfig packaging pygments)
  PIP_PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64)
else
  DEFAULT_PIP=(pytest pluggy iniconfig packaging pygments)           # all pure Python
  PIP_PLATFORMS=(--platform linux_armv7l)
fi
read -r -a PIP_PKGS <<<"${LRK_TARGET_PIP_PACKAGES:-${DEFAULT_PIP[*]}}"

# dep_graph ARCH PKG... : "parent dep" lines for the given packages and everything they reach (one
# `apt-cache depends --recurse` call: each call costs seconds where apt keeps no binary cache). One
# dep per Depends/Pre-Depends group, named as apt names it ("pkg:ARCH", or bare for Architecture:
# all): in an OR group the first alternative; for a virtual package its first provider of ARCH.
dep_graph() {
  local arch="$1"; shift
  apt-cache depends --recurse --important "$@" 2>/dev/null | awk -v arch=":$arch" '
    function emit(d) { if (parent != "") print parent, d; satisfied = 1 }
    function finish_virtual() {
      if (!virtual) return
      pick = (arch_provider != "") ? arch_provider : bare_provider
      if (pick != "") emit(pick)
      virtual = 0
    }
    /^[^ ]/ { finish_virtual(); parent = ($0 ~ /^</) ? "" : $1; satisfied = 0; or_next = 0; next }
    /^ [ |](Pre)?Depends: / {
      finish_virtual()
      if (!or_next) satisfied = 0          # a new group starts unless the last line said "|"
      or_next = (substr($0, 2, 1) == "|")
      if (satisfied) next
      if ($2 ~ /^</) { virtual = 1; arch_provider = ""; bare_provider = ""; next }
      emit($2); next
    }
    /^    [^ ]/ {                          # a provider of the virtual package above
      if (!virtual) next
      p = $1
      if (arch_provider == "" && substr(p, length(p) - length(arch) + 1) == arch) arch_provider = p
      if (bare_provider == "" && p !~ /:/) bare_provider = p
      next
    }
    END { finish_virtual() }'
}

# resolve ARCH ROOT... : the roots and what they depend on, recursively, not following PRUNE.
resolve() {
  local arch="$1"; shift
  local -A deps=() seen=()
  local -a todo=() next=() all=()
  local parent dep p
  for p in "$@"; do todo+=("$p:$arch"); done
  while read -r parent dep; do deps["$parent"]+="$dep "; done < <(dep_graph "$arch" "${todo[@]}")
  for p in "${todo[@]}"; do seen["$p"]=1; all+=("$p"); done
  while [ "${#todo[@]}" -gt 0 ]; do
    next=()
    for parent in "${todo[@]}"; do
      for dep in ${deps[$parent]:-}; do
        [ -n "${seen[$dep]:-}" ] && continue
        seen["$dep"]=1
        [[ "${dep%%:*}" =~ $PRUNE ]] && continue
        next+=("$dep"); all+=("$dep")
      done
    done
    todo=("${next[@]+"${next[@]}"}")
  done
  printf '%s\n' "${all[@]}" | sort -u
}

# ---- 1. host packages ---------------------------------------------------------------------------
step_begin "host packages ($LRK_CROSS_PKG qemu-user ninja-build)"
ensure_host_packages "$LRK_CROSS_PKG" qemu-user ninja-build
step_end

# ---- 2. foreign architecture and its package lists -----------------------------------------------
step_begin "dpkg foreign architecture $LRK_DEB_ARCH"
if ! dpkg --print-foreign-architectures | grep -x "$LRK_DEB_ARCH" >/dev/null; then
  log "dpkg --add-architecture $LRK_DEB_ARCH"
  dpkg --add-architecture "$LRK_DEB_ARCH"
fi
# Package lists for the architecture present? (A file test: each apt-cache call costs seconds here.)
eval "$(apt-config shell LISTS Dir::State::lists/d)"
if ! compgen -G "${LISTS%/}/*_binary-${LRK_DEB_ARCH}_Packages*" >/dev/null; then
  apt_update
  apt-cache show "python3.11-minimal:$LRK_DEB_ARCH" >/dev/null 2>&1 \
    || die "apt knows no python3.11-minimal:$LRK_DEB_ARCH (apt-get update failed?)"
fi
step_end

# ---- 3. resolve, download, unpack ------------------------------------------------------------------
step_begin "resolve target packages"
mapfile -t PKGS < <(resolve "$LRK_DEB_ARCH" "${ROOTS[@]}")
# "package architecture version file" for each, from apt's candidate versions; file is the name
# `apt-get download` saves it under (an epoch's ':' becomes %3a).
MANIFEST="$(apt-cache show --no-all-versions "${PKGS[@]}" 2>/dev/null | awk '
  /^Package: /      { p = $2 }
  /^Architecture: / { a = $2 }
  /^Version: /      { v = $2 }
  /^$/ && p != ""   { f = p "_" v "_" a ".deb"; gsub(/:/, "%3a", f); print p, a, v, f; p = "" }
  END               { if (p != "") { f = p "_" v "_" a ".deb"; gsub(/:/, "%3a", f); print p, a, v, f } }' \
  | sort -u)"
for p in "${PKGS[@]}"; do
  grep -q "^${p%%:*} " <<<"$MANIFEST" || die "no installable candidate for $p"
done
# A bare name that is not Architecture: all would be a host package: refuse it.
awk -v want="$LRK_DEB_ARCH" '$2 != want && $2 != "all" { bad = 1; print "unexpected:", $0 } END { exit bad }' \
  <<<"$MANIFEST" >&2 || die "dependency resolution picked a package of another architecture"
log "$(wc -l <<<"$MANIFEST") packages: $(awk '{ printf "%s ", $1 }' <<<"$MANIFEST")"
step_end

step_begin "apt-get download (cache: $DEBS)"
mkdir -p "$DEBS"
missing=()
while read -r pkg arch ver file; do
  [ -s "$DEBS/$file" ] || missing+=("$pkg:$arch=$ver")
done <<<"$MANIFEST"
if [ "${#missing[@]}" -gt 0 ]; then
  log "downloading ${#missing[@]} packages"
  # apt-get download writes to the current directory, which its _apt sandbox user may not reach
  # (root's home): download as root, quietly.
  (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}")
fi
while read -r pkg arch ver file; do
  [ -s "$DEBS/$file" ] || die "download of $pkg ($file) failed"
done <<<"$MANIFEST"
step_end

step_begin "unpack sysroot $LRK_SYSROOT_DIR"
STAMP="$LRK_SYSROOT_DIR/.lrk-sysroot"
want_stamp="$(printf 'v1 %s\n%s\n' "$LRK_ARCH" "$MANIFEST")"
if [ "${LRK_REFRESH:-0}" != 1 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want_stamp" ]; then
  log "sysroot up to date"
else
  tmp="$LRK_SYSROOT_DIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  while read -r pkg arch ver file; do
    dpkg -x "$DEBS/$file" "$tmp"
  done <<<"$MANIFEST"
  if [ "$LRK_ARCH" = armv7 ]; then
    # What python3-numpy's BLAS/LAPACK postinst (update-alternatives) would have made.
    libdir="$tmp/usr/lib/$LRK_TRIPLE"
    [ -e "$libdir/blas/libblas.so.3" ] || die "libblas3 did not provide blas/libblas.so.3"
    [ -e "$libdir/lapack/liblapack.so.3" ] || die "liblapack3 did not provide lapack/liblapack.so.3"
    ln -sfn blas/libblas.so.3 "$libdir/libblas.so.3"
    ln -sfn lapack/liblapack.so.3 "$libdir/liblapack.so.3"
  fi
  [ -x "$tmp/usr/bin/python$LRK_PYVER" ] || die "no usr/bin/python$LRK_PYVER in the unpacked sysroot"
  [ -f "$tmp/usr/include/python$LRK_PYVER/Python.h" ] || die "no Python.h in the unpacked sysroot"
  [ -f "$tmp/usr/include/$LRK_TRIPLE/python$LRK_PYVER/pyconfig.h" ] || die "no multiarch pyconfig.h"
  printf '%s\n' "$want_stamp" >"$tmp/.lrk-sysroot"
  rm -rf "$LRK_SYSROOT_DIR"
  mv "$tmp" "$LRK_SYSROOT_DIR"
fi
step_end

# ---- 4. the emulated interpreter ------------------------------------------------------------------
step_begin "check emulated python ($LRK_QEMU -cpu $LRK_QEMU_CPU_DEFAULT)"
lrk_qemu_python "$LRK_QEMU_CPU_DEFAULT" -- -c \
  'import platform, sys, sysconfig; print(" ", platform.machine(), sys.version.split()[0], sysconfig.get_config_var("EXT_SUFFIX"))' \
  || die "the target python does not run under $LRK_QEMU"
step_end

# ---- 5. target site-packages: numpy, pytest -----------------------------------------------------
step_begin "host venv $LRK_HOST_VENV (pip; the build tools for build-wheel.sh)"
ensure_host_venv
step_end

step_begin "target site dir $LRK_TARGET_SITE"
SITE_STAMP="$LRK_TARGET_SITE/.lrk-site"
want_site="$(printf 'v1 %s %s\n' "$LRK_ARCH" "${PIP_PKGS[*]}")"
if [ "${LRK_REFRESH:-0}" != 1 ] && [ "$(cat "$SITE_STAMP" 2>/dev/null)" = "$want_site" ]; then
  log "site dir up to date"
else
  rm -rf "$LRK_TARGET_SITE"
  # --no-deps with an explicit list: pip resolves nothing for the host; only wheels (no builds).
  "$LRK_HOST_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --target "$LRK_TARGET_SITE" --only-binary=:all: "${PIP_PLATFORMS[@]}" \
    --python-version "$LRK_PYVER" --implementation cp --abi "cp${LRK_PYVER//./}" "${PIP_PKGS[@]}"
  PYTHONPATH="$LRK_TARGET_SITE" lrk_qemu_python "$LRK_QEMU_CPU_DEFAULT" -- -c \
    'import numpy, pytest; print("  numpy", numpy.__version__, "from", numpy.__file__); print("  pytest", pytest.__version__)' \
    || die "numpy/pytest do not import in the emulated python"
  printf '%s\n' "$want_site" >"$SITE_STAMP"
fi
step_end

print_timings "setup-sysroot $LRK_ARCH"
printf 'sysroot:  %s\nsite dir: %s\npython:   %s -cpu %s -L %s %s\n' \
  "$LRK_SYSROOT_DIR" "$LRK_TARGET_SITE" "$LRK_QEMU" "$LRK_QEMU_CPU_DEFAULT" "$LRK_SYSROOT_DIR" "$LRK_TARGET_PYTHON"
