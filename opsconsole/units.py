"""The small value formats operators type and read: durations like `2s`, `1m30s`, `250ms`; latencies."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# No timeout, interval or wait means more than a year: a longer one is a slip (`1e300`), and sleeping on
# it overflows the event loop's timer.
MAX_DURATION = 365 * 24 * 3600
_ACCEPTED = "use e.g. 2.5, 30s, 250ms, 1m30s"


def parse_duration(text: str | int | float) -> float:
    """Seconds from `30`, `2.5`, `2s`, `250ms`, `1m30s`, `1h`. Raises ValueError saying what is accepted."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration ({_ACCEPTED})")
    if isinstance(text, (int, float)):
        return _checked(text, text)
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        return _checked(value, text)
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(f"{text!r} is not a duration ({_ACCEPTED})")
    return _checked(total, text)


def _checked(value: int | float, text: object) -> float:
    """`value` as seconds, if a duration can be that long. NaN and infinity (`.nan`, `nan`, `inf`, and
    what a 400-digit number rounds to) compare false or huge and would pass a bare `< 0` check."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{text!r} is not a duration ({_ACCEPTED})")
    if value < 0:
        raise ValueError(f"{text!r} is negative; a duration must be 0 or more")
    if value > MAX_DURATION:  # an int is compared as is: float() of a huge one would overflow
        raise ValueError(f"{text!r} is too long; a duration must be at most a year (8760h)")
    return float(value)


def seconds_number(value: object, scale: float = 1) -> float:
    """A plain number of seconds, as Ansible's modules take them (`10`, `"2.5"`; of `scale` seconds each, 60
    for minutes), in seconds: finite and not negative (`.nan` passes every comparison a wait makes, `.inf`
    waits for ever, 1e308 minutes is no number of seconds). ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    try:
        seconds = (float(value) if isinstance(value, (int, float)) else float(str(value))) * scale
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a number of seconds, 0 or more")
    return seconds


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


def is_count(text: str, digits: int = 6) -> bool:
    """`text` is a whole number written in ASCII digits, at most `digits` of them. str.isdigit() alone takes
    "²" and "٣", which int() then refuses or reads as 3, and int() of over 4300 digits raises."""
    return text.isascii() and text.isdigit() and len(text) <= digits

