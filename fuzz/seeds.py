#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets into fuzz/corpus/<target>/ (named by content hash,
so running it again adds nothing new). Seeds come from the byte vectors in
../shared/vectors/secs2_vectors.json (or $SECSGATE_SHARED/vectors/...), the repository's SDL
files and simulator configs, and a few hand-written SML and JSON forms. A missing vector file
is reported and skipped: the hand-written and repository seeds still go in."""

import hashlib
import json
import os
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
counts = {}


def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    path = d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])
    if not path.exists():
        path.write_bytes(data)
    counts[target] = counts.get(target, 0) + 1


def vectors():
    shared = os.environ.get("SECSGATE_SHARED")
    base = Path(shared) if shared else ROOT.parent / "shared"
    path = base / "vectors" / "secs2_vectors.json"
    if not path.exists():
        print(f"seeds: {path} not found; vector seeds skipped", file=sys.stderr)
        return []
    return json.loads(path.read_text())


def control(stype, system_bytes, byte3=0):
    return struct.pack(">IHBBBBI", 10, 0xFFFF, 0, byte3, 0, stype, system_bytes)


def data_frame(stream, function, w, system_bytes, body=b""):
    return struct.pack(
        ">IHBBBBI", 10 + len(body), 0, (0x80 if w else 0) | stream, function, 0, 0, system_bytes
    ) + body


# hsms_protocol inputs: a setup byte, then operations (see fuzz_targets/hsms_protocol.rs).
SELECTED_PASSIVE, SELECTED_ACTIVE_LINKTEST, CONNECTED_PASSIVE = 0b1000, 0b1011, 0b0100
OP_FEED, OP_FRAME, OP_TIME, OP_DEADLINE, OP_SEND, OP_LINKTEST = 0, 1, 2, 3, 4, 5


def feed(frame):
    out = b""
    while frame:
        chunk, frame = frame[:255], frame[255:]
        out += bytes([OP_FEED, len(chunk)]) + chunk
    return out


def main():
    for v in vectors():
        raw = bytes.fromhex(v["hex"])
        kind = v["kind"]
        if kind in ("secs2_item", "secs2_decode_invalid", "secs2_decode_only", "item_header"):
            seed("item_decode", raw)
            if kind == "secs2_item":
                frame = data_frame(6, 11, True, 7, raw)
                seed("hsms_frame", frame)
                seed("hsms_protocol", bytes([SELECTED_PASSIVE]) + feed(frame))
        if kind in ("hsms_frame", "hsms_header"):
            seed("hsms_frame", raw)
            seed("hsms_protocol", bytes([SELECTED_PASSIVE]) + feed(raw))
            seed("hsms_protocol", bytes([CONNECTED_PASSIVE]) + feed(raw))
        if kind == "secs1_block":
            # A host (setup 0) and an equipment (setup 1) each offered the block after an ENQ.
            for setup in (0, 1):
                seed("secs1_protocol", bytes([setup, 0, 1, 0x05]) + feed(raw))
        if v.get("sml") and kind in ("secs2_item", "secs2_decode_only"):
            seed("sml_parse", v["sml"])

    # SECS-I: a host sends S1F1 W and the line answers EOT, ACK; time runs out; contention.
    seed("secs1_protocol", bytes([0, 4, 0x81, 1, 0, 8, 2, 0, 1, 3, 3]))
    seed("secs1_protocol", bytes([1, 4, 0x81, 1, 30, 8, 4, 0, 1, 0, 1, 3, 3, 3]))

    # Protocol sessions: select, a transaction answered, linktests, T3 and T6 running out.
    seed("hsms_protocol", bytes([CONNECTED_PASSIVE]) + feed(control(1, 5)) + bytes([OP_DEADLINE]))
    seed(
        "hsms_protocol",
        bytes([SELECTED_ACTIVE_LINKTEST, OP_SEND, 0x81, 3, 1])
        + feed(data_frame(1, 4, False, 2, bytes.fromhex("0100")))
        + bytes([OP_LINKTEST, OP_FRAME, 6, 0, 0, 0, 0, 3, OP_DEADLINE, OP_DEADLINE]),
    )
    seed("hsms_protocol", bytes([SELECTED_PASSIVE, OP_SEND, 0x81, 1, 0, OP_TIME, 200, OP_DEADLINE]))

    for text in [
        "S1F3 W <L [2] <U4 1> <U4 2>> .",
        "Name:'S2F41' W /* c */ <L,2 <A 'START'> <L>> .",
        '<L <A "line\\n" 0x41> <A "\\x01"> <A \'C:\\recipes\\new\'> <A[1] \'MDLN\'>>',
        "<L <BOOLEAN TRUE F 1 0x02> <B 0x01 0b11> <U4> <I2 -0x10> <F8 1e-3 NaN -inf>>",
        "<L <F4 NaN=0x7FC00001 -0 inf> <F8 NaN=0xFFF8000000000000 1.7976931348623157e308>>",
        '<L <J "¥ｱ"> <W "日本"> <W lsh=1 "ab"> <W lsh=8 0x82 0xA0>> // comment',
        "S1F1 W .\nS1F2 <L> .\nS6F11 W <L [3] <U4 1> <U4 2> <L>>",
    ]:
        seed("sml_parse", text)

    for value in [
        {"header": {"stream": 1, "function": 11, "reply": True},
         "body": [{"format": "U4", "value": 4}, {"format": "U4", "value": [5, 6]}]},
        {"header": {"stream": 1, "function": 3, "reply": "True"}, "body": ""},
        [{"format": "Bool", "value": [True, 0, 2]}, {"format": "B", "value": "0x01ff"},
         {"format": "B", "value": "AQI="}, {"format": "A", "value": "MDLN"},
         {"format": "J", "value": [128]}, {"format": "W", "lsh": 3, "value": "ab"}],
        [{"format": "F4", "value": ["NaN", "NaN=0x7FC00001", -0.0, 0.1]},
         {"format": "F8", "value": ["Infinity", "-Infinity", 1e-300]},
         {"format": "I8", "value": -9223372036854775808}, {"format": "U8", "value": "0xFF"}],
        {"format": "L", "value": [{"format": "U1", "value": [1, 2]}, []]},
        "[{\"format\":\"U1\",\"value\":[1,2]}]",
    ]:
        seed("json_parse", json.dumps(value))

    for sdl in sorted(ROOT.glob("sdl/*.sdl")) + sorted(ROOT.glob("projects/*/*.sdl")):
        text = sdl.read_text()
        seed("sdl_load", text)
        # Smaller inputs mutate faster: the file with one stream's messages at a time.
        doc = json.loads(text)
        for stream, functions in doc.get("messages", {}).items():
            small = dict(doc, messages={stream: functions})
            seed("sdl_load", json.dumps(small, ensure_ascii=False, indent=1))

    configs = [p.read_text() for p in sorted(ROOT.glob("sdl/*.toml"))]
    common = ROOT / "tests" / "gem_common" / "mod.rs"
    if common.exists():
        configs += re.findall(r'r#"(.*?)"#', common.read_text(), re.S)
    for text in configs:
        seed("sim_config", text)
        # Each table on its own, after the [equipment] table when there is one.
        sections = re.split(r"(?m)^(?=\[)", text)
        equipment = next((s for s in sections if s.startswith("[equipment]")), "")
        for s in sections:
            if s.strip():
                seed("sim_config", s if s is equipment else equipment + s)

    print("seeds: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
