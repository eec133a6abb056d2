"""Decodes Sparkplug B payloads with pysparkplug, a Sparkplug B implementation independent of
secsgate's, for the interop and end-to-end tests.

    decode(payload_bytes) -> {"timestamp": int | None, "seq": int | None,
                              "metrics": [{"name", "datatype", "value", "is_null"}, ...]}

`datatype` is the Sparkplug DataType number (Int64 = 4, UInt64 = 8, Double = 10,
Boolean = 11, String = 12, ...); `value` is the Python value pysparkplug reads for that
datatype (signed Int64 from its two's complement, None when null). `seq` is None on NDEATH
and commands, which carry none.
"""

import pysparkplug
from pysparkplug._protobuf import Payload  # the package's generated sparkplug_b_pb2.Payload

INT64 = int(pysparkplug.DataType.INT64)
UINT64 = int(pysparkplug.DataType.UINT64)
DOUBLE = int(pysparkplug.DataType.DOUBLE)
BOOLEAN = int(pysparkplug.DataType.BOOLEAN)
STRING = int(pysparkplug.DataType.STRING)


def decode(payload_bytes):
    """The payload's timestamp, seq and metrics, as read by pysparkplug."""
    payload = Payload.FromString(payload_bytes)
    metrics = []
    for pb_metric in payload.metrics:
        metric = pysparkplug.Metric.from_pb(pb_metric)
        metrics.append(
            {
                "name": metric.name,
                "datatype": int(metric.datatype),
                "value": None if metric.is_null else metric.value,
                "is_null": metric.is_null,
            }
        )
    return {
        "timestamp": payload.timestamp if payload.HasField("timestamp") else None,
        "seq": payload.seq if payload.HasField("seq") else None,
        "metrics": metrics,
    }


def metrics_by_name(decoded):
    """{name: metric} of a decode() result."""
    return {m["name"]: m for m in decoded["metrics"]}
