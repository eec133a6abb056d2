#!/usr/bin/env bash
# End-to-end and codec benchmarks, each printed beside a baseline measured in the same run.
#   scripts/bench.sh codec   SECS-II encode/decode (criterion) beside secsgem 0.3.0's
#   scripts/bench.sh hsms    S1F1/S1F2 round trips over 127.0.0.1 beside raw TCP ping-pong
#                            and secsgem 0.3.0's (HSMS_BENCH_PLACEMENTS=free,split,same)
#   scripts/bench.sh sim     S6F11 events/s from 1 and 100 simulators, memory per simulator,
#                            beside secsgem 0.3.0's GemEquipmentHandler -> GemHostHandler
#   scripts/bench.sh python  S6F11 events/s through onSecsGemRealtimeUpdate beside no handler,
#                            and the time from saving a handler to it handling a message
#   scripts/bench.sh burst   100,000 pipelined W-bit primaries to `secsgate sim` and `secsgate run`
#                            (no handler, realtime, custom response): messages/s and peak RSS,
#                            beside the 64-in-flight HSMS figure of the same run
#   scripts/bench.sh secs1   sequential S1F1/S1F2 round trips over SECS-I: a serial line paced at
#                            9,600 and 115,200 baud beside its own limit, an unpaced pty pair
#                            beside secsgem 0.3.0's host on the same kind of pair, and TCP
#   scripts/bench.sh store   the same S6F11 burst through `secsgate run` with the message store
#                            off and on (same run, in turns, best of 3), and database bytes
#                            per stored S6F11
#   scripts/bench.sh matching S6F11/s routed among 100 keyed SDL definitions (handlers by
#                            definition name) beside one S/F-level definition and mapping,
#                            with and without a handler, in turns, best of 5
#   scripts/bench.sh web     the web console with 1,000 connections: /api/overview latency and
#                            the live overview's cadence idle (baseline) and at 10,000 S6F11/s
#   scripts/bench.sh fleet   S6F11/s through one gateway to an MQTT broker (QoS 0 and 1) and into
#                            a PostgreSQL store beside both off (same run, in turns, best of 3);
#                            the forward queue's disk and memory per 100,000 messages
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/bench.sh codec|hsms|sim|python|burst|store|secs1|web|matching|fleet" >&2; exit 2; }
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

bench_sim() {
  scripts/setup.sh
  echo "== sim: secsgate simulators (benches/sim.rs: 100 idle simulators, then 1 and 100 flooding hosts that only acknowledge)"
  cargo bench --quiet --bench sim > target/secsgate-sim.jsonl 2>/tmp/secsgate-bench-sim.log \
    || { cat /tmp/secsgate-bench-sim.log; exit 1; }
  echo "== sim: secsgem 0.3.0 GemEquipmentHandler -> GemHostHandler (S6F11), and 100 idle handlers"
  .venv/bin/python python/bench/secsgem_sim.py events --count 2000 2>/dev/null > target/secsgem-sim.jsonl
  .venv/bin/python python/bench/secsgem_sim.py memory --count 100 2>/dev/null >> target/secsgem-sim.jsonl
  .venv/bin/python - <<'PY'
import json, pathlib
def load(path):
    rows = [json.loads(l) for l in pathlib.Path(path).read_text().splitlines() if l.startswith("{")]
    return {r["bench"]: r for r in rows}
ours = load("target/secsgate-sim.jsonl")
base = load("target/secsgem-sim.jsonl")
s6 = base["secsgem_s6f11"]["per_second"]
print(f"{'measure':<44}{'secsgate':>14}{'secsgem 0.3.0':>16}{'ratio':>9}")
one = ours["sim_one"]["per_second"]
many = ours["sim_hundred"]["per_second"]
print(f"{'S6F11/s, 1 simulator -> 1 acking host':<44}{one:>14,.0f}{s6:>16,.0f}{one / s6:>8.0f}x")
print(f"{'S6F11/s, 100 simulators -> 100 hosts':<44}{many:>14,.0f}{s6:>16,.0f}{many / s6:>8.0f}x")
m = ours["sim_memory"]
bm = base["secsgem_memory"]
print(f"{'memory per idle simulator (KiB)':<44}{m['per_simulator_kib']:>14.0f}{bm['per_handler_kib']:>16.0f}"
      f"{bm['per_handler_kib'] / max(m['per_simulator_kib'], 0.1):>8.1f}x")
print(f"  secsgate RSS {m['rss_before_kib']} KiB -> {m['rss_after_kib']} KiB with {m['simulators']} simulators;"
      f" secsgem RSS {bm['rss_before_kib']} KiB -> {bm['rss_after_kib']} KiB with {bm['handlers']} handlers")
print("  secsgate's hosts run in the simulators' process and share its 2 worker threads;"
      " secsgem's host and equipment are separate processes, each event sent and acknowledged in turn.")
PY
}

bench_python() {
  scripts/setup.sh
  echo "== python: S6F11 through the gateway, 64 in flight, best of 3 rounds of 50,000 events per case"
  cargo bench --quiet --bench python > target/secsgate-python.jsonl 2>/tmp/secsgate-bench-python.log \
    || { cat /tmp/secsgate-bench-python.log; exit 1; }
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["case"]: r for r in map(json.loads, pathlib.Path("target/secsgate-python.jsonl").read_text().splitlines())}
plain = rows["no_handler"]["events_per_s"]
handled = rows["realtime_handler"]["events_per_s"]
reload = rows["reload"]
print(f"{'case':<44}{'events/s':>12}")
print(f"{'no handler (baseline, same run)':<44}{plain:>12,.0f}")
print(f"{'onSecsGemRealtimeUpdate reading the payload':<44}{handled:>12,.0f}   ({handled / plain:.0%} of the baseline)")
message = rows["realtime_handler_message"]["events_per_s"]
label = "... and payload['Message'] (the JSON text)"
print(f"{label:<44}{message:>12,.0f}   ({message / plain:.0%} of the baseline)")
print(f"save a handler -> it handles the next message: median {reload['median_ms']:.0f} ms, max {reload['max_ms']:.0f} ms (5 saves)")
print()
print(f"target >= 50,000 handled events/s: {handled:,.0f} -> {'met' if handled >= 50000 else 'NOT met'}")
print(f"target reading the payload >= 60% of no handler: {handled / plain:.0%} -> {'met' if handled >= 0.6 * plain else 'NOT met'}")
print(f"target reload < 500 ms: {reload['max_ms']:.0f} ms -> {'met' if reload['max_ms'] < 500 else 'NOT met'}")
PY
}

bench_burst() {
  scripts/setup.sh
  cargo build --release --quiet --bin secsgate
  echo "== burst: 100,000 pipelined W-bit primaries from a plain socket, every reply checked in order"
  SECSGATE_BIN="$PWD/target/release/secsgate" cargo bench --quiet --bench burst > target/secsgate-burst.jsonl 2>/tmp/secsgate-bench-burst.log \
    || { cat /tmp/secsgate-bench-burst.log; exit 1; }
  echo "== burst: the 64-in-flight HSMS figure, same run (free placement)"
  HSMS_BENCH_PLACEMENTS=free cargo bench --quiet --bench hsms > target/secsgate-burst-hsms.jsonl 2>/tmp/secsgate-bench-hsms.log \
    || { cat /tmp/secsgate-bench-hsms.log; exit 1; }
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["bench"]: r for r in map(json.loads, pathlib.Path("target/secsgate-burst.jsonl").read_text().splitlines())}
hsms = {json.loads(l)["bench"]: json.loads(l) for l in pathlib.Path("target/secsgate-burst-hsms.jsonl").read_text().splitlines()}
inflight = hsms["secsgate_in_flight_64"]["per_second"]
labels = {
    "sim_s1f1": "secsgate sim, S1F1 W -> S1F2",
    "gateway_plain": "secsgate run, S6F11 W, no handler",
    "gateway_realtime": "secsgate run, S6F11 W, realtime handler",
    "gateway_custom": "secsgate run, S6F11 W, custom response",
}
print(f"{'burst of 100,000 (every reply checked)':<44}{'messages/s':>12}{'peak RSS':>12}{'of 64-in-flight':>17}")
for key, label in labels.items():
    r = rows[key]
    print(f"{label:<44}{r['per_second']:>12,.0f}{r['peak_rss_kib'] / 1024:>9.1f} MiB{r['per_second'] / inflight:>16.0%}")
print(f"{'HSMS endpoints, 64 in flight (same run)':<44}{inflight:>12,.0f}")
PY
}

bench_secs1() {
  scripts/setup.sh
  echo "== secs1: sequential S1F1 W / S1F2 round trips, secsgate host -> secsgate simulator (5 s each)"
  SECS1_BENCH_PYTHON="$PWD/.venv/bin/python" cargo bench --quiet --bench secs1 > target/secsgate-secs1.jsonl 2>/tmp/secsgate-bench-secs1.log \
    || { cat /tmp/secsgate-bench-secs1.log; exit 1; }
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["bench"]: r for r in map(json.loads, pathlib.Path("target/secsgate-secs1.jsonl").read_text().splitlines())}
print(f"{'line':<46}{'round trips/s':>14}{'line limit':>12}{'of limit':>10}")
for baud in (9600, 115200):
    r = rows[f"paced_{baud}"]
    limit = baud / 10 / r["bytes_per_round_trip"]
    print(f"{f'serial, paced at {baud:,} baud (8N1)':<46}{r['round_trips_per_second']:>14,.1f}{limit:>12,.1f}{r['round_trips_per_second'] / limit:>10.0%}")
pty = rows["pty"]
print(f"{'pty pair, unpaced':<46}{pty['round_trips_per_second']:>14,.1f}")
base = rows.get("secsgem_pty", {})
if "round_trips_per_second" in base:
    print(f"{'  secsgem 0.3.0 host, unpaced pty pair':<46}{base['round_trips_per_second']:>14,.1f}")
    print(f"  secsgate / secsgem: {pty['round_trips_per_second'] / base['round_trips_per_second']:.1f}x")
else:
    print(f"  secsgem 0.3.0 host, unpaced pty pair: failed ({base.get('error', 'no figure')})")
print(f"{'SECS-I over TCP, 127.0.0.1':<46}{rows['tcp']['round_trips_per_second']:>14,.1f}")
print(f"bytes on the line per round trip (ENQ/EOT/ACK both ways, S1F1 and S1F2 blocks): {rows['paced_9600']['bytes_per_round_trip']}")
print("line limit: baud / 10 bits per character / bytes per round trip, as if the line were never idle")
PY
}

bench_store() {
  scripts/setup.sh
  cargo build --release --quiet --bin secsgate
  echo "== store: 100,000 pipelined S6F11 W through secsgate run, message store off and on"
  BURST_CASES=store SECSGATE_BIN="$PWD/target/release/secsgate" cargo bench --quiet --bench burst > target/secsgate-store.jsonl 2>/tmp/secsgate-bench-store.log \
    || { cat /tmp/secsgate-bench-store.log; exit 1; }
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["bench"]: r for r in map(json.loads, pathlib.Path("target/secsgate-store.jsonl").read_text().splitlines())}
off, on = rows["store_off"], rows["store_on"]
cost = 1 - on["per_second"] / off["per_second"]
print(f"{'burst of 100,000 S6F11 W (every reply checked)':<48}{'messages/s':>12}{'peak RSS':>12}")
print(f"{'secsgate run, store off (baseline)':<48}{off['per_second']:>12,.0f}{off['peak_rss_kib'] / 1024:>9.1f} MiB")
print(f"{'secsgate run, store on':<48}{on['per_second']:>12,.0f}{on['peak_rss_kib'] / 1024:>9.1f} MiB")
print(f"store cost at the most messages/s the gateway takes (a burst sent all at once): {cost:.0%}")
p_off, p_on = rows["paced_store_off"], rows["paced_store_on"]
p_cost = 1 - p_on["per_second"] / p_off["per_second"]
print(f"{'S6F11 W offered at 50,000/s':<48}{'messages/s':>12}{'CPU/msg':>12}")
print(f"{'secsgate run, store off (baseline)':<48}{p_off['per_second']:>12,.0f}{p_off['cpu_us_per_message']:>9.1f} us")
print(f"{'secsgate run, store on':<48}{p_on['per_second']:>12,.0f}{p_on['cpu_us_per_message']:>9.1f} us")
print(f"target: the store costs < 20% of throughput at 50,000 messages/s: {p_cost:.1%} -> {'met' if p_cost < 0.20 else 'NOT met'}")
c_off, c_on = rows["store_off_cpu"]["cpu_us_per_message"], rows["store_on_cpu"]["cpu_us_per_message"]
print(f"CPU per S6F11 (gateway process, all threads): store off {c_off:.1f} us, on {c_on:.1f} us")
for rate in (50_000,):
    print(f"at {rate:,} S6F11/s: {rate * c_off / 1e6:.0%} of a core with the store off, {rate * c_on / 1e6:.0%} on; "
          f"store on keeps up: {'yes' if on['per_second'] >= rate else 'NO'}")
print(f"database bytes per stored S6F11 (with its S6F12 row, indices, WAL): {rows['store_bytes_per_s6f11']['bytes']:,.0f}")
PY
}

bench_matching() {
  scripts/setup.sh
  echo "== matching: S6F11 through the gateway, 64 in flight, best of 5 rounds of 50,000 events per case, in turns (store off)"
  cargo bench --quiet --bench matching > target/secsgate-matching.jsonl 2>/tmp/secsgate-bench-matching.log \
    || { cat /tmp/secsgate-bench-matching.log; exit 1; }
  # Rates move with whatever else the machine runs; instructions per event do not. Under
  # valgrind (if installed), each case runs 2,000 and then 12,000 events: the difference of
  # the two counts over 10,000 is the cost of one event, start-up left out.
  : > target/secsgate-matching-ir.txt
  if command -v valgrind >/dev/null 2>&1; then
    echo "== matching: instructions per event under valgrind (callgrind), the same cases"
    bin=$(cargo bench --bench matching --no-run --message-format=json 2>/dev/null \
      | .venv/bin/python -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "matching"][-1])')
    for c in sf_handler keyed_handler sf_no_handler keyed_no_handler; do
      for n in 2000 12000; do
        ir=$(MATCHING_CASES=$c MATCHING_EVENTS=$n MATCHING_ROUNDS=1 valgrind --tool=callgrind \
          --callgrind-out-file=/dev/null "$bin" 2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ,)
        echo "$c $n $ir" >> target/secsgate-matching-ir.txt
      done
    done
  else
    echo "== matching: valgrind is not installed; no instruction counts"
  fi
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["case"]: r for r in map(json.loads, pathlib.Path("target/secsgate-matching.jsonl").read_text().splitlines())}
ir = {}
for line in pathlib.Path("target/secsgate-matching-ir.txt").read_text().splitlines():
    case, n, count = line.split()
    ir.setdefault(case, {})[int(n)] = int(count)
per_event = {c: (v[12000] - v[2000]) / 10000 for c, v in ir.items() if 2000 in v and 12000 in v}
ns = rows["matching_ns"]
print(f"{'case':<62}{'events/s':>10}{'CPU/event':>11}")
worst = 0.0
for kind, label in (("handler", "a handler ([[equipment.handler]])"), ("no_handler", "no handler")):
    sf, keyed = rows[f"sf_{kind}"], rows[f"keyed_{kind}"]
    cost = 1 - keyed["events_per_s"] / sf["events_per_s"]
    cpu = keyed["cpu_us"] / sf["cpu_us"] - 1
    worst = max(worst, cost)
    print(f"{'one S/F-level definition and mapping, ' + label + ' (baseline)':<62}{sf['events_per_s']:>10,.0f}{sf['cpu_us']:>8.1f} us")
    print(f"{'100 keyed definitions, mapped by name, ' + label:<62}{keyed['events_per_s']:>10,.0f}{keyed['cpu_us']:>8.1f} us"
          f"   (cost {cost:+.1%} events/s, {cpu:+.1%} CPU)")
print(f"Sdl::matching alone: {ns['sf']:.0f} ns for one definition, {ns['keyed']:.0f} ns among 100 keyed ones (the CEIDs cycling through all keys)")
print("CPU/event: the whole process (the equipment's side too), least of the rounds")
worst_ir = None
if per_event:
    print()
    print(f"{'instructions per event (valgrind; the whole process)':<62}{'S/F-level':>12}{'100 keyed':>12}{'cost':>8}")
    worst_ir = 0.0
    for kind in ("handler", "no_handler"):
        sf, keyed = per_event[f"sf_{kind}"], per_event[f"keyed_{kind}"]
        worst_ir = max(worst_ir, keyed / sf - 1)
        print(f"{'  with ' + kind.replace('_', ' '):<62}{sf:>12,.0f}{keyed:>12,.0f}{keyed / sf - 1:>+8.1%}")
print()
print(f"target routing by content costs < 10% of events/s: worst {worst:.1%} -> {'met' if worst < 0.10 else 'NOT met'}"
      " (rates on a shared machine move by 10-15% from run to run)")
if worst_ir is not None:
    print(f"same target in instructions per event: worst {worst_ir:+.1%} -> {'met' if worst_ir < 0.10 else 'NOT met'}")
PY
}

bench_web() {
  scripts/setup.sh
  echo "== web: 1,000 connections (in-process simulators), idle and at 10,000 S6F11/s"
  cargo bench --quiet --bench web > target/secsgate-web.jsonl 2>/tmp/secsgate-bench-web.log \
    || { cat /tmp/secsgate-bench-web.log; exit 1; }
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["bench"]: r for r in map(json.loads, pathlib.Path("target/secsgate-web.jsonl").read_text().splitlines())}
idle, busy = rows["idle"], rows["traffic"]
print(f"{'1,000 connections':<34}{'overview median':>16}{'worst':>9}{'size':>10}{'live gap':>10}{'worst':>9}{'S6F11 received/s':>19}")
for name, r in (("idle (baseline)", idle), ("10,000 S6F11/s, 3 live readers", busy)):
    print(f"{name:<34}{r['overview_ms_median']:>13.1f} ms{r['overview_ms_max']:>6.0f} ms{r['overview_bytes'] / 1024:>7.0f} KiB"
          f"{r['live_gap_ms_median']:>7.0f} ms{r['live_gap_ms_max']:>6.0f} ms{r['received_per_second']:>19,.0f}")
ok = busy["overview_ms_max"] < 1000 and busy["live_gap_ms_max"] < 2000
print(f"target: pages responsive (overview < 1 s, live updates every ~1 s) under load: {'met' if ok else 'NOT met'}")
PY
}

bench_fleet() {
  scripts/setup.sh
  fleet_dir=$(mktemp -d /tmp/secsgate-fleet-bench.XXXXXX)
  # The PostgreSQL server runs as its own user when this runs as root: let it through.
  chmod 755 "$fleet_dir"
  # The servers, on loopback ports, stopped by their PIDs however this ends.
  trap 'scripts/mosquitto.sh stop "$fleet_dir/mqtt" >/dev/null 2>&1 || true; scripts/pg.sh stop "$fleet_dir/pg" >/dev/null 2>&1 || true; rm -rf "$fleet_dir"' EXIT
  FLEET_MQTT_PORT=$(scripts/mosquitto.sh start "$fleet_dir/mqtt")
  FLEET_PG_URL=$(scripts/pg.sh start "$fleet_dir/pg")
  export FLEET_MQTT_PORT FLEET_PG_URL
  echo "== fleet: S6F11 through one gateway, 64 in flight, best of 3 rounds of 50,000 per case, in turns"
  cargo bench --quiet --bench fleet > target/secsgate-fleet.jsonl 2>/tmp/secsgate-bench-fleet.log \
    || { cat /tmp/secsgate-bench-fleet.log; exit 1; }
  .venv/bin/python - <<'PY'
import json, pathlib
rows = {r["case"]: r for r in map(json.loads, pathlib.Path("target/secsgate-fleet.jsonl").read_text().splitlines())}
base = rows["both_off"]["events_per_s"]
print(f"{'case':<44}{'S6F11/s':>10}{'of baseline':>13}   rounds")
for case, label in (("both_off", "MQTT and PostgreSQL off (baseline)"), ("mqtt_qos0", "MQTT QoS 0 (until the subscriber has it)"),
                    ("mqtt_qos1", "MQTT QoS 1 (until the subscriber has it)"), ("postgres", "PostgreSQL store (until written)")):
    r = rows[case]
    print(f"{label:<44}{r['events_per_s']:>10,.0f}{r['events_per_s'] / base:>12.0%}   {r['rounds']}")
away, b = rows["broker_away"], rows["broker_away_baseline"]
n = away["events"]
print(f"broker away, {n:,} S6F11: {away['events_per_s']:,.0f}/s (MQTT off: {b['events_per_s']:,.0f}/s); "
      f"forward queue {away['queued']:,} publishes, {away['disk_bytes'] / n * 100000 / 2**20:.1f} MiB on disk per 100,000; "
      f"resident memory +{(away['rss_after_kib'] - away['rss_before_kib']) / 1024:.1f} MiB (MQTT off: +{(b['rss_after_kib'] - b['rss_before_kib']) / 1024:.1f} MiB)")
PY
}

case "$1" in
  codec) bench_codec ;;
  hsms) bench_hsms ;;
  sim) bench_sim ;;
  python) bench_python ;;
  burst) bench_burst ;;
  store) bench_store ;;
  secs1) bench_secs1 ;;
  matching) bench_matching ;;
  web) bench_web ;;
  fleet) bench_fleet ;;
  *) usage ;;
esac
