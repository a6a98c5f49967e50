"""The lab seen from opsconsole: Host records, SSH options, and a config file for `make lab` users."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import asyncssh
import pytest

from opsconsole.config.model import JumpConfig
from opsconsole.events import EventBus
from opsconsole.hosts import Host
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.pool import SshOptions, SshPool
from opsconsole.transport.ssh import SshTransport

from .lab import Lab


def lab_host(lab: Lab, name: str, *, port: int | None = None) -> Host:
    h = lab.hosts[name]
    role = h.role
    return Host(name=name, group={"app": "itrust"}.get(role, role), address=h.address, transport="ssh",
                root=h.root, port=port, role=role, ssh_user=lab.user)


def lab_runner(pool: SshPool) -> tuple[PlaybookRunner, list[object]]:
    """The real playbook runner over `pool` (one SshTransport per host), and every event it emits."""
    bus = EventBus()
    events: list[object] = []
    bus.subscribe(events.append)
    transports: dict[str, SshTransport] = {}
    return PlaybookRunner(bus, lambda h: transports.setdefault(h.name, SshTransport(h, pool))), events


def record_commands(transport: SshTransport) -> list[str]:
    """Every command `transport` runs on its host from now on, as sent, in the list returned (a test counts
    them); `del transport.run` stops the recording."""
    seen: list[str] = []
    real = transport.run

    async def run(script: str, **kw):  # type: ignore[no-untyped-def]
        seen.append(script)
        return await real(script, **kw)

    transport.run = run  # type: ignore[method-assign]
    return seen


def app_hosts(lab: Lab, base_port: int = 8080) -> list[Host]:
    return [lab_host(lab, h.name, port=base_port) for h in lab.apps]


def ssh_options(lab: Lab, *, known_hosts: Path | None = None, **overrides: object) -> SshOptions:
    options = SshOptions(known_hosts=str(known_hosts or lab.known_hosts), client_keys=(str(lab.client_key),),
                         agent=False, jump=JumpConfig(host=lab.jump.address, port=22, user=lab.user))
    return replace(options, **overrides)  # type: ignore[arg-type]


@contextlib.contextmanager
def asyncssh_packet_log(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """asyncssh's own packet log (debug level 3: a line per SSH and SFTP message) on for the block. Yields
    `take()`: the messages logged since the block began or since the last take."""
    asyncssh.set_debug_level(3)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    caplog.clear()

    def take() -> list[str]:
        messages = [r.getMessage() for r in caplog.records]
        caplog.clear()
        return messages

    try:
        yield take
    finally:
        asyncssh.set_debug_level(1)
