"""SECS-II interop: secsgem==0.3.0 and `secsgate sml` agree on the bytes of every format, in
both directions, and secsgate reads secsgem's SML dialect."""

import json

import pytest
import secsgem.secs.variables as v
from secsgem.secs.functions import SecsS02F33, SecsS06F11

CASES = [
    (v.U4(1337), "U4", 1337),
    (v.U4([]), "U4", []),
    (v.U1([1, 2, 255]), "U1", [1, 2, 255]),
    (v.U2([0, 65535]), "U2", [0, 65535]),
    (v.U8(18446744073709551615), "U8", 18446744073709551615),
    (v.I1(-128), "I1", -128),
    (v.I2([-345, 7]), "I2", [-345, 7]),
    (v.I4(-2147483648), "I4", -2147483648),
    (v.I8([123, -345]), "I8", [123, -345]),
    (v.F4(2.5), "F4", 2.5),
    (v.F8([1013.25, -1e300]), "F8", [1013.25, -1e300]),
    (v.Boolean([True, False, True]), "Bool", [True, False, True]),
    (v.Binary(b"\x01\x0b\x19"), "B", [1, 11, 25]),
    (v.String("LOT-0001"), "A", "LOT-0001"),
    (v.String(""), "A", ""),
    (v.JIS8("testString"), "J", "testString"),
]


@pytest.mark.parametrize("var,fmt,value", CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_secsgem_bytes_decode_to_the_json_form(secsgate, var, fmt, value):
    hexbytes = var.encode().hex()
    out = secsgate("sml", "decode", "--json", "--compact", hexbytes)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"format": fmt, "value": value}
    # and back: the JSON form encodes to secsgem's exact bytes
    back = secsgate("sml", "encode", "--json", out.stdout)
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == hexbytes


@pytest.mark.parametrize("var,fmt,value", CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_secsgem_sml_dialect_parses_to_the_same_bytes(secsgate, var, fmt, value):
    out = secsgate("sml", "encode", str(var))
    assert out.returncode == 0, f"{var}: {out.stderr}"
    assert out.stdout.strip() == var.encode().hex()


def s6f11():
    def report(rptid):
        return {"RPTID": v.U4(rptid), "V": [v.U4(rptid * 100), v.F4(23.5), v.String("LOT"), v.Boolean(True)]}

    return SecsS06F11({"DATAID": v.U4(1), "CEID": v.U4(4001), "RPT": [report(1), report(2)]})


def test_message_sml_from_secsgem_encodes_identically(secsgate):
    message = s6f11()
    out = secsgate("sml", "encode", str(message))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == message.encode().hex()


def test_secsgate_bytes_decode_in_secsgem(secsgate):
    sml = """S2F33 W
    <L [2]
      <U4 10>                     // DATAID
      <L [1]
        <L [2] <U4 5> <L [2] <U4 1001> <U4 1002>>>
      >
    > ."""
    out = secsgate("sml", "encode", sml)
    assert out.returncode == 0, out.stderr
    decoded = SecsS02F33()
    decoded.decode(bytes.fromhex(out.stdout.strip()))
    assert decoded.get() == {"DATAID": 10, "DATA": [{"RPTID": 5, "VID": [1001, 1002]}]}


def test_frame_round_trip_through_the_cli(secsgate):
    message = s6f11()
    out = secsgate("sml", "encode", "--frame", "--device-id", "7", "--system-bytes", "305419896", str(message))
    assert out.returncode == 0, out.stderr
    frame = bytes.fromhex(out.stdout.strip())
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert frame[4:14].hex() == "0007860b000012345678"  # device 7, W + S6, F11, system
    assert frame[14:] == message.encode()
    back = secsgate("sml", "decode", "--frame", "--json", "--compact", out.stdout)
    assert back.returncode == 0, back.stderr
    parsed = json.loads(back.stdout)
    assert parsed["header"] == {"stream": 6, "function": 11, "reply": True}
    assert parsed["body"][0] == {"format": "U4", "value": 1}


@pytest.mark.parametrize(
    "args,stdin,needle",
    [
        (["sml", "encode", "<L [2] <U4 1>>"], None, "line 1, column 5: L item declares [2] but holds 1"),
        (["sml", "encode", "<U1 300>"], None, "out of range"),
        (["sml", "encode", "--json", '[{"format": "U1", "value": [1, -1]}]'], None, "body[0].value[1]"),
        (["sml", "encode", "--json", "{not json"], None, "invalid JSON"),
        (["sml", "decode", "0102a50101"], None, "at byte 0: list declares 2 items but only 1"),
        (["sml", "decode", "b10300000001"], None, "not a multiple of its element size"),
        (["sml", "decode"], "4105616263", "declares 5 bytes but only 3 remain"),
        (["sml", "decode", "zz"], None, "not a hex digit"),
        (["sml", "encode", "--frame", "<U4 1>"], None, "--frame needs a whole message"),
    ],
)
def test_bad_input_exits_2_with_one_line(secsgate, args, stdin, needle):
    out = secsgate(*args, stdin=stdin)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]


def test_stdin_input(secsgate):
    out = secsgate("sml", "encode", stdin="S1F1 W .\n")
    assert out.returncode == 0
    assert out.stdout.strip() == ""
    out = secsgate("sml", "decode", "--compact", stdin="01 02 41 01 61 b1 00\n")
    assert out.stdout.strip() == '<L [2] <A "a"> <U4>>'
