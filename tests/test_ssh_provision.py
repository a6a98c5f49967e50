"""playbooks/app-server.yml and proxy-host.yml on the lab's hosts (through the jump host)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from opsconsole.events import OutputLine, TaskFinished
from opsconsole.playbook.loader import load_playbook
from opsconsole.transport.pool import SshPool
from tests.lab import Lab
from tests.lab.inventory import lab_host, lab_runner

pytest_plugins = ["tests.lab.fixtures"]

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


async def test_app_server_playbook_prepares_every_app_host(lab: Lab, pool: SshPool) -> None:
    runner, events = lab_runner(pool)
    for app in lab.apps:
        events.clear()
        host = lab_host(lab, app.name, port=8080)
        await runner.transport_for(host).run("rm -rf current releases")
        result = await runner.run(load_playbook(PLAYBOOKS / "app-server.yml"), [host], extra_vars={
            "service_command": "exec python3 current/app.py --port 8080"})
        assert result.ok, result.failures
        files = Path(app.files)
        assert all((files / d).is_dir() for d in ("releases", "run", "log"))
        lines = [e.line for e in events if isinstance(e, OutputLine)]
        assert any(f"{app.name} ready under /srv/opsconsole (Python 3" in line for line in lines), lines
        statuses = {e.task: e.status for e in events if isinstance(e, TaskFinished)}
        assert statuses["run the deployed release"] == "skipped"  # nothing deployed yet: nothing started
        assert await runner.transport_for(host).service_pid("itrust") is None


async def test_proxy_host_playbook_and_its_public_leg(lab: Lab, pool: SshPool) -> None:
    runner, _ = lab_runner(pool)
    t = runner.transport_for(lab_host(lab, "proxy"))
    backends = [f"{h.address}:8080" for h in lab.apps]
    try:
        result = await runner.run(load_playbook(PLAYBOOKS / "proxy-host.yml"), [t.host], extra_vars={
            "proxy_backends": backends,
            # a stand-in for the traffic issue's proxy: serve the backend list on the public leg
            "proxy_command": "cd proxy && exec python3 -m http.server 8000 --bind 0.0.0.0"})
        assert result.ok, result.failure_text()
        text = (Path(lab.proxy.files) / "proxy" / "backends.txt").read_text()
        assert [line for line in text.split() if ":8080" in line] == backends
        # The proxy's listen port answers from this (root) namespace, like a public load balancer.
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                try:
                    response = await client.get(f"http://{lab.proxy.public_address}:8000/backends.txt", timeout=2)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        assert response.status_code == 200 and backends[0] in response.text
    finally:
        await t.stop_service("proxy")
