"""The heartbeat monitor: every target probed on its interval, spread over the interval.

Probes of one cycle start at staggered offsets (so 1,000 hosts do not fire at
the same instant) and each runs as its own task under a concurrency bound, so
one slow host never delays the others' results. Cycles are scheduled on a
fixed grid (t0 + k·interval): a slow cycle does not push the next ones later.
The monitor writes the heartbeat log (opsconsole/heartbeat/log.py) itself, whichever
front end runs it; a line is on disk before its event goes out on the bus.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from opsconsole.fsio import append_jsonl
from opsconsole.config.model import HeartbeatConfig
from opsconsole.events import EventBus, HealthChanged, HealthSample, HeartbeatCycle, Message
from opsconsole.heartbeat.alerts import AlertHooks
from opsconsole.heartbeat.log import HeartbeatLog, change_line, cycle_line, sample_line
from opsconsole.heartbeat.probe import Prober, ProbeTarget
from opsconsole.heartbeat.state import HostHealth, short_status

# Probes of a cycle start within this share of the interval, leaving the rest for answers.
SPREAD_SHARE = 0.8


class HeartbeatMonitor:
    def __init__(self, bus: EventBus, prober: Prober, targets: list[ProbeTarget], config: HeartbeatConfig,
                 *, change_log: Path | None = None) -> None:
        self.bus = bus
        self.prober = prober
        self.config = config
        self.targets: dict[str, ProbeTarget] = {}
        self.states: dict[str, HostHealth] = {}
        self.set_targets(targets)
        self.change_log = change_log
        self.alerts = AlertHooks(bus, config.alert_command, config.alert_webhook)
        self.log = HeartbeatLog(config.log_file, on_error=self._log_failed) if config.log_file else None
        self._limit = asyncio.Semaphore(config.concurrency)
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.cycle_lags: list[float] = []  # kept for the benchmark and `heartbeat` stats

    def set_targets(self, targets: list[ProbeTarget]) -> None:
        """Probe these from the next cycle on (hosts came or went); known hosts keep their state."""
        self.targets = {t.host.name: t for t in targets}
        self.states = {
            t.host.name: self.states.get(t.host.name) or HostHealth(
                t.host.name, fall=t.check.fall or self.config.fall, rise=t.check.rise or self.config.rise,
                history_size=self.config.history)
            for t in targets
        }

    def _interval(self, target: ProbeTarget) -> float:
        return target.check.interval or self.config.interval

    # -- one probe ---------------------------------------------------------
    async def probe(self, name: str) -> HealthSample:
        """Probe one host now (the `probe HOST` command); the sample counts like any other."""
        sample = await self.prober.probe(self.targets[name])
        self.record(sample)
        return sample

    def record(self, sample: HealthSample) -> None:
        if self.log is not None:
            self.log.write([sample_line(sample)])
        self.bus.emit(sample)
        state = self.states.get(sample.host)
        if state is None:
            return
        changed = state.record(sample)
        if changed is None:
            return
        reason = "" if sample.ok else sample.error
        event = HealthChanged(host=sample.host, healthy=changed, reason=reason)
        if self.log is not None:
            self.log.write([change_line(event)])
        self.bus.emit(event)
        if self.change_log is not None:
            append_jsonl(self.change_log, event.to_dict())
        self.alerts.fire(event)

    # -- cycles ------------------------------------------------------------
    async def run(self) -> None:
        """Probe forever (until cancelled). One cycle loop per distinct interval."""
        intervals = {self._interval(t) for t in self.targets.values()} or {self.config.interval}
        loops = [asyncio.ensure_future(self._cycle_loop(interval)) for interval in sorted(intervals)]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*loops, *self._tasks, return_exceptions=True)
            await self.alerts.drain()
            if self.log is not None:
                self.log.close()

    async def _cycle_loop(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while True:
            scheduled = t0 + k * interval
            now = loop.time()
            if now < scheduled:
                await asyncio.sleep(scheduled - now)
            lag = max(0.0, loop.time() - scheduled)
            self.cycle_lags.append(lag)
            # Read the targets each cycle: the fleet may have grown or shrunk (EC2 scale).
            targets = [t for t in self.targets.values() if self._interval(t) == interval]
            task = asyncio.ensure_future(self._cycle(targets, interval, scheduled, lag))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            k += 1
            # Skip cycles we are hopelessly behind on rather than bursting to catch up.
            while t0 + k * interval < loop.time():
                k += 1

    async def _cycle(self, targets: list[ProbeTarget], interval: float, scheduled: float, lag: float) -> None:
        loop = asyncio.get_running_loop()
        step = interval * SPREAD_SHARE / max(len(targets), 1)
        started = loop.time()
        probes = []
        for i, target in enumerate(targets):
            at = scheduled + i * step
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            name = target.host.name
            if name in self._in_flight:
                continue  # last cycle's probe of this host is still waiting on its timeout
            probes.append(asyncio.ensure_future(self._probe_one(target)))
        samples = [s for s in await asyncio.gather(*probes) if s is not None]
        cycle = self.cycle_event(samples, lag, loop.time() - started)
        if self.log is not None:
            self.log.write([cycle_line(cycle)])
        self.bus.emit(cycle)

    def cycle_event(self, samples: list[HealthSample], lag: float, duration: float) -> HeartbeatCycle:
        """A cycle's summary: up/down counted from every host's verdict, and each probed host's word."""
        up = sum(1 for s in self.states.values() if s.healthy)
        down = sum(1 for s in self.states.values() if s.healthy is False)
        return HeartbeatCycle(probed=len(samples), up=up, down=down, lag=lag, duration=duration,
                              statuses=tuple((s.host, self._cycle_status(s)) for s in samples))

    def _cycle_status(self, sample: HealthSample) -> str:
        # The verdict the up/down count is made of, not the raw probe ("8/8 up │ itrust-1:DOWN" contradicted itself).
        state = self.states.get(sample.host)
        return state.cycle_status() if state is not None else short_status(sample)

    async def _probe_one(self, target: ProbeTarget) -> HealthSample | None:
        name = target.host.name
        self._in_flight.add(name)
        try:
            async with self._limit:
                try:
                    sample = await self.prober.probe(target)
                except Exception as exc:  # noqa: BLE001 - one host's probe must never end every host's cycle
                    # A probe that cannot even be made (a port out of range, a transport that failed) is this
                    # host's DOWN, with the reason.
                    sample = HealthSample(host=name, ok=False, status=None, latency=None, error=_cannot_probe(exc))
            self.record(sample)
            return sample
        finally:
            self._in_flight.discard(name)

    def _log_failed(self, text: str) -> None:
        self.bus.emit(Message(text=text, level="warning"))

    # -- views -------------------------------------------------------------
    def table(self) -> list[tuple[str, str, str, str, str]]:
        """(host, state, last status, latency, error) for every target, for `heartbeat`."""
        rows = []
        for name, state in self.states.items():
            last = state.last
            rows.append((
                name, state.label, short_status(last) if last else "-",
                f"{last.latency * 1000:.0f}ms" if last and last.latency is not None else "-",
                last.error if last else "",
            ))
        return rows


def _cannot_probe(exc: BaseException) -> str:
    """Why a probe could not be made, from the innermost error (an async library wraps it in a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"cannot probe: {type(exc).__name__}: {exc}"
