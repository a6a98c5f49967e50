"""Whether a loopback port is still held by the process a runtime file names.

A proxy that died leaves its runtime file behind; its admin port is then free for any local user to
listen on, and a console that trusted the file would send that user the admin token. So before the
token goes to a port read from a runtime file, the file's pid must be alive and hold the listening
socket: the socket inode /proc/net/tcp{,6} lists for the port is among /proc/PID/fd's sockets. After
that, the process's start time pins its identity: while that same process lives, it keeps the port.
"""

from __future__ import annotations

import os
from pathlib import Path

from opsconsole.pids import stat_fields

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def listening_inodes(port: int) -> set[int]:
    """Inodes of the sockets listening on TCP `port` (IPv4 and IPv6) in this network namespace."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 here
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` has open; PermissionError if it is another user's."""
    inodes: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None if it is gone or a zombie: with the pid,
    it names one process, not whichever the kernel gives that pid next."""
    fields = stat_fields(pid)
    return None if fields is None or fields[0] in ("Z", "X") else fields[19]


def port_holder_problem(pid: int, port: int) -> str | None:
    """Why process `pid` is not the one listening on `port`, or None when it is."""
    if start_time(pid) is None:
        return f"its process {pid} is not running"
    listening = listening_inodes(port)
    if not listening:
        return f"nothing listens on port {port}"
    try:
        owned = socket_inodes(pid)
    except PermissionError:
        return f"process {pid} belongs to another user, so whether it holds port {port} cannot be checked"
    except FileNotFoundError:
        return f"its process {pid} is not running"
    if not listening & owned:
        return f"port {port} is held by another process than {pid}"
    return None


__all__ = ["listening_inodes", "port_holder_problem", "socket_inodes", "start_time"]
