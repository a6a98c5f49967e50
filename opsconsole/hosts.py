"""The host record every part shares: who a host is and how to reach it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Host:
    """One host of the fleet.

    `address` is where its services answer (HTTP probes, wait_for); `port` is
    the app's port on it when the group runs an app. `root` is the base
    directory for our files on the host: for a `local` host a directory under
    the state dir, for an SSH host a path on the remote machine.
    """

    name: str
    group: str
    address: str
    transport: str = "local"  # local | ssh
    root: str = ""
    port: int | None = None
    role: str = ""
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    ssh_port: int = 22
    ssh_user: str | None = None
