"""A secsgem==0.3.0 GemEquipmentHandler for interop tests and benchmarks.

    python secsgem_equipment.py --mode passive|active --port P [--address 127.0.0.1]

Prints "ready" on stdout once enabled, then serves until killed (or stdin closes). It has
two extra status variables (SVIDs 10 and 11) and one equipment constant (ECID 20)."""

import argparse
import logging
import sys
import time

import secsgem.common
import secsgem.gem
import secsgem.hsms
import secsgem.secs


class Equipment(secsgem.gem.GemEquipmentHandler):
    def __init__(self, settings):
        super().__init__(settings)
        self.MDLN = "secsgem"
        self.SOFTREV = "0.3.0"
        self.status_variables.update({
            10: secsgem.gem.StatusVariable(10, "Temperature", "degC", secsgem.secs.variables.U4, False),
            11: secsgem.gem.StatusVariable(11, "LotID", "", secsgem.secs.variables.String, False),
        })
        self.status_variables[10].value = 23
        self.status_variables[11].value = "LOT-1"
        self.equipment_constants.update({
            20: secsgem.gem.EquipmentConstant(20, "MaxTemp", 0, 500, 300, "degC", secsgem.secs.variables.U4, False),
        })


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["passive", "active"], required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--session-id", type=int, default=0)
    parser.add_argument("--log", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log, stream=sys.stderr)
    mode = secsgem.hsms.HsmsConnectMode.PASSIVE if args.mode == "passive" else secsgem.hsms.HsmsConnectMode.ACTIVE
    settings = secsgem.hsms.HsmsSettings(
        address=args.address,
        port=args.port,
        connect_mode=mode,
        device_type=secsgem.common.DeviceType.EQUIPMENT,
        session_id=args.session_id,
    )
    handler = Equipment(settings)
    handler.enable()
    print("ready", flush=True)
    try:
        while sys.stdin.readline():
            pass
        while True:  # stdin closed or not a pipe: serve until killed
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
