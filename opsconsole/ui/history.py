"""What the console remembers per host for its detail screen: recent output and probe results."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from opsconsole.events import Event, HealthChanged, HealthSample, HostState, Message, OutputLine, TaskFinished


# Per host, times hundreds of hosts: small, because every kept object slows the garbage collector.
LINES = 100
SAMPLES = 30


@dataclass
class HostRecord:
    lines: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=LINES))  # (at, text, level)
    samples: deque[HealthSample] = field(default_factory=lambda: deque(maxlen=SAMPLES))


class HostHistory:
    def __init__(self) -> None:
        self._hosts: dict[str, HostRecord] = {}

    def record(self, host: str) -> HostRecord:
        return self._hosts.setdefault(host, HostRecord())

    def add(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case HealthSample(host=host):
                    self.record(host).samples.append(event)
                case OutputLine(host=host, line=line, stream=stream):
                    self.record(host).lines.append((event.at, f"| {line}", "warn" if stream == "stderr" else ""))
                case TaskFinished(host=host, task=task, status=status, message=message):
                    level = {"failed": "bad", "changed": "busy", "ok": "ok"}.get(status, "dim")
                    self.record(host).lines.append((event.at, f"{status:<7} {task}" + (f": {message}" if message and status in ("failed", "cancelled") else ""), level))
                case HostState(host=host, activity=activity, version=version, detail=detail):
                    self.record(host).lines.append((event.at, f"now {activity}" + (f" {version}" if version else "") + (f" — {detail}" if detail else ""), "dim"))
                case HealthChanged(host=host, healthy=healthy, reason=reason):
                    self.record(host).lines.append((event.at, ("▲ UP" if healthy else "▼ DOWN") + (f": {reason}" if reason else ""), "ok" if healthy else "bad"))
                case Message(host=str(host), text=text, level=level):
                    self.record(host).lines.append((event.at, text, {"error": "bad", "warning": "warn"}.get(level, "")))
