"""Helpers for the demo handlers: reading SECS message bodies in their JSON form."""

import json

import system  # library modules import the injected module like any other


def message(payload):
    """The message of a handler payload as a dict {"header", "body"}."""
    return json.loads(payload["Message"])


def value(item):
    """The value of an item dict, or a list of values for a list."""
    if isinstance(item, list):
        return [value(i) for i in item]
    return item.get("value")


def event_report(body):
    """An S6F11 body as (dataid, ceid, {rptid: [values]})."""
    dataid, ceid, reports = body
    return value(dataid), value(ceid), {value(r[0]): value(r[1]) for r in reports}


def send(equipment, stream_function, body, timeout=10):
    """Sends a W-bit request and returns the reply's body, or raises if none came."""
    tx = system.secsgem.sendRequest(stream_function, True, body, equipment)
    reply = system.secsgem.getResponse(tx, equipment, timeout)
    if reply is None:
        raise RuntimeError("no reply to %s from %s" % (stream_function, equipment))
    return reply["body"]


def u4(n):
    return {"format": "U4", "value": n}
