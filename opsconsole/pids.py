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
    return parse_stat(raw)


def parse_stat(raw: str) -> list[str]:
    """The fields of a /proc/PID/stat line after the command name, as stat_fields() gives them (for a line
    read some other way, e.g. over SFTP from another host)."""
    return raw[raw.rfind(")") + 2:].split()


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in group `pgid`.

    `killpg(pgid, 0)` alone is not enough: zombies count as members, and where pid 1
    does not reap (some containers) a killed group would look alive forever.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


__all__ = ["group_alive", "parse_stat", "pid_alive", "stat_fields"]
