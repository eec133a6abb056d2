#!/usr/bin/env bash
# End-to-end and codec benchmarks, each printed beside a baseline measured in the same run.
#   scripts/bench.sh codec   SECS-II encode/decode (criterion) beside secsgem 0.3.0's
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/bench.sh codec" >&2; exit 2; }
[ $# -ge 1 ] || usage

bench_codec() {
  scripts/setup.sh
  echo "== codec: criterion (warm-up 1 s, measure 3 s per case)"
  cargo bench --quiet --bench codec -- --warm-up-time 1 --measurement-time 3 >/tmp/secsgate-bench-codec.log 2>&1 \
    || { cat /tmp/secsgate-bench-codec.log; exit 1; }
  echo "== codec: secsgem 0.3.0 on the same S6F11 body"
  .venv/bin/python python/bench/secsgem_codec.py > target/secsgem-codec.json
  .venv/bin/python - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion/codec")
def ns(case):
    est = json.loads((root / case / "new" / "estimates.json").read_text())
    return est["mean"]["point_estimate"]
base = json.loads(pathlib.Path("target/secsgem-codec.json").read_text())
print(f"{'case':<22}{'secsgate':>14}{'secsgem 0.3.0':>16}{'speed-up':>11}")
for op in ("encode", "decode"):
    for case in ("empty", "u4_1024", "s6f11", "nested_100k"):
        ours = ns(f"{op}_{case}")
        theirs = base.get(f"{op}_{case}")
        def fmt(v):
            return f"{v/1e6:.2f} ms" if v >= 1e6 else f"{v/1e3:.2f} us" if v >= 1e3 else f"{v:.1f} ns"
        line = f"{op + ' ' + case:<22}{fmt(ours):>14}"
        if theirs is not None:
            line += f"{fmt(theirs):>16}{theirs / ours:>10.0f}x"
        print(line)
d = base["decode_s6f11"] / ns("decode_s6f11")
u = ns("decode_u4_1024")
print()
print(f"target S6F11 decode >= 200x secsgem: {d:.0f}x -> {'met' if d >= 200 else 'NOT met'}")
print(f"target 1024-element U4 decode < 1 us: {u:.0f} ns -> {'met' if u < 1000 else 'NOT met'}")
print("target encode allocation-free into a reused buffer: checked by tests/alloc.rs")
PY
}

case "$1" in
  codec) bench_codec ;;
  *) usage ;;
esac
