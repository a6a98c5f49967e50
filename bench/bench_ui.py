"""Key-to-screen latency of the console under a flood of events, headless.

    .venv/bin/python bench/bench_ui.py [--hosts 2000] [--rate 4000] [--presses 200] [--minutes 1]

Runs the real app (Textual's headless driver) over a real engine with a
local group of N hosts, floods the engine's bus with probe results, task
output and host state changes at `--rate` events per second, and presses
`down`/`up` in the fleet table. For each press it records the time from the
key being sent to the first frame the compositor produces after the table's
cursor moved, and prints the median, 95th percentile and worst of those, with
how long each batch flush of events took.

Not a test: numbers depend on the machine. The issue's bar is a key answered
within 100 ms while work runs (p99), at 2,000 hosts.

Then, with `--minutes N`, the flood goes on for N minutes and the console's
resident memory (RSS, from /proc/self/status: the app runs in this process) is
printed every few seconds; the bar is < 300 MB and not growing. Hosts are
spread over up to four groups of 500 (a big fleet is grouped); the first group
is unfolded so the presses walk host rows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthSample, HostState, OutputLine, TaskFinished
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.big_fleet import big_fleet_config  # noqa: E402  (the config the scale test uses)


async def flood(engine: Engine, names: list[str], rate: int, stop: asyncio.Event, counter: list[int]) -> None:
    """Emit `rate` events a second in 10 ms bursts, the way a rollout plus probes of a big fleet would."""
    rng = random.Random(7)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    while not stop.is_set():
        started = time.perf_counter()
        for i in range(per_tick):
            host = rng.choice(names)
            kind = i % 10
            if kind < 4:
                ok = rng.random() > 0.05
                engine.bus.emit(HealthSample(host=host, ok=ok, status=200 if ok else 503,
                                             latency=rng.uniform(0.001, 0.05), version="a1b2c3d"))
            elif kind < 9:
                engine.bus.emit(OutputLine(host=host, line=f"step {counter[0]} of the deploy on {host}"))
            elif i % 20 == 9:
                engine.bus.emit(HostState(host=host, group=host.rsplit("-", 1)[0],
                                          activity=rng.choice(["deploying", "idle"])))
            else:
                engine.bus.emit(TaskFinished(host=host, task="unpack", status="changed", duration=0.2))
            counter[0] += 1
        await asyncio.sleep(max(0.0, tick - (time.perf_counter() - started)))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(hosts: int, rate: int, presses: int, size: tuple[int, int], minutes: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(load_config(big_fleet_config(Path(tmp), hosts, project="bench")))
        app = OpsConsoleApp(engine, freeze_startup=True)  # as run_console does
        frames: list[float] = []
        flushes: list[float] = []
        moves: list[float] = []
        display = app._display

        def timed_display(screen, renderable) -> None:  # type: ignore[no-untyped-def]
            display(screen, renderable)
            frames.append(time.perf_counter())

        app._display = timed_display  # type: ignore[method-assign]
        flush = app.flush

        def timed_flush() -> None:
            started = time.perf_counter()
            flush()
            flushes.append(time.perf_counter() - started)

        app.flush = timed_flush  # type: ignore[method-assign]

        async with app.run_test(size=size) as pilot:
            fleet = app.query_one(FleetPane)
            table = fleet.table
            app.watch(table, "cursor_coordinate", lambda *_: moves.append(time.perf_counter()), init=False)
            if getattr(fleet, "grouped", False):  # (absent before the fleet had groups: the old pane, compared)
                await pilot.press("o")  # unfold the first group: the presses walk its host rows
            stop, counter = asyncio.Event(), [0]
            flooding = asyncio.ensure_future(flood(engine, list(engine.views), rate, stop, counter))
            await pilot.pause(1.0)  # let the flood reach a steady state
            rss_start = rss_mb()
            flood_start, events_start = time.perf_counter(), counter[0]
            latencies: list[float] = []
            for i in range(presses):
                key = "down" if (i // 10) % 2 == 0 else "up"
                moves_before = len(moves)
                sent = time.perf_counter()
                await pilot.press(key)
                while len(moves) == moves_before:  # the move itself may still be queued
                    await asyncio.sleep(0.001)
                moved = moves[moves_before]
                while not frames or frames[-1] < moved:
                    await asyncio.sleep(0.001)
                latencies.append(next(f for f in frames if f >= moved) - sent)
                await asyncio.sleep(rng_pause(i))
            elapsed = time.perf_counter() - flood_start
            events = counter[0] - events_start
            samples = await soak(minutes, counter, flood_start) if minutes > 0 else []
            stop.set()
            await flooding

    ms = sorted(x * 1000 for x in latencies)
    flush_ms = sorted(x * 1000 for x in flushes)
    print(f"hosts {hosts}, screen {size[0]}x{size[1]}, flood {events / elapsed:.0f} events/s "
          f"(asked {rate}), {len(ms)} key presses")
    print(f"key-to-screen latency: median {statistics.median(ms):.1f} ms, "
          f"p95 {ms[int(len(ms) * 0.95) - 1]:.1f} ms, p99 {ms[max(0, int(len(ms) * 0.99) - 1)]:.1f} ms, "
          f"worst {ms[-1]:.1f} ms (target p99 < 100 ms)")
    print(f"event batch flush: {len(flush_ms)} batches, median {statistics.median(flush_ms):.1f} ms, "
          f"worst {flush_ms[-1]:.1f} ms; events dropped {app.feed.dropped}")
    print(f"RSS {rss_start:.0f} MB after start-up and 1 s of flood")
    if samples:
        for at, events_so_far, mb in samples:
            print(f"  t={at:6.0f} s  events {events_so_far:>9}  RSS {mb:6.1f} MB")
        half = samples[len(samples) // 2:]
        growth = (half[-1][2] - half[0][2]) / max(1.0, (half[-1][0] - half[0][0]) / 60)
        print(f"RSS after {minutes:g} min: {samples[-1][2]:.0f} MB (target < 300 MB); over the second half "
              f"{growth:+.1f} MB/min (target: not growing)")


async def soak(minutes: float, counter: list[int], started: float) -> list[tuple[float, int, float]]:
    """Keep the flood on for `minutes`; (seconds since the flood began, events, RSS MB) about 12 times."""
    samples: list[tuple[float, int, float]] = []
    every = max(2.0, minutes * 60 / 12)
    end = time.perf_counter() + minutes * 60
    while True:
        samples.append((time.perf_counter() - started, counter[0], rss_mb()))
        if time.perf_counter() >= end:
            return samples
        await asyncio.sleep(min(every, max(0.0, end - time.perf_counter())))


def rng_pause(i: int) -> float:
    """Presses at a human-ish but uneven pace, so they land at different points of the flush cycle."""
    return 0.005 + (i * 7 % 11) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=2000)
    p.add_argument("--rate", type=int, default=4000, help="events per second")
    p.add_argument("--presses", type=int, default=200)
    p.add_argument("--size", default="120x40", help="terminal size, e.g. 80x24")
    p.add_argument("--minutes", type=float, default=1.0,
                   help="then keep the flood on this long, printing RSS samples (0: skip; the issue asks 10)")
    args = p.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    asyncio.run(run(args.hosts, args.rate, args.presses, (width, height), args.minutes))


if __name__ == "__main__":
    main()
