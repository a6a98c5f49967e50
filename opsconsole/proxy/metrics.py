"""Counters and latency histograms, and their Prometheus text form.

Each member keeps one `Stats`; pools and apps add their members' up when asked,
so the hot path touches one object per request.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

# Upper bounds in seconds; fine at the low end because a healthy proxy hop is a few ms.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Stats:
    __slots__ = ("requests", "errors", "retries", "failed", "responses", "buckets", "latency_sum")

    def __init__(self) -> None:
        self.requests = 0  # responses relayed to clients
        self.errors = 0  # upstream failures (connect, reset, timeout) and 5xx answers
        self.retries = 0  # requests that failed here and were sent elsewhere
        self.failed = 0  # client-visible failures: a 5xx relayed, or one the proxy answered, or a response cut
        self.responses = [0, 0, 0, 0, 0, 0]  # by status class: index 1 = 1xx … 5 = 5xx
        self.buckets = [0] * (len(BUCKETS) + 1)  # last slot = +Inf
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.requests += 1
        cls = status // 100
        if 0 < cls < 6:
            self.responses[cls] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def add(self, other: "Stats") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.retries += other.retries
        self.failed += other.failed
        self.latency_sum += other.latency_sum
        for i, v in enumerate(other.responses):
            self.responses[i] += v
        for i, v in enumerate(other.buckets):
            self.buckets[i] += v

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "errors": self.errors, "retries": self.retries, "failed": self.failed,
            "responses": {f"{i}xx": self.responses[i] for i in range(1, 6)},
            "latency": {"bounds": list(BUCKETS), "counts": list(self.buckets), "sum": self.latency_sum},
        }


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class PromWriter:
    """Collects samples grouped by metric name, so each HELP/TYPE header is written once."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def sample(self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float, suffix: str = "") -> None:
        fam = self._families.setdefault(name, (kind, help_text, []))
        fam[2].append(f"{name}{suffix}{_labels(labels)} {_num(value)}")

    def stats(self, prefix: str, labels: dict[str, str], s: Stats) -> None:
        self.sample(f"{prefix}_requests_total", "counter", "Responses relayed to clients.", labels, s.requests)
        self.sample(f"{prefix}_errors_total", "counter", "Upstream failures and 5xx answers.", labels, s.errors)
        self.sample(f"{prefix}_retries_total", "counter", "Requests retried elsewhere after failing here.", labels, s.retries)
        self.sample(f"{prefix}_failed_total", "counter", "Client-visible failures: 5xx relayed or answered, responses cut.",
                    labels, s.failed)
        for i in range(1, 6):
            self.sample(f"{prefix}_responses_total", "counter", "Responses by status class.",
                        {**labels, "code": f"{i}xx"}, s.responses[i])
        name = f"{prefix}_latency_seconds"
        cumulative = 0
        for bound, count in zip(list(BUCKETS) + [float("inf")], s.buckets):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            self.sample(name, "histogram", "Time from sending upstream to the end of the response.",
                        {**labels, "le": le}, cumulative, "_bucket")
        self.sample(name, "histogram", "", labels, s.latency_sum, "_sum")
        self.sample(name, "histogram", "", labels, s.requests, "_count")

    def text(self) -> str:
        out: list[str] = []
        for name, (kind, help_text, lines) in self._families.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(lines)
        return "\n".join(out) + "\n"


def sum_stats(items: Iterable[Stats]) -> Stats:
    total = Stats()
    for s in items:
        total.add(s)
    return total
