#!/usr/bin/env bash
# fuzz.sh [SECONDS]: builds the libFuzzer harness of the C++ core (cpp/fuzz/layer_fuzzer.cc: every
# layer kind built from fuzzed sizes, ranks, geometry and values, then called) with clang under
# ASan + UBSan, and runs it for SECONDS (default 120, or $LRK_FUZZ_SECONDS) from the corpus in
# cpp/fuzz/corpus/. Prints the executions and the coverage reached; any finding (a crash, a
# sanitizer report, an unexpected exception, a wrong result, a timeout, an out-of-memory) fails
# with exit status != 0 and leaves the reproducer under the work directory (printed, also base64).
#   scripts/fuzz.sh                   # what CI runs: 120 s
#   LRK_FUZZ_MERGE=1 scripts/fuzz.sh 600   # then merge what added coverage into cpp/fuzz/corpus/
# Installs clang and its libFuzzer runtime (Debian: clang, libclang-rt-<major>-dev) when missing.
# Environment: LRK_FUZZ_BUILD (build directory, default build/fuzz), LRK_FUZZ_WORK (work directory:
# the run's new inputs, its log and any reproducer; default a fresh temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${LRK_FUZZ_SECONDS:-120}}"
build="${LRK_FUZZ_BUILD:-build/fuzz}"
work="${LRK_FUZZ_WORK:-$(mktemp -d)}"
mkdir -p "$work/corpus"

apt_install() {
  echo "fuzz.sh: installing $*"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# A clang that links -fsanitize=fuzzer.
cxx="${CXX_FUZZ:-clang++}"
if ! command -v "$cxx" >/dev/null 2>&1; then
  apt_install clang
fi
libfuzzer_links() {
  local dir
  dir="$(mktemp -d)"
  printf '#include <cstddef>\n#include <cstdint>\nextern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }\n' \
    >"$dir/t.cc"
  "$cxx" -fsanitize=fuzzer,address,undefined "$dir/t.cc" -o "$dir/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$dir"
  return $rc
}
if ! libfuzzer_links; then
  major="$("$cxx" -dumpversion | cut -d. -f1)"
  apt_install "libclang-rt-$major-dev" || apt_install "libclang-common-$major-dev"
  libfuzzer_links || { echo "fuzz.sh: $cxx cannot link -fsanitize=fuzzer" >&2; exit 2; }
fi

# cmake and ninja: from PATH, else a private virtual environment.
if ! command -v cmake >/dev/null 2>&1 || ! command -v ninja >/dev/null 2>&1; then
  tools="$(mktemp -d)/venv"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet cmake ninja
  PATH="$tools/bin:$PATH"
fi

echo "== fuzz.sh: building lrkernels_layer_fuzzer ($cxx, ASan + UBSan) in $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLRKERNELS_BUILD_FUZZER=ON >/dev/null
cmake --build "$build" -j "${LRK_FUZZ_BUILD_JOBS:-2}"
fuzzer="$build/lrkernels_layer_fuzzer"

# New inputs go to the first corpus directory (the work directory): the repository's corpus is
# only read. Limits: -timeout per input, -rss_limit_mb for the process (a single allocation above
# it is an out-of-memory finding too: the harness keeps a sane case far below).
echo "== fuzz.sh: fuzzing for $seconds s (work directory $work)"
set +e
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" cpp/fuzz/corpus 2>&1 | tee "$work/fuzz.log" |
  grep -a -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE) |^[[:space:]]+NEW_FUNC'
statuses=("${PIPESTATUS[@]}")
set -e
rc="${statuses[0]}"

# What the run reached: the coverage of the seed corpus (INITED) and at the end (DONE, or the
# last status line when a finding stopped it), executions and their rate.
inited="$(grep -a -m1 'INITED' "$work/fuzz.log" | grep -a -o 'cov: [0-9]* ft: [0-9]*' || true)"
last="$(grep -a -E '^#[0-9]+' "$work/fuzz.log" | tail -1 | grep -a -o 'cov: [0-9]* ft: [0-9]*' || true)"
execs="$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$' || true)"
rate="$(grep -a -o 'stat::average_exec_per_sec: *[0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$' || true)"
echo "fuzz.sh: ${execs:-?} executions (${rate:-?}/s); coverage: seed corpus ${inited:-?}, reached ${last:-?} (cov: edges, ft: features)"
echo "fuzz.sh: $(find "$work/corpus" -type f | wc -l) new inputs in $work/corpus"

if [ "$rc" -ne 0 ]; then
  echo "fuzz.sh: FINDING (libFuzzer exit status $rc); reproducers:" >&2
  for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*; do
    [ -e "$f" ] || continue
    echo "  $f  base64: $(base64 -w0 "$f")" >&2
    echo "  replay: $fuzzer $f   (LRK_FUZZ_VERBOSE=1 describes the case)" >&2
  done
  exit "$rc"
fi

if [ "${LRK_FUZZ_MERGE:-0}" = "1" ]; then
  # Only inputs that reach edges the corpus does not are added, a near-minimal set of them
  # (greedy set cover on edges, hit counts ignored: the corpus stays small).
  before="$(find cpp/fuzz/corpus -type f | wc -l)"
  "$fuzzer" -set_cover_merge=1 -use_counters=0 -rss_limit_mb=2048 -timeout=10 cpp/fuzz/corpus \
    "$work/corpus" >"$work/merge.log" 2>&1
  echo "fuzz.sh: merged: cpp/fuzz/corpus has $(find cpp/fuzz/corpus -type f | wc -l) inputs (was $before)"
fi
