# Runs once when the gateway has started and Tool1 is communicating.
import gem

log = system.util.getLogger("demo.startup")

# Read the tool's clock and two live status variables with S1F3.
svids = [2001, 1, 2]                       # Clock, ChamberTemperature, WaferCounter
tx = system.secsgem.sendRequest("S1F3", True, [gem.u4(s) for s in svids], "Tool1")
reply = system.secsgem.getResponse(tx, "Tool1", 5)
log.info("S1F3 reply: %s" % system.util.jsonEncode(reply))
for svid, sv in zip(svids, gem.value(reply["body"])):
    log.infof("  SV %d = %s", svid, sv)

# Define a report (clock, lot and recipe), link it to the lot events, enable them.
gem.send("Tool1", "S2F33", [gem.u4(1), [[gem.u4(9000), [gem.u4(2001), gem.u4(6), gem.u4(5)]]]])
gem.send("Tool1", "S2F35", [gem.u4(2), [[gem.u4(102), [gem.u4(9000)]], [gem.u4(103), [gem.u4(9000)]]]])
gem.send("Tool1", "S2F37", [{"format": "Bool", "value": True}, []])
log.info("report 9000 linked to LotStarted (102) and LotCompleted (103); events enabled")

# Run a lot on the simulator: its S6F11 reports reach onEventReport and the realtime handler.
system.secsgem.startSimEventRun("Sim1", "lot")
log.info("started the simulator's 'lot' event run")
