"""`opsconsole heartbeat`: just the monitor, one line per host per interval, like the seed's monitor.js."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from opsconsole.config import SourceError, load_config
from opsconsole.events import Event, HealthChanged, HeartbeatCycle


def main_heartbeat(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="opsconsole heartbeat",
                                description="probe every host on the heartbeat interval and print each status")
    p.add_argument("--config", "-c", metavar="FILE", default=None)
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N cycles (default: run until Ctrl-C)")
    args = p.parse_args(argv)
    from opsconsole.cli import _config_path
    from opsconsole.engine import Engine

    try:
        engine = Engine(load_config(_config_path(args.config)))
    except SourceError as exc:
        print(f"opsconsole: {exc}", file=sys.stderr)
        return 2
    if not engine.monitor.targets:
        print("opsconsole: no host has a health check: nothing to monitor", file=sys.stderr)
        return 2
    done = asyncio.Event()
    cycles = 0

    def show(event: Event) -> None:
        nonlocal cycles
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        if isinstance(event, HeartbeatCycle):
            for host, status in sorted(event.statuses):
                state = engine.monitor.states[host]
                last = state.last
                latency = f"{last.latency * 1000:.0f}ms" if last and last.latency is not None else "-"
                print(f"{stamp} {host:<16} {status:>7} {latency:>7}  {'up' if state.healthy else 'DOWN'}", flush=True)
            cycles += 1
            if args.count and cycles >= args.count:
                done.set()
        elif isinstance(event, HealthChanged):
            print(f"{stamp} {event.host:<16} is now {'UP' if event.healthy else 'DOWN'}"
                  f"{': ' + event.reason if event.reason else ''}", flush=True)

    engine.bus.subscribe(show)

    async def go() -> int:
        await engine.start_background()
        try:
            await done.wait()
        finally:
            await engine.close()
        return 0

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130
