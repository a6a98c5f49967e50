"""A service whose port another program holds: a clear error at start that names the port and the host.

The other program is a real listener in this test process (bound to port 0, so the port is
free for no one else); the service is started through the local transport directly, and
through the engine (`start`) and the shipped deploy playbook (`deploy`), headless.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, kill_services, write_config
from opsconsole.hosts import Host
from opsconsole.transport.local import LocalTransport
from opsconsole.transport.ports import PortInUse


@pytest.fixture(params=["127.0.0.1", "0.0.0.0"])
def held_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port another program (this test) listens on: on loopback, and on every address."""
    with socket.socket() as listener:
        listener.bind((request.param, 0))
        listener.listen()
        yield listener.getsockname()[1]


async def test_local_start_refuses_a_held_port_by_name_and_starts_nothing(tmp_path: Path, held_port: int) -> None:
    transport = LocalTransport(Host(name="web-2", group="web", address="127.0.0.1", root=str(tmp_path / "web-2")))
    command = f"exec {sys.executable} -m http.server {held_port} --bind 127.0.0.1"
    with pytest.raises(PortInUse) as info:
        await transport.start_service("web", command, port=held_port)
    message = str(info.value)
    assert f"port {held_port} on web-2 (127.0.0.1) is already in use" in message
    assert message.startswith("web-2: cannot start web:")
    # As root `ss -p` may name the holder: this very process.
    if os.geteuid() == 0 and "by another program" not in message:
        assert f"(pid {os.getpid()})" in message
    assert not (tmp_path / "web-2" / "run" / "web.pid").exists()
    assert await transport.service_pid("web") is None


async def test_local_start_on_a_free_port_starts_as_before(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: free, and not listened on
    transport = LocalTransport(Host(name="web-1", group="web", address="127.0.0.1", root=str(tmp_path / "web-1")))
    pid = await transport.start_service("web", "exec sleep 300", port=port)
    try:
        assert await transport.service_pid("web") == pid
    finally:
        assert await transport.stop_service("web") is True


def run_script(cfg: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                          input=script, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("held_port", ["127.0.0.1"], indirect=True)
def test_deploy_and_start_name_the_held_port_instead_of_failing_the_health_check(tmp_path: Path,
                                                                                 held_port: int) -> None:
    cfg = write_config(tmp_path, count=1)
    cfg.write_text(cfg.read_text().replace("    count: 1\n", f"    count: 1\n    base_port: {held_port}\n", 1))
    try:
        deploy = run_script(cfg, "deploy itrust\n")
        out = deploy.stdout + deploy.stderr
        assert deploy.returncode == 1, out
        assert f"port {held_port} on itrust-1 (127.0.0.1) is already in use" in out
        assert "restart the app" in out  # the deploy playbook's service task is where it stopped
        assert "health check" not in out.split("already in use", 1)[1]  # it never got as far as probing
        start = run_script(cfg, "start itrust\n")
        assert start.returncode == 1
        assert f"port {held_port} on itrust-1 (127.0.0.1) is already in use" in start.stdout + start.stderr
        assert not list((tmp_path / "state").glob("hosts/*/run/itrust.pid"))
        journal = [json.loads(line) for line in (tmp_path / "state" / "journal.jsonl").read_text().splitlines()]
        assert any(f"port {held_port}" in json.dumps(e) for e in journal if e["kind"] == "command.end")
    finally:
        kill_services(tmp_path / "state")


def test_a_service_port_that_is_no_port_is_refused_when_the_playbook_loads(tmp_path: Path) -> None:
    from opsconsole.yamlsource import SourceError
    from opsconsole.playbook.loader import load_playbook

    playbook = tmp_path / "bad.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - name: run it\n      opsconsole.builtin.service:\n"
                        "        name: web\n"
                        "        state: started\n        command: sleep 1\n        port: 70000\n")
    with pytest.raises(SourceError) as info:
        load_playbook(playbook)
    assert f"{playbook}:8: plays[0].tasks[0].opsconsole.builtin.service.port: 70000 is not a TCP port" in str(info.value)
