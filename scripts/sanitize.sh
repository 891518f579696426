#!/usr/bin/env bash
# sanitize.sh [SANITIZERS] [-- PYTEST_ARGS...]: builds lrkernels with sanitizers (default
# address,undefined) into a fresh venv and runs the whole pytest suite against it. The ASan runtime
# must be loaded before Python itself, hence LD_PRELOAD. Any report aborts the run (exit != 0).
#   scripts/sanitize.sh                       # ASan + UBSan, the whole suite (what CI runs)
#   scripts/sanitize.sh thread -- tests/test_threads.py   # ThreadSanitizer (see README)
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers="${1:-address,undefined}"
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests -q -p no:cacheprovider)

venv="${LRK_SANITIZE_VENV:-$(mktemp -d)/venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
tag="$(echo "$sanitizers" | tr ',' '-')"
"$venv/bin/python" -m pip install -q ".[test]" \
  -C "cmake.define.LRKERNELS_SANITIZE=$sanitizers" -C "build-dir=build/sanitize-$tag" \
  -C cmake.build-type=RelWithDebInfo

# The sanitizer runtime must come first; libstdc++ too, or ASan's __cxa_throw interceptor finds no
# real __cxa_throw (python does not link libstdc++) and aborts on the first C++ exception.
runtime=""
case "$sanitizers" in
  *address*) runtime="$(gcc -print-file-name=libasan.so)" ;;
  *thread*) runtime="$(gcc -print-file-name=libtsan.so)" ;;
esac
preload=""
if [ -n "$runtime" ]; then
  [ -f "$runtime" ] || { echo "sanitize.sh: runtime $runtime not found" >&2; exit 2; }
  preload="$runtime $(gcc -print-file-name=libstdc++.so)"
fi

# Python itself leaks by design at exit: leak checking would only report the interpreter.
# allocator_may_return_null: a request larger than memory must reach numpy as MemoryError (tested).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_init_order=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
# ThreadSanitizer: reports go to files (pytest's output capture would swallow a report that ends
# the process: pytest then dies with exit status 66 and no word why), printed below; known false
# positives of glibc internals are suppressed in scripts/tsan.supp (each one explained there).
tsan_logs=""
case "$sanitizers" in
  *thread*)
    tsan_logs="$(mktemp -d)"
    TSAN_OPTIONS="$TSAN_OPTIONS:log_path=$tsan_logs/tsan:suppressions=$PWD/scripts/tsan.supp"
    # A process forked from a multi-threaded one (multiprocessing's fork, test_threads.py) starts
    # the pool's threads again; by default TSan kills such a child (the test then waits 120 s).
    TSAN_OPTIONS="$TSAN_OPTIONS:die_after_fork=0"
    ;;
esac
# numpy's OpenBLAS threads are not instrumented: TSan would report their writes to arrays we read.
case "$sanitizers" in *thread*) export OPENBLAS_NUM_THREADS=1 ;; esac
# Timing-sensitive checks are meaningless under a sanitizer's slowdown.
export LRKERNELS_NO_TIMING=1
echo "sanitize.sh: $sanitizers build, pytest ${pytest_args[*]}"
rc=0
start=$SECONDS
LD_PRELOAD="$preload" "$venv/bin/python" -m pytest "${pytest_args[@]}" || rc=$?
echo "sanitize.sh: pytest exit status $rc after $((SECONDS - start)) s"
if [ "$rc" -eq 5 ]; then echo "sanitize.sh: pytest collected no tests" >&2; fi
if [ -n "$tsan_logs" ]; then
  # One file per process that reported (subprocesses of the tests included): any report fails.
  for log in "$tsan_logs"/tsan.*; do
    [ -e "$log" ] || continue
    echo "sanitize.sh: ThreadSanitizer report ($log):" >&2
    cat "$log" >&2
    [ "$rc" -ne 0 ] || rc=66
  done
fi
exit "$rc"
