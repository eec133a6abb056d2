# Custom response for S6F11 (see project.toml): log the report, then acknowledge it.
import gem

log = system.util.getLogger("demo.events")
dataid, ceid, reports = gem.event_report(gem.message(payload)["body"])
log.infof("event %s (DATAID %s): %s", ceid, dataid, reports)

ack = {"format": "B", "value": 0, "doc": "ACKC6, Acknowledge Code", "codeDesc": "Accepted"}
system.secsgem.sendResponse(payload["TxID"], payload["SystemBytes"], "S6F12", ack, payload["Equipment"])
