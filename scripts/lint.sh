#!/usr/bin/env bash
# lint.sh [--fix] [ROOT]: formatting and lint checks of the lrkernels tree (for .ci/run).
#   C++:    clang-format --dry-run --Werror on cpp/**/*.h and cpp/**/*.cc (style: ROOT/.clang-format)
#   Python: ruff check and ruff format --check on python/ tests/ benchmarks/ scripts/
#           (settings: [tool.ruff] in ROOT/pyproject.toml)
# Runs all three checks and exits 1 if any failed. --fix rewrites the tree instead (clang-format -i,
# ruff check --fix, ruff format) and then checks again; what is left needs a hand edit.
# ROOT defaults to the git checkout this script lives in (put it in scripts/); LRK_LINT_ROOT also works.
#
# Tools: clang-format from Debian when missing (apt-get update && apt-get install -y clang-format:
# Debian 12 gives clang-format 14, the version .clang-format was tuned with; other major versions
# format a few constructs differently, so CI should use 14). ruff from pip when missing, pinned
# (RUFF_VERSION, default below) into ROOT/.venv-lint (ignored by .gitignore's /.venv*/), since ruff's
# formatter style and default rules change between releases. CLANG_FORMAT=... / RUFF=... override.
set -euo pipefail

RUFF_VERSION="${RUFF_VERSION:-0.17.6}"
CLANG_FORMAT_MAJOR=14
PY_DIRS=(python tests benchmarks scripts)

fix=0
if [ "${1:-}" = "--fix" ]; then
  fix=1
  shift
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="${1:-${LRK_LINT_ROOT:-$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || { cd "$here/.." && pwd; })}}"
cd "$root"
[ -f .clang-format ] || { echo "lint: no .clang-format in $root" >&2; exit 2; }
[ -f pyproject.toml ] || { echo "lint: no pyproject.toml in $root" >&2; exit 2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools ------------------------------------------------------------------------------------
clang_format="${CLANG_FORMAT:-}"
if [ -z "$clang_format" ]; then
  for c in "clang-format-$CLANG_FORMAT_MAJOR" clang-format; do
    if command -v "$c" >/dev/null 2>&1; then clang_format="$c"; break; fi
  done
fi
if [ -z "$clang_format" ]; then
  echo "lint: installing clang-format (Debian)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-format >/dev/null
  clang_format=clang-format
fi
cf_version="$("$clang_format" --version)"
if ! [[ "$cf_version" =~ version\ $CLANG_FORMAT_MAJOR\. ]]; then
  echo "lint: warning: $cf_version; .clang-format was tuned with clang-format $CLANG_FORMAT_MAJOR" >&2
fi

ruff="${RUFF:-}"
if [ -z "$ruff" ] && command -v ruff >/dev/null 2>&1; then ruff=ruff; fi
if [ -z "$ruff" ] && [ -x .venv-lint/bin/ruff ]; then ruff=.venv-lint/bin/ruff; fi
if [ -z "$ruff" ]; then
  echo "lint: installing ruff==$RUFF_VERSION into $root/.venv-lint"
  python3 -m venv .venv-lint
  .venv-lint/bin/python -m pip install --quiet "ruff==$RUFF_VERSION"
  ruff=.venv-lint/bin/ruff
fi
ruff_version="$("$ruff" --version)"
if [ "$ruff_version" != "ruff $RUFF_VERSION" ]; then
  echo "lint: warning: $ruff_version; the settings were checked with ruff $RUFF_VERSION" >&2
fi
echo "lint: $cf_version; $ruff_version; root $root"

# --- files ------------------------------------------------------------------------------------
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t cpp_files < <(git ls-files --cached --others --exclude-standard -- 'cpp/*.h' 'cpp/*.cc')
else
  mapfile -t cpp_files < <(find cpp -type f \( -name '*.h' -o -name '*.cc' \) | sort)
fi
py_dirs=()
for d in "${PY_DIRS[@]}"; do [ -d "$d" ] && py_dirs+=("$d"); done

if [ "$fix" -eq 1 ]; then
  echo "== fixing: clang-format -i, ruff check --fix, ruff format"
  "$clang_format" -i --style=file "${cpp_files[@]}"
  "$ruff" check --no-cache --fix --quiet "${py_dirs[@]}" || true
  "$ruff" format --no-cache --quiet "${py_dirs[@]}"
fi

# --- checks -----------------------------------------------------------------------------------
failed=()
echo "== clang-format --dry-run --Werror (${#cpp_files[@]} files under cpp/)"
if ! "$clang_format" --dry-run --Werror --style=file "${cpp_files[@]}"; then
  failed+=("clang-format (fix: $0 --fix, or clang-format -i on the files above)")
fi
echo "== ruff check ${py_dirs[*]}"
if ! "$ruff" check --no-cache "${py_dirs[@]}"; then
  failed+=("ruff check (many fixable: ruff check --fix)")
fi
echo "== ruff format --check ${py_dirs[*]}"
if ! "$ruff" format --no-cache --check "${py_dirs[@]}"; then
  failed+=("ruff format (fix: ruff format ${py_dirs[*]})")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'lint: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "lint: all clean"
