#!/usr/bin/env bash
# ci.sh: the ARM part of CI, on an x86_64 Debian host (no Docker, no binfmt): for each architecture
# set up the sysroot (setup-sysroot.sh), cross-build the wheel (build-wheel.sh, default board
# toolchain) and run the pytest suite under qemu (test-emulated.sh):
#   aarch64 wheel (raspberry-pi-4.cmake) on qemu -cpu cortex-a72 (Pi 4), -cpu cortex-a53 (ARMv8.0)
#           and -cpu cortex-a76 (Pi 5, ARMv8.2: asimddp + asimdhp, so the rows that need them run:
#           the int8 qd8-...-neondot kernel; a72/a53 run the aarch64-neon fallbacks)
#   armv7   wheel (raspberry-pi-armv7.cmake) on qemu -cpu cortex-a15
# and, for each architecture, the C++ self-tests (test-selftest.sh: the micro-kernel tester and the
# layer self-test, cross-built statically with the same board toolchain, ctest under the same qemu
# CPUs; independent of the wheel and of the sysroot).
# Every configuration runs even if an earlier one failed; a timing/status summary comes last and the
# exit status is non-zero if anything failed. LRK_CI_BOARDS=1 also cross-builds the other board
# toolchains (Pi 5, Jetson Nano/Orin, generic ARMv8-A) into $LRK_CACHE/dist-boards and smoke-tests
# each under the qemu CPU closest to the board. Env: LRK_CACHE as in setup-sysroot.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
unset LRK_SYSROOT LRK_WHEEL   # one sysroot per architecture, under LRK_CACHE

SUMMARY=()   # "status<TAB>seconds<TAB>label"
FAILED=0
# run LABEL CMD...: runs CMD, records its time and status; never stops the script.
run() {
  local label="$1"; shift
  local t0 rc=0 dt
  printf '\n######## %s\n' "$label" >&2
  t0="$(date +%s.%N)"
  "$@" || rc=$?
  dt="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
  if [ "$rc" -eq 0 ]; then SUMMARY+=("ok	$dt	$label"); else SUMMARY+=("FAIL($rc)	$dt	$label"); FAILED=1; fi
  return "$rc"
}
skip() { SUMMARY+=("skipped	-	$1"); }

# build ARCH [TOOLCHAIN]: build-wheel.sh, the wheel's path into $WHEEL.
# shellcheck disable=SC2317  # (called through run)
build() {
  local out
  out="$("$here/build-wheel.sh" "$@")" || return $?
  WHEEL="$(tail -n 1 <<<"$out")"
}

t_start="$(date +%s.%N)"

# ---- aarch64 -------------------------------------------------------------------------------------
WHEEL=""
if run "aarch64: setup-sysroot" "$here/setup-sysroot.sh" aarch64 \
   && run "aarch64: build-wheel (raspberry-pi-4)" build aarch64; then
  AARCH64_WHEEL="$WHEEL"
  run "aarch64: pytest, qemu -cpu cortex-a72" "$here/test-emulated.sh" aarch64 cortex-a72 --wheel "$WHEEL" || true
  run "aarch64: pytest, qemu -cpu cortex-a53" "$here/test-emulated.sh" aarch64 cortex-a53 --wheel "$WHEEL" || true
  run "aarch64: pytest, qemu -cpu cortex-a76" "$here/test-emulated.sh" aarch64 cortex-a76 --wheel "$WHEEL" || true
else
  AARCH64_WHEEL=""
  skip "aarch64: pytest (no wheel)"
fi
run "aarch64: C++ self-tests (ctest), qemu -cpu cortex-a72, cortex-a53, cortex-a76" \
  "$here/test-selftest.sh" aarch64 cortex-a72 cortex-a53 cortex-a76 || true

# ---- armv7 ---------------------------------------------------------------------------------------
WHEEL=""
if run "armv7: setup-sysroot" "$here/setup-sysroot.sh" armv7 \
   && run "armv7: build-wheel (raspberry-pi-armv7)" build armv7; then
  ARMV7_WHEEL="$WHEEL"
  run "armv7: pytest, qemu -cpu cortex-a15" "$here/test-emulated.sh" armv7 cortex-a15 --wheel "$WHEEL" || true
else
  ARMV7_WHEEL=""
  skip "armv7: pytest (no wheel)"
fi
run "armv7: C++ self-tests (ctest), qemu -cpu cortex-a15" \
  "$here/test-selftest.sh" armv7 cortex-a15 || true

# ---- optional: every other board toolchain builds and imports --------------------------------------
if [ "${LRK_CI_BOARDS:-0}" = 1 ]; then
  for spec in raspberry-pi-5:cortex-a76 jetson-orin:cortex-a76 jetson-nano:cortex-a57 aarch64-linux-gnu:cortex-a53; do
    board="${spec%%:*}" cpu="${spec##*:}"
    WHEEL=""
    if LRK_DIST="$LRK_CACHE/dist-boards/$board" \
         run "aarch64: build-wheel ($board)" build aarch64 "$LRK_REPO/toolchains/$board.cmake"; then
      run "aarch64: smoke ($board), qemu -cpu $cpu" \
        "$here/test-emulated.sh" aarch64 "$cpu" --wheel "$WHEEL" --smoke-only || true
    fi
  done
fi

total="$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
printf '\n== ARM CI summary\n'
for line in "${SUMMARY[@]}"; do
  IFS='	' read -r status secs label <<<"$line"
  printf '  %-10s %8s s  %s\n' "$status" "$secs" "$label"
done
printf '  %-10s %8s s  %s\n' "" "$total" "total"
[ -n "$AARCH64_WHEEL" ] && printf '  wheel: %s\n' "$AARCH64_WHEEL"
[ -n "$ARMV7_WHEEL" ] && printf '  wheel: %s\n' "$ARMV7_WHEEL"
exit "$FAILED"
