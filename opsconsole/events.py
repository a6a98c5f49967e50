"""Typed, immutable events and the one bus they travel on.

Every part reports what it does by emitting events; front ends (the TUI, the
headless printer, tests) subscribe. Events are frozen dataclasses so a
subscriber can keep them without fear that someone changes them later.
This module imports only the leaf opsconsole.redact, so any part may use it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from opsconsole.redact import Redactor

def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    """Base of all events. `at` is wall-clock time (seconds since the epoch)."""

    at: float = field(default_factory=_now, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = self.kind
        return data


@dataclass(frozen=True)
class CommandStarted(Event):
    command_id: str
    text: str
    issuer: str


@dataclass(frozen=True)
class CommandFinished(Event):
    command_id: str
    text: str
    ok: bool
    message: str = ""
    duration: float = 0.0


@dataclass(frozen=True)
class Message(Event):
    """A line for the operator that belongs to no other event type."""

    text: str
    level: str = "info"  # info | warning | error
    host: str | None = None


@dataclass(frozen=True)
class PlayStarted(Event):
    playbook: str
    play: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class PlayFinished(Event):
    playbook: str
    play: str
    ok_hosts: tuple[str, ...]
    failed_hosts: tuple[str, ...]
    skipped_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskStarted(Event):
    host: str
    task: str


@dataclass(frozen=True)
class TaskFinished(Event):
    host: str
    task: str
    status: str  # ok | changed | failed | skipped
    rc: int | None = None
    message: str = ""
    duration: float = 0.0
    started: str = ""  # the service the task started or restarted on the host (a rollout's look-ahead counts from there)


@dataclass(frozen=True)
class OutputLine(Event):
    """One line of a command's output on one host; lines of one host never mix with another's."""

    host: str
    line: str
    stream: str = "stdout"  # stdout | stderr
    source: str = ""  # the task or command that printed it


@dataclass(frozen=True)
class HostState(Event):
    """What the console is doing to a host now, and what it knows of it."""

    host: str
    group: str
    activity: str  # idle | deploying | drained | failed | stopped
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class HealthSample(Event):
    """One probe of one host's health endpoint."""

    host: str
    ok: bool
    status: int | None
    latency: float | None
    version: str | None = None
    error: str = ""


@dataclass(frozen=True)
class HealthChanged(Event):
    """A host's health state flipped (after fall/rise thresholds)."""

    host: str
    healthy: bool
    reason: str = ""


Subscriber = Callable[[Event], None]

_log = logging.getLogger(__name__)


class EventBus:
    """Fan-out of events to subscribers: every subscriber sees every event, in the order things happened.

    Callbacks run synchronously inside `emit`, so they must be quick; front ends
    that need to do real work subscribe a queue instead. An event emitted by a
    subscriber (the engine's host views turn a rollout step into a host state)
    waits until the event that caused it has reached every subscriber, so no
    one sees the effect before its cause. A subscriber that raises is logged
    once and dropped: a front end's failure (a closed pipe, a bug in a pane)
    never fails the work that reported the event.

    Every event passes the bus's `redactor` before any subscriber sees it: secrets are masked
    here once, for the TUI, the headless printer, `--json` and every log fed from events.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor if redactor is not None else Redactor()
        self._subscribers: list[Subscriber] = []
        self._pending: deque[Event] = deque()
        self._delivering = False

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register `callback`; returns a function that unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def queue(self) -> tuple[asyncio.Queue[Event], Callable[[], None]]:
        """A fresh unbounded queue fed with every event, and its unsubscribe."""
        q: asyncio.Queue[Event] = asyncio.Queue()
        return q, self.subscribe(q.put_nowait)

    def emit(self, event: Event) -> None:
        self._pending.append(self.redactor.event(event))
        if self._delivering:
            return  # a subscriber emitted it: delivered once the current event reached everyone
        self._delivering = True
        try:
            while self._pending:
                current = self._pending.popleft()
                for callback in list(self._subscribers):
                    try:
                        callback(current)
                    except Exception as exc:  # noqa: BLE001 - any failure of a subscriber is its own
                        self._drop(callback, current, exc)
        finally:
            self._delivering = False

    def _drop(self, callback: Subscriber, event: Event, exc: Exception) -> None:
        if callback not in self._subscribers:
            return
        self._subscribers.remove(callback)
        _log.error("event subscriber %r failed on %s and gets no more events", callback, event.kind, exc_info=exc)
        self.emit(Message(text=f"an event subscriber failed on {event.kind} ({type(exc).__name__}: {exc}) and was "
                               "removed; the work goes on", level="error"))


@dataclass(frozen=True)
class BuildUpdate(Event):
    """A build changed state: queued, running, succeeded, failed, cancelled, timed_out, skipped."""

    build_id: str
    app: str
    commit: str
    status: str
    author: str = ""
    subject: str = ""
    duration: float | None = None
    artifact: str | None = None
    message: str = ""


@dataclass(frozen=True)
class HeartbeatCycle(Event):
    """One cycle of the heartbeat monitor finished: the rolling line of the heartbeat log."""

    probed: int
    up: int
    down: int
    lag: float  # how late the cycle started behind its schedule, seconds
    duration: float  # first probe start to last result
    statuses: tuple[tuple[str, str], ...] = ()  # (host, short status: "200", "DOWN", "timeout" …)


@dataclass(frozen=True)
class RolloutStep(Event):
    """A rollout moved: a host entered a step (draining, deploying, gating, done, failed), or the rollout's status changed."""

    rollout_id: str
    app: str
    host: str | None  # None for the rollout as a whole
    state: str
    detail: str = ""
    batch: int | None = None


@dataclass(frozen=True)
class RolloutProgress(Event):
    """Where a rollout stands, after every host that finishes: `batch 3/10 · 27/100 done · 0 failed · ETA 12s`."""

    rollout_id: str
    app: str
    batch: int
    batches: int
    done: int
    total: int
    failed: int
    eta: float | None = None  # seconds left at the pace so far; None until a host has finished

    def line(self) -> str:
        eta = "ETA …" if self.eta is None else f"ETA {self.eta:.0f}s"
        return f"batch {self.batch}/{self.batches} · {self.done}/{self.total} done · {self.failed} failed · {eta}"


@dataclass(frozen=True)
class CanaryState(Event):
    """An app's traffic split as the proxy reports it (on every change, and polled while the console runs)."""

    app: str
    split: str  # request | sticky
    configured_weight: int  # the canary pool's weight as set
    effective_weight: int  # what is in use (0 while no canary is healthy or the alert holds)
    requests: tuple[tuple[str, int], ...] = ()  # (pool, requests)
    errors: tuple[tuple[str, int], ...] = ()  # (pool, client-visible failures: 5xx relayed or answered, cut)
    alert: str | None = None
    answers: tuple[tuple[str, int], ...] = ()  # (status, count): answers the proxy made itself (503, 400, cut …)
    panic: tuple[str, ...] = ()  # pools with no healthy member, balanced across all members anyway
    tunnels: int = 0  # WebSocket tunnels open
