"""Whether a process of this machine is still there."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` exists, also when it belongs to another user (signal 0 is then refused)."""
    if pid <= 0:
        return False  # 0 and -N name process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses): [0] is the
    state (Z: zombie), [1] the parent, [2] the group, [3] the session, [19] the start time; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


__all__ = ["pid_alive", "stat_fields"]
