"""Whether a process of this machine is still there."""

from __future__ import annotations

import os


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


__all__ = ["pid_alive"]
