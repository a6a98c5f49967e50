"""`canary APP steps`: walk the canary weight up step by step while it holds up, else roll back.

Each step sets the weight, holds it for `hold` seconds, then judges the
canary's counters *for that window only* against stable's. A step with too
few canary requests waits for more (up to `max_wait`) rather than passing or
failing on no data. A failed step sends everything back to stable.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
import asyncio
import time
from typing import Callable

from opsconsole.canary.judge import Verdict, judge
from opsconsole.config.model import CanaryConfig
from opsconsole.traffic.base import AppTraffic, Counters, TrafficDriver

Say = Callable[[str], None]
POLL = 1.0


class CanaryFailed(OperatorError):
    pass


def _pool(app: AppTraffic, name: str) -> Counters:
    pool = app.pools.get(name)
    return pool.counters if pool is not None else Counters()


async def walk_steps(driver: TrafficDriver, app: str, limits: CanaryConfig, say: Say,
                     steps: tuple[int, ...] | None = None) -> int:
    """Walk the steps; returns the final canary weight. Raises CanaryFailed after rolling back to 0."""
    for weight in steps or limits.steps:
        await driver.set_canary_percent(app, weight)
        say(f"canary {app}: weight {weight}%; holding {limits.hold:g}s")
        before = await driver.app(app)
        if before.alert is not None:
            await driver.set_canary_percent(app, 0)
            raise CanaryFailed(f"canary alert: {before.alert.reason}; weight back to 0")
        await asyncio.sleep(limits.hold)
        verdict = await _judge_window(driver, app, before, limits, say)
        if verdict.outcome != "pass":
            await driver.set_canary_percent(app, 0)
            raise CanaryFailed(f"step {weight}% failed: {verdict.reason}; weight back to 0 (all stable)")
        say(f"canary {app}: step {weight}% passed: {verdict.reason}")
    return (steps or limits.steps)[-1]


async def _judge_window(driver: TrafficDriver, app: str, before: AppTraffic, limits: CanaryConfig,
                        say: Say) -> Verdict:
    deadline = time.monotonic() + limits.max_wait
    told = False
    while True:
        now = await driver.app(app)
        if now.alert is not None:
            return Verdict("fail", f"canary alert: {now.alert.reason}")
        verdict = judge(_pool(now, "canary").minus(_pool(before, "canary")),
                        _pool(now, "stable").minus(_pool(before, "stable")), limits)
        if verdict.outcome != "wait":
            return verdict
        if time.monotonic() >= deadline:
            return Verdict("fail", f"{verdict.reason} after waiting {limits.max_wait:g}s")
        if not told:
            say(f"canary {app}: {verdict.reason}; waiting for more traffic")
            told = True
        await asyncio.sleep(POLL)
