"""The heartbeat log: every probe, every up/down verdict and every monitor cycle, one line each.

The monitor writes it, so it exists whichever front end runs (the console, `--script`,
`--watch`, `opsconsole heartbeat`); the console's heartbeat pane shows the same lines,
made by the same functions. Lines read like a `monitor` printing each server's status:

    14:02:07 ✔ itrust-1     200   4ms 3f2a9c1
    14:02:07 ▼ itrust-2     DOWN: connection refused
    14:02:07 ○ 4/5 up, 1 down │ itrust-1:200 itrust-2:DOWN …

The file is the operator's alone (0600: it names every host and what answers there) and
bounded: past `max_bytes` it moves to `heartbeat.log.1`, replacing the one before, and a new
one starts. 1,000 hosts probed every 2.5 s write about 2 GB a day, so unbounded is not an option.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable

from opsconsole.events import HealthChanged, HealthSample, HeartbeatCycle
from opsconsole.fsio import make_private_dir
from opsconsole.units import format_latency

MAX_BYTES = 16 * 1024 * 1024  # per file; with the one rotated file at most twice that is kept
MODE = 0o600


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def sample_line(sample: HealthSample) -> str:
    # ✔/✘ judge one probe; ▲/▼ are kept for the monitor's verdicts after fall/rise.
    text = (f"{clock(sample.at)} {'✔' if sample.ok else '✘'} {sample.host:<12} {sample.status or '---':>3} "
            f"{format_latency(sample.latency):>5}")
    return text + (f" {sample.version}" if sample.version else "") + (f" {sample.error}" if sample.error else "")


def change_line(change: HealthChanged) -> str:
    text = f"{clock(change.at)} {'▲' if change.healthy else '▼'} {change.host:<12} {'UP' if change.healthy else 'DOWN'}"
    return text + (f": {change.reason}" if change.reason else "")


def cycle_summary(cycle: HeartbeatCycle) -> str:
    return f"○ {cycle.up}/{cycle.probed} up" + (f", {cycle.down} down" if cycle.down else "")


def cycle_body(cycle: HeartbeatCycle) -> str:
    """The cycle's line without its time: equal bodies mean nothing changed since the cycle before."""
    return f"{cycle_summary(cycle)} │ " + " ".join(f"{host}:{status}" for host, status in cycle.statuses)


def cycle_line(cycle: HeartbeatCycle) -> str:
    return f"{clock(cycle.at)} {cycle_body(cycle)}"


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class HeartbeatLog:
    """Appends lines to the log file, rotating it past `max_bytes`.

    A file that cannot be written (full disk, a file where the directory should be) must not
    stop the heartbeat: `on_error` hears about it once, and the log stops writing.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.on_error = on_error
        self.failed = False
        self._fd: int | None = None
        self._size = 0
        self._closer: weakref.finalize | None = None

    def write(self, lines: Iterable[str]) -> None:
        if self.failed:
            return
        data = "".join(line + "\n" for line in lines).encode()
        if not data:
            return
        try:
            if self._fd is None:
                self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as exc:
            self.failed = True
            self.close()
            if self.on_error is not None:
                self.on_error(f"heartbeat log not written to disk ({self.path}): {exc.strerror or exc}")

    def _open(self) -> None:
        make_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        self._fd = fd
        self._closer = weakref.finalize(self, _close, fd)
        os.fchmod(fd, MODE)  # a file an older version left readable by everyone
        self._size = os.fstat(fd).st_size

    def _rotate(self) -> None:
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._open()

    def close(self) -> None:
        """Close the file; the next line opens it again."""
        if self._closer is not None:
            self._closer()  # closes the descriptor, once
            self._closer = None
        self._fd = None
