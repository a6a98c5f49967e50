"""`opsconsole heartbeat`: only the monitor, one line per host per interval, like the seed's monitor.js.

A monitor watches; it never changes the fleet, so no branch poller runs (nothing is built or
deployed). The heartbeat log on disk is written by the monitor itself, as in every front end.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from opsconsole.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, Subcommand, load
from opsconsole.units import format_latency


def _cycles(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of cycles (0 or more; 0 runs until stopped)")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=_cycles, default=0, metavar="N",
                   help="stop after N cycles (default 0: run until Ctrl-C or SIGTERM)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from opsconsole.engine.engine import Engine
    from opsconsole.events import Event, HealthChanged, HeartbeatCycle

    engine = Engine.open(load(args.config), heartbeat=True)  # a monitor never changes the fleet: nothing else
    if not engine.monitor.targets:
        print("opsconsole: no host has a health check: nothing to monitor", file=sys.stderr)
        return EXIT_BAD_INPUT
    done = asyncio.Event()
    cycles = 0

    def show(event: Event) -> None:
        nonlocal cycles
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        if isinstance(event, HeartbeatCycle):
            for host, status in sorted(event.statuses):
                state = engine.monitor.states[host]
                latency = format_latency(state.last.latency if state.last else None)
                print(f"{stamp} {host:<16} {status:>7} {latency:>7}  {'up' if state.healthy else 'DOWN'}", flush=True)
            cycles += 1
            if args.count and cycles >= args.count:
                done.set()
        elif isinstance(event, HealthChanged):
            print(f"{stamp} {event.host:<16} is now {'UP' if event.healthy else 'DOWN'}"
                  f"{': ' + event.reason if event.reason else ''}", flush=True)

    engine.bus.subscribe(show)

    terminated = asyncio.Event()

    async def go() -> int:
        # SIGTERM stops like Ctrl-C (exit 130, as --script and --watch do), not by the default kill (143).
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: (terminated.set(), done.set()))
        async with engine:
            await done.wait()
        return EXIT_INTERRUPTED if terminated.is_set() else EXIT_OK

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


SUBCOMMAND = Subcommand(
    name="heartbeat", summary="only the heartbeat monitor: one line per host per interval",
    description="probe every host on the heartbeat interval and print each status (changes nothing)",
    add_arguments=add_arguments, run=run)
