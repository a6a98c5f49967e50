"""SSH (and SFTP) messages per host of a rolling update, by type: what the controller sends and receives (both the hosts'
connections and the jump connection that carries them), read from asyncssh's own packet logging.

A count, not a timing: on a shared machine it does not move with the noise, so a change that saves round
trips or packets shows here exactly (bench_scale.py shows what it is worth in seconds).

    sudo flock /tmp/opsconsole-load.lock .venv/bin/python bench/bench_ssh_packets.py [--hosts 20] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh.packet  # noqa: E402

from bench.bench_scale import roll_batches  # noqa: E402
from tests.lab import Lab, LabConfig  # noqa: E402
from tests.lab.fixtures import _take_lab_lock  # noqa: E402


def count_packets() -> collections.Counter[tuple[str, str]]:
    """From now on, every SSH packet asyncssh sends or receives, counted by (direction, type name)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    logged = asyncssh.packet.SSHPacketLogger._log_packet

    def log_packet(self, msg, pkttype, pktid, packet, note):  # type: ignore[no-untyped-def]
        counts[(msg, str(self._handler_names.get(pkttype, pkttype)))] += 1
        return logged(self, msg, pkttype, pktid, packet, note)

    asyncssh.packet.SSHPacketLogger._log_packet = log_packet  # type: ignore[method-assign]
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20, help="app hosts in the lab (default 20)")
    parser.add_argument("--top", type=int, default=25, help="packet types to list (default 25)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_ssh_packets needs root (the lab uses network namespaces)", file=sys.stderr)
        return 1
    _take_lab_lock()
    lab = Lab(LabConfig.fleet(args.hosts)).up()
    try:
        counts = count_packets()
        with tempfile.TemporaryDirectory(prefix="bench_ssh_packets-") as tmp:
            took, _ = asyncio.run(roll_batches(lab, Path(tmp) / "roll"))
    finally:
        lab.down()
    n = args.hosts
    print(f"roll --batch 10% over {n} lab hosts through the jump host ({took:.2f} s); SSH packets per host:")
    for (direction, name), count in counts.most_common(args.top):
        print(f"  {direction:<9} {name:<36} {count / n:7.1f}")
    sent = sum(c for (d, _), c in counts.items() if d == "Sent")
    received = sum(c for (d, _), c in counts.items() if d == "Received")
    print(f"  all sent {sent / n:.1f}, all received {received / n:.1f} per host")
    return 0


if __name__ == "__main__":
    sys.exit(main())
