"""Probe hosts again and again until each is where it should be, or a deadline passes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from opsconsole.events import HealthSample
from opsconsole.heartbeat.monitor import HeartbeatMonitor


async def probe_until(monitor: HeartbeatMonitor, names: list[str], arrived: Callable[[str, HealthSample], bool], *,
                      timeout: float, pace: float) -> dict[str, HealthSample]:
    """Probe `names` every `pace` seconds until `arrived(name, sample)` holds for all of them.

    Returns the last sample of each host that had not arrived when `timeout` passed (empty: all did).
    The monitor's states (fall/rise) are updated by each probe, so `arrived` may read them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await asyncio.gather(*(monitor.probe(name) for name in names))
        pending = {name: sample for name, sample in zip(names, samples) if not arrived(name, sample)}
        if not pending or loop.time() >= deadline:
            return pending
        await asyncio.sleep(min(pace, max(0.0, deadline - loop.time())))
