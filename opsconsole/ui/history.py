"""What the console remembers per host for its detail screen: recent output and probe results.

At 2,000 hosts this is the console's largest live data (200,000 lines and 60,000 probe results), and each
full garbage collection walks every container the collector tracks, item by item: kept as event objects in
deques, the history made full collections take tens of milliseconds, the tail of the key-to-screen latency.
So a host's lines and samples are tuples of plain tuples of strings and numbers, replaced (not grown) once
per batch: CPython stops tracking a tuple holding only such values the first time a young collection sees
it, so a host costs every later collection one object (its record) whatever it holds.
"""

from __future__ import annotations

from typing import NamedTuple

from opsconsole.events import Event, HealthChanged, HealthSample, HostState, Message, OutputLine, TaskFinished


# Per host, times thousands of hosts: the detail screen shows the last 30 lines and 20 samples.
LINES = 100
SAMPLES = 30

Line = tuple[float, str, str]  # (at, text, level): level as in style.level_styles
# (at, ok, status, latency, version, error): the probe's fields, not the event, which the collector would track.
SampleRow = tuple[float, bool, "int | None", "float | None", "str | None", str]


class Sample(NamedTuple):
    """A sample row with names, made only when the detail screen draws (a NamedTuple stays tracked)."""

    at: float
    ok: bool
    status: int | None
    latency: float | None
    version: str | None
    error: str


class HostRecord:
    __slots__ = ("lines", "rows")

    def __init__(self) -> None:
        self.lines: tuple[Line, ...] = ()  # oldest first, at most LINES
        self.rows: tuple[SampleRow, ...] = ()  # oldest first, at most SAMPLES

    @property
    def samples(self) -> list[Sample]:
        """The kept probe results, oldest first."""
        return [Sample(*row) for row in self.rows]


def _line(event: Event) -> Line | None:
    match event:
        case OutputLine(line=line, stream=stream):
            return (event.at, f"| {line}", "warn" if stream == "stderr" else "")
        case TaskFinished(task=task, status=status, message=message):
            level = {"failed": "bad", "changed": "busy", "ok": "ok"}.get(status, "dim")
            return (event.at, f"{status:<7} {task}" + (f": {message}" if message and status in ("failed", "cancelled") else ""), level)
        case HostState(activity=activity, version=version, detail=detail):
            return (event.at, f"now {activity}" + (f" {version}" if version else "") + (f" — {detail}" if detail else ""), "dim")
        case HealthChanged(healthy=healthy, reason=reason):
            return (event.at, ("▲ UP" if healthy else "▼ DOWN") + (f": {reason}" if reason else ""), "ok" if healthy else "bad")
        case Message(host=str(), text=text, level=level):
            return (event.at, text, {"error": "bad", "warning": "warn"}.get(level, ""))
    return None


class HostHistory:
    def __init__(self) -> None:
        self._hosts: dict[str, HostRecord] = {}

    def record(self, host: str) -> HostRecord:
        record = self._hosts.get(host)
        if record is None:
            record = self._hosts[host] = HostRecord()
        return record

    def add(self, events: list[Event]) -> None:
        # Gathered per host first, so each host's tuples are rebuilt once per batch, not once per event.
        lines: dict[str, list[Line]] = {}
        rows: dict[str, list[SampleRow]] = {}
        for event in events:
            host = getattr(event, "host", None)
            if not isinstance(host, str):
                continue
            if isinstance(event, HealthSample):
                rows.setdefault(host, []).append(
                    (event.at, event.ok, event.status, event.latency, event.version, event.error))
            elif (line := _line(event)) is not None:
                lines.setdefault(host, []).append(line)
        for host, fresh in lines.items():
            record = self.record(host)
            record.lines = (record.lines + tuple(fresh))[-LINES:]
        for host, fresh_rows in rows.items():
            record = self.record(host)
            record.rows = (record.rows + tuple(fresh_rows))[-SAMPLES:]
