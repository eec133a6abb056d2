# Every primary message the tool sends arrives here after it was answered.
import gem

log = system.util.getLogger("demo.realtime")
message = gem.message(payload)
if payload["StreamFunction"] == "S6F11":
    dataid, ceid, reports = gem.event_report(message["body"])
    log.infof("%s: event report CEID %s with %d report(s)", payload["Equipment"], ceid, len(reports))
elif payload["StreamFunction"] == "S5F1":
    alcd, alid, altx = gem.value(message["body"])
    log.infof("%s: alarm %s %s: %s", payload["Equipment"], alid, "set" if alcd & 0x80 else "cleared", altx)
else:
    log.infof("%s: %s (TxID %s)", payload["Equipment"], payload["StreamFunction"], payload["TxID"])
