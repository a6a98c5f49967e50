"""Over SSH, through the jump host: whether a port listens is asked as a channel on the host's connection
(no command on the host), and the service module's restart says the app listens by it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from opsconsole.playbook.modules import SERVICE, ModuleContext, run_module
from opsconsole.playbook.templating import Templar
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ports import PortInUse
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host, record_commands
from tests.test_ssh_port_in_use import HOLDER

pytest_plugins = ["tests.lab.fixtures"]


async def _held_port(lab: Lab, app1: SshTransport, name: str) -> int:
    log = Path(lab.hosts["app-1"].files) / "log" / f"{name}.log"
    log.unlink(missing_ok=True)
    await app1.start_service(name, HOLDER)
    deadline = time.monotonic() + 20
    while not (log.exists() and "PORT" in log.read_text()):
        assert time.monotonic() < deadline, "the holder never listened"
        await asyncio.sleep(0.05)
    return int(log.read_text().split()[1])


async def test_port_open_tells_a_listening_port_from_a_closed_one(lab: Lab, pool: SshPool) -> None:
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    port = await _held_port(lab, app1, "holder")
    try:
        assert await app1.port_open(port) is True
    finally:
        await app1.stop_service("holder")
    assert await app1.port_open(port) is False


async def test_service_restart_over_ssh_says_it_listens(lab: Lab, pool: SshPool, tmp_path: Path) -> None:
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    port = await _held_port(lab, app1, "probe-port")  # a port free for the web server once the holder stops
    await app1.stop_service("probe-port")
    ctx = ModuleContext(host=app1.host, transport=app1, templar=Templar([]), playbook_dir=tmp_path,
                        on_line=lambda line, stream: None)
    try:
        # A listener up in milliseconds: the module looks for the port for ~0.2 s only (it is no health check;
        # past that it says "running"), and `python3 -m http.server` took longer than that in a loaded CI run
        # (this machine's site .pth files alone cost ~60 ms a start). -S skips them.
        listen = (f"exec python3 -S -c 'import socket, time; s = socket.socket(); "
                  f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", {port})); "
                  f"s.listen(); time.sleep(600)'")
        outcome = await run_module(SERVICE, {"name": "web", "state": "restarted", "port": port, "command": listen},
                                   ctx)
        assert not outcome.failed, outcome.message
        assert outcome.message.endswith(f"listening on {port}"), outcome.message
        assert await app1.port_open(port) is True
    finally:
        await app1.stop_service("web")


async def test_restart_is_one_command_that_frees_its_own_port_first(lab: Lab, pool: SshPool) -> None:
    """A restart stops the old process and starts the new in one command on the host (at a hundred hosts each
    command is a fork of sshd and a shell there); the old process's port is free by the time the new one's
    port check runs, and a port another program holds is still refused by name."""
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    port = await _held_port(lab, app1, "probe-port")
    await app1.stop_service("probe-port")
    serve = f"exec python3 -m http.server {port}"
    commands = record_commands(app1)
    try:
        first = await app1.restart_service("web", serve, port=port)  # nothing ran: a start
        assert len(commands) == 1 and await app1.service_pid("web") == first
        deadline = time.monotonic() + 20
        while not await app1.port_open(port):
            assert time.monotonic() < deadline, "the first web server never listened"
            await asyncio.sleep(0.05)
        commands.clear()
        second = await app1.restart_service("web", serve, port=port)  # its own port: no PortInUse
        assert len(commands) == 1, f"{len(commands)} commands for one restart"
        assert second != first and await app1.service_pid("web") == second
        assert not Path(f"/proc/{first}").exists() or "zombie" in Path(f"/proc/{first}/status").read_text()
    finally:
        del app1.run  # recording ends
        await app1.stop_service("web")
    other = await _held_port(lab, app1, "holder")
    try:
        with pytest.raises(PortInUse):
            await app1.restart_service("web", f"exec python3 -m http.server {other}", port=other)
        assert await app1.service_pid("web") is None
    finally:
        await app1.stop_service("holder")


async def test_restart_of_a_big_process_that_ignores_term_waits_for_its_port(lab: Lab, pool: SshPool) -> None:
    """Found by review: a restart KILLs a process that ignores TERM, and the kernel takes a while to tear
    down a big one, its listening socket with it. The start's port check must not take that for another
    program (it refused, and the service was left down)."""
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    port = await _held_port(lab, app1, "probe-port")
    await app1.stop_service("probe-port")
    stubborn = ("exec python3 -c 'import signal, socket, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "ballast = b\"x\" * (300 << 20); s = socket.socket(); "
                "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                f"s.bind((\"0.0.0.0\", {port})); s.listen(); print(\"UP\", flush=True); time.sleep(600)'")
    log = Path(lab.hosts["app-1"].files) / "log" / "stubborn.log"
    log.unlink(missing_ok=True)
    try:
        pid = await app1.start_service("stubborn", stubborn, port=port)
        for attempt in range(3):
            deadline = time.monotonic() + 20
            while not await app1.port_open(port):
                assert time.monotonic() < deadline, f"attempt {attempt}: the stubborn server never listened"
                await asyncio.sleep(0.05)
            new = await app1.restart_service("stubborn", stubborn, port=port, timeout=0.2)  # TERM ignored: KILL
            assert new != pid and await app1.service_pid("stubborn") == new, f"attempt {attempt}"
            pid = new
    finally:
        await app1.stop_service("stubborn", timeout=0.2)
