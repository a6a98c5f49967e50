"""The small value formats operators type and read: durations like `2s`, `1m30s`, `250ms`; latencies."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds from `30`, `2.5`, `2s`, `250ms`, `1m30s`, `1h`. Raises ValueError saying what is accepted."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration (use e.g. 2.5, 30s, 250ms, 1m30s)")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{text!r} is negative; a duration must be 0 or more")
        return float(text)
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"{text!r} is negative; a duration must be 0 or more")
        return value
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(f"{text!r} is not a duration (use e.g. 2.5, 30s, 250ms, 1m30s)")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: 850ms, 12.3s, 4m05s."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_latency(latency: float | None) -> str:
    """A probe's latency in whole milliseconds (`4ms`), `-` when there was no answer to time."""
    return "-" if latency is None else f"{latency * 1000:.0f}ms"
