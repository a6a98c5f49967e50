"""Deploy the sample app through the jump host to every lab app host, as playbooks/itrust-deploy.yml does."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from opsconsole.hosts import Host
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import app_hosts, ssh_options

pytest_plugins = ["tests.lab.fixtures"]

APP_DIR = Path(__file__).resolve().parent.parent / "opsconsole" / "demo" / "app"
PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
PORT = 8080


def build_artifact(tmp_path: Path, version: str) -> Path:
    src = tmp_path / f"app-{version}"
    shutil.copytree(APP_DIR, src)
    subprocess.run(["sh", "build.sh"], cwd=src, check=True, capture_output=True, env={"OPSCONSOLE_VERSION": version,
                                                                                        "PATH": "/usr/bin:/bin"})
    return src / "dist" / "app.tar.gz"


async def health(transport: SshTransport, port: int, timeout: float = 10.0) -> dict:
    """The app's /health answer, fetched through an SSH port forward (the host is behind the jump)."""
    host, local = await transport.local_endpoint(port)
    async with httpx.AsyncClient() as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                response = await client.get(f"http://{host}:{local}/health", timeout=2)
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{transport.host.name}: not healthy after {timeout}s")
            await asyncio.sleep(0.1)


async def deploy_one(t: SshTransport, artifact: Path, version: str, lines: list[str]) -> None:
    """The steps of itrust-deploy.yml, over the transport."""
    def log(line: str, stream: str) -> None:
        lines.append(f"{t.host.name} {stream}: {line}")

    assert (await t.run(f"mkdir -p releases/{version}", on_line=log)).ok
    await t.put_file(str(artifact), f"releases/{version}/app.tar.gz")
    assert (await t.run("tar xzf app.tar.gz", cwd=f"releases/{version}", on_line=log)).ok
    assert (await t.run(f"ln -sfn releases/{version} current", on_line=log)).ok
    await t.write_file("app.env", f"APP=itrust\nVERSION={version}\nPORT={PORT}\n".encode())
    await t.stop_service("itrust")
    await t.start_service("itrust", f"exec python3 current/app.py --port {PORT}")
    assert (await health(t, PORT))["version"] == version


async def test_deploy_sample_app_through_the_jump_to_every_app_host(lab: Lab, tmp_path: Path) -> None:
    pool = SshPool(ssh_options(lab))
    hosts = app_hosts(lab, PORT)
    transports = [SshTransport(h, pool) for h in hosts]
    lines: list[str] = []
    try:
        for version in ("v1", "v2"):  # a first deploy, then a redeploy over it
            artifact = build_artifact(tmp_path, version)
            for t in transports:  # serial: 1
                await deploy_one(t, artifact, version, lines)
            for t, lab_host in zip(transports, lab.apps):
                files = Path(lab_host.files)
                assert (files / "current").resolve() == files / "releases" / version
                assert (files / "current" / "VERSION").read_text().strip() == version
                assert (await health(t, PORT))["version"] == version
                # The service really runs on that host: its pid lives in that host's network namespace.
                pid = await t.service_pid("itrust")
                assert pid is not None and str(pid) in _ns_pids(lab, lab_host.name).split()
        assert pool.connects == 1 + len(hosts)
    finally:
        for t in transports:
            await t.stop_service("itrust")
        await pool.close()


def _ns_pids(lab: Lab, name: str) -> str:
    return subprocess.run(["ip", "netns", "pids", lab.hosts[name].ns], capture_output=True, text=True).stdout


async def test_deploy_with_the_playbook_runner(lab: Lab, tmp_path: Path) -> None:
    """The real itrust-deploy.yml through PlaybookRunner."""
    from opsconsole.playbook import loader
    from opsconsole.playbook import runner as runner_mod
    from opsconsole.events import EventBus

    pool = SshPool(ssh_options(lab))
    transports: dict[str, SshTransport] = {}

    def transport_for(host: Host) -> SshTransport:
        return transports.setdefault(host.name, SshTransport(host, pool))

    bus = EventBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    runner = runner_mod.PlaybookRunner(bus, transport_for)
    playbook = loader.load_playbook(PLAYBOOKS / "itrust-deploy.yml")
    artifact = build_artifact(tmp_path, "v3")
    hosts = app_hosts(lab, PORT)
    extra = {"app": "itrust", "version": "v3", "commit": "0" * 40, "artifact": str(artifact),
             "service_name": "itrust", "service_command": "python3 current/app.py --port {{ port }} --bind 0.0.0.0"}
    try:
        result = await runner.run(playbook, hosts, extra_vars=extra)
        assert result.ok, json.dumps(getattr(result, "failures", {}))
        for h in hosts:
            assert (await health(transport_for(h), PORT))["version"] == "v3"
    finally:
        for t in transports.values():
            await t.stop_service("itrust")
        await pool.close()
