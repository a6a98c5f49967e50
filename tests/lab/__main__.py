"""`python -m tests.lab up|down|status` — the lab by hand (`make lab`). Needs root."""

from __future__ import annotations

import json
import os
import sys

from .lab import Lab, LabConfig
from .net import LabError

USAGE = "usage: python -m tests.lab up|down|status   (env: OPSCONSOLE_LAB_CIDR, OPSCONSOLE_LAB_APPS, OPSCONSOLE_LAB_DIR)"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print(USAGE, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces, veth, sshd)", file=sys.stderr)
        return 1
    lab = Lab(LabConfig.from_env())
    try:
        if argv[0] == "up":
            lab.up()
            for host in lab.hosts.values():
                where = f" (public {host.public_address})" if host.public_address else ""
                print(f"{host.name:8} {host.address:15}{where}  files {host.files} (seen there as {host.root})")
            print(f"lab up; try: ssh -F {lab.ssh_config} app-1 hostname   (tear down: python -m tests.lab down)")
        elif argv[0] == "down":
            removed = lab.down()
            print(f"lab down; removed {len(removed)} item(s)")
        else:
            print(json.dumps(lab.status(), indent=1))
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
