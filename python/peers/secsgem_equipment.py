"""A secsgem==0.3.0 GemEquipmentHandler for interop tests and benchmarks.

    python secsgem_equipment.py --mode passive|active --port P [--address 127.0.0.1]
    python secsgem_equipment.py --secs1-tcp --mode passive|active --port P   (SECS-I over TCP)
    python secsgem_equipment.py --serial PATH [--speed 9600]                 (SECS-I, serial)

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
import secsgem.secsi
import secsgem.secsitcp


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
    parser.add_argument("--mode", choices=["passive", "active"], default="passive")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secs1-tcp", action="store_true", help="SECS-I over TCP instead of HSMS")
    parser.add_argument("--serial", help="SECS-I over this serial port instead of HSMS")
    parser.add_argument("--speed", type=int, default=9600)
    parser.add_argument("--session-id", type=int, default=0)
    parser.add_argument("--log", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log, stream=sys.stderr)
    mode = secsgem.hsms.HsmsConnectMode.PASSIVE if args.mode == "passive" else secsgem.hsms.HsmsConnectMode.ACTIVE
    equipment = secsgem.common.DeviceType.EQUIPMENT
    if args.serial:
        settings = secsgem.secsi.SecsISettings(
            port=args.serial, speed=args.speed, device_type=equipment, session_id=args.session_id
        )
    elif args.secs1_tcp:
        connect_mode = (
            secsgem.secsitcp.SecsITcpConnectMode.SERVER
            if args.mode == "passive"
            else secsgem.secsitcp.SecsITcpConnectMode.CLIENT
        )
        settings = secsgem.secsitcp.SecsITcpSettings(
            address=args.address,
            port=args.port,
            connect_mode=connect_mode,
            device_type=equipment,
            session_id=args.session_id,
        )
    else:
        settings = secsgem.hsms.HsmsSettings(
            address=args.address,
            port=args.port,
            connect_mode=mode,
            device_type=equipment,
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
