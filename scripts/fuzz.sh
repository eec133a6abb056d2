#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after another, and
# prints each target's executions and whether it crashed. Exits non-zero if any target crashed
# (or timed out, or ran out of memory); the input that did it is left in
# fuzz/artifacts/<target>/ (replay it: cargo +nightly fuzz run -s none -a <target> <file>).
#
# Installs what it needs when missing: the nightly toolchain (cargo-fuzz builds with it) and
# cargo-fuzz itself. Seeds from the shared byte vectors, the SDL files and the simulator
# configs are written to fuzz/corpus/<target>/ by fuzz/seeds.py; what libFuzzer finds is kept
# there too (not in git), so later runs start further on.
#
# The fuzzed code is safe Rust, so targets build without a sanitizer (twice the executions of
# AddressSanitizer, which would find nothing more) but with debug assertions (overflow checks).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS]   (seconds per target, default 60)" >&2
  exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

python3 fuzz/seeds.py

flags=(--sanitizer none --debug-assertions)
# The fuzz build (nightly, instrumented) takes minutes from nothing: keep it outside the
# checkout so later runs, and fresh clones on the same machine, reuse it.
export CARGO_TARGET_DIR="${SECSGATE_FUZZ_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/secsgate/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"
cd fuzz
start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: build took $(( $(date +%s) - start )) s"

targets=$(cargo +nightly fuzz list)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
printf '%-15s %15s  %s\n' target executions result
for t in $targets; do
  mkdir -p "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  status=0
  cargo +nightly fuzz run "${flags[@]}" "$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$logs/$t" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t" | tail -1 | grep -o '[0-9]*$' || true)
  found=$(( $(ls "artifacts/$t" | wc -l) - before ))
  if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
    failed=1
    result="CRASHED (exit $status, $found new in fuzz/artifacts/$t)"
  else
    result="ok, no crashes"
  fi
  printf '%-15s %15s  %s\n' "$t" "${execs:-?}" "$result"
  if [ "$status" -ne 0 ]; then
    # The panic message and the input's file name.
    grep -E "panicked at|^thread|Test unit written|SUMMARY|ERROR:" "$logs/$t" | head -8 | sed 's/^/    /'
  fi
done
exit "$failed"
