# Runs once Equip4 is communicating: the request/response examples of Ignition's
# "SECS/GEM Messages" page, each followed by getResponse, in Jython 2.7 style.
logger = system.util.getLogger("SECSGEM.Gateway.startup")

# Python - Send an S1F11 request to the Equipment
body = [{"format": "U4", "value": 4}]
transactionID = system.secsgem.sendRequest("S1F11", True, body, "Equip4")

# Python - Get an S1F12 response from the Equipment
response = system.secsgem.getResponse(transactionID, "Equip4")
print response
logger.info("S1F12 response: " + system.util.jsonEncode(response))

# S2F13 Body: the equipment constants of the "Message Handler Example Using the Simulator".
# The S2F14 reply is marked realtime in messages.sdl, so it also reaches
# onSecsGemRealtimeUpdate with CommonID = the ECV values.
body = [
{
"doc":"ECID, Equipment Constant ID",
"format":"U4",
"value":200
},
{
"doc":"ECID, Equipment Constant ID",
"format":"U4",
"value":201
},
{
"doc":"ECID, Equipment Constant ID",
"format":"U4",
"value":203
},
{
"doc":"ECID, Equipment Constant ID",
"format":"U4",
"value":205
},
{
"doc":"ECID, Equipment Constant ID",
"format":"U4",
"value":206
},
{
"doc":"ECID, Equipment Constant ID",
"format":"U4",
"value":207
}
]
try:
    transactionID = system.secsgem.sendRequest("S2F13", True, body, "Equip4")
    response = system.secsgem.getResponse(transactionID, "Equip4", 10)
    print response
    logger.info("S2F14 response: " + system.util.jsonEncode(response))
except Exception, e:
    logger.error("S2F13 failed: " + str(e))

# Simulator S2F23 Body: trace SVIDs 1, 2 and 3 every 2 seconds, 10 samples. The S6F1
# trace reports reach onSecsGemRealtimeUpdate (S6F1 is realtime in the standard SDL).
body = [
{
"doc":"TRID, Trace Request ID.",
"format":"U4",
"value":1
},
{
"doc":"DSPER, Data sample period.",
"format":"A",
"value":"000002"
},
{
"doc":"TOTSMP, Total Samples",
"format":"U4",
"value":10
},
{
"doc":"REPGSZ, Reporting Group Size",
"format":"U4",
"value":1
},
[
{
"doc":"SVID Status Variable ID",
"value":1,
"format":"U4"
},
{
"doc":"SVID Status Variable ID",
"value":2,
"format":"U4"
},
{
"doc":"SVID Status Variable ID",
"value":3,
"format":"U4"
}
]
]
try:
    transactionID = system.secsgem.sendRequest("S2F23", True, body, "Equip4")
    response = system.secsgem.getResponse(transactionID, "Equip4")
    print response
    logger.info("S2F24 response: " + system.util.jsonEncode(response))
except Exception, e:
    logger.error("S2F23 failed: " + str(e))

# Enable every collection event (S2F37 CEED true, no CEIDs) and run a lot on the simulator:
# its S6F11 event reports are answered by S6F12Handler with system.secsgem.sendResponse.
transactionID = system.secsgem.sendRequest("S2F37", True, [{"format": "Bool", "value": True}, []], "Equip4")
response = system.secsgem.getResponse(transactionID, "Equip4")
logger.info("S2F38 response: " + system.util.jsonEncode(response))
system.secsgem.startSimEventRun("Simulator1", "lot")
logger.info("started the simulator's lot event run")
