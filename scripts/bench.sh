#!/usr/bin/env bash
# End-to-end and codec benchmarks, each printed beside a baseline measured in the same run.
#   scripts/bench.sh codec   SECS-II encode/decode (criterion) beside secsgem 0.3.0's
#   scripts/bench.sh hsms    S1F1/S1F2 round trips over 127.0.0.1 beside raw TCP ping-pong
#                            and secsgem 0.3.0's (HSMS_BENCH_PLACEMENTS=free,split,same)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/bench.sh codec|hsms" >&2; exit 2; }
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

bench_hsms() {
  scripts/setup.sh
  local placements="${HSMS_BENCH_PLACEMENTS:-free,split,same}"
  echo "== hsms: secsgate endpoints and raw TCP ping-pong (warm-up 0.5 s, measure 3 s each)"
  HSMS_BENCH_PLACEMENTS="$placements" cargo bench --quiet --bench hsms \
    >target/secsgate-hsms.jsonl 2>/tmp/secsgate-bench-hsms.log \
    || { cat /tmp/secsgate-bench-hsms.log; exit 1; }
  echo "== hsms: secsgem 0.3.0 host and equipment (warm-up 0.3 s, measure 2 s each)"
  .venv/bin/python python/bench/secsgem_hsms.py --placements "$placements" > target/secsgem-hsms.jsonl
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {}
for path in ("target/secsgate-hsms.jsonl", "target/secsgem-hsms.jsonl"):
    for line in pathlib.Path(path).read_text().splitlines():
        d = json.loads(line)
        rows[(d["bench"], d["placement"])] = d
places = [p for p in ("free", "split", "same") if ("secsgate_sequential", p) in rows]
def rate(bench, p):
    d = rows.get((bench, p))
    return d["per_second"] if d else None
def fmt(v, kind):
    if v is None:
        return "-"
    return {"rate": f"{v:,.0f}", "pct": f"{v:.1%}", "x": f"{v:.1f}x"}[kind]
table = [
    ("raw TCP ping-pong, round trips/s", "rate", lambda p: rate("raw_tcp_pingpong", p)),
    ("secsgate sequential, round trips/s", "rate", lambda p: rate("secsgate_sequential", p)),
    ("  of raw ping-pong", "pct", lambda p: rate("secsgate_sequential", p) / rate("raw_tcp_pingpong", p)),
    ("secsgem 0.3.0 sequential, round trips/s", "rate", lambda p: rate("secsgem_sequential", p)),
    ("  secsgate / secsgem", "x", lambda p: rate("secsgem_sequential", p) and rate("secsgate_sequential", p) / rate("secsgem_sequential", p)),
    ("  raw ping-pong / secsgem (the ceiling)", "x", lambda p: rate("secsgem_sequential", p) and rate("raw_tcp_pingpong", p) / rate("secsgem_sequential", p)),
    ("secsgate 64 in flight, messages/s", "rate", lambda p: rate("secsgate_in_flight_64", p)),
]
print(f"{'placement':<42}" + "".join(f"{p:>12}" for p in places))
for label, kind, f in table:
    print(f"{label:<42}" + "".join(f"{fmt(f(p), kind):>12}" for p in places))
frames = rows[("raw_tcp_pingpong", places[0])]
print()
print(f"frames: S1F1 W {frames['request_bytes']} bytes, S1F2 <L [2] <A \"MDLN\"> <A \"1.0\">> {frames['reply_bytes']} bytes;"
      " 64 in flight counts each completed S1F1/S1F2 round trip once")
print("placement: free = the scheduler decides; split = host side on core 0, equipment side on core 1;"
      " same = both sides on core 0")
print()
def target(text, value, ok, kind):
    parts = [f"{p} {fmt(value(p), kind)} {'met' if ok(p) else 'NOT met'}" for p in places]
    print(f"target {text}: " + "; ".join(parts))
seq = lambda p: rate("secsgate_sequential", p)
ratio = lambda p: seq(p) / rate("raw_tcp_pingpong", p)
vs = lambda p: rate("secsgem_sequential", p) and seq(p) / rate("secsgem_sequential", p)
par = lambda p: rate("secsgate_in_flight_64", p)
target("sequential >= 70% of raw ping-pong", ratio, lambda p: ratio(p) >= 0.70, "pct")
target("sequential >= 30x secsgem 0.3.0", vs, lambda p: bool(vs(p)) and vs(p) >= 30, "x")
target("64 in flight >= 100,000 messages/s", par, lambda p: par(p) >= 100_000, "rate")
PY
}



case "$1" in
  codec) bench_codec ;;
  hsms) bench_hsms ;;
  *) usage ;;
esac
