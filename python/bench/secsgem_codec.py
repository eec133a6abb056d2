"""Baseline for `scripts/bench.sh codec`: secsgem 0.3.0 encoding and decoding the S6F11 body
that `secsgate::secs2::testdata::s6f11_body` builds (same values, same bytes), timed with
timeit. Prints {"encode_s6f11": ns, "decode_s6f11": ns} as JSON."""

import json
import timeit

import secsgem.secs.variables as v
from secsgem.secs.functions import SecsS06F11


def report(rptid):
    return {
        "RPTID": v.U4(rptid),
        "V": [
            v.U4(rptid * 100), v.F4(23.5), v.String("LOT-0001"), v.Boolean(True), v.I2(-40),
            v.U1(7), v.F8(1013.25), v.String("RECIPE_A"), v.U2(65000), v.I4(-123456),
        ],
    }


def main():
    message = SecsS06F11({"DATAID": v.U4(1), "CEID": v.U4(4001), "RPT": [report(1), report(2), report(3)]})
    body = message.encode()

    def decode():
        SecsS06F11().decode(body)

    result = {}
    for name, fn in (("encode_s6f11", message.encode), ("decode_s6f11", decode)):
        timer = timeit.Timer(fn)
        loops, _ = timer.autorange()
        best = min(timer.repeat(repeat=5, number=loops)) / loops
        result[name] = best * 1e9
    print(json.dumps(result))


if __name__ == "__main__":
    main()
