"""Over SSH, through the jump host: a service whose port another program holds on the host is
refused at start, by port and host name, and nothing is started (see test_port_in_use.py for local)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from opsconsole.transport.pool import SshPool
from opsconsole.transport.ports import PortInUse
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host

pytest_plugins = ["tests.lab.fixtures"]

# The other program: binds port 0 on every address of the host, says which port it got, and holds it.
HOLDER = ("exec python3 -c 'import socket, time; s = socket.socket(); s.bind((\"0.0.0.0\", 0)); s.listen(); "
          "print(\"PORT\", s.getsockname()[1], flush=True); time.sleep(600)'")


async def test_ssh_start_refuses_a_port_another_program_holds(lab: Lab, pool: SshPool) -> None:
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    log = Path(lab.hosts["app-1"].files) / "log" / "holder.log"
    log.unlink(missing_ok=True)
    await app1.start_service("holder", HOLDER)
    try:
        deadline = time.monotonic() + 20
        while not (log.exists() and "PORT" in log.read_text()):
            assert time.monotonic() < deadline, "the holder never listened"
            await asyncio.sleep(0.05)
        port = int(log.read_text().split()[1])
        with pytest.raises(PortInUse) as info:
            await app1.start_service("web", f"exec python3 -m http.server {port}", port=port)
        message = str(info.value)
        assert f"port {port} on app-1" in message and "is already in use" in message
        assert "by python3 (pid" in message  # root on the lab host: ss names the holder
        assert await app1.service_pid("web") is None
        assert not (Path(lab.hosts["app-1"].files) / "run" / "web.pid").exists()
    finally:
        await app1.stop_service("holder")
    # The port is free again: the same start goes through.
    await app1.start_service("web", f"exec python3 -m http.server {port}", port=port)
    try:
        assert await app1.service_pid("web") is not None
    finally:
        await app1.stop_service("web")
