"""Builds on a build host (`build.host:`), as Jenkins builds on its own agent: the lab's db host stands in for
the build machine. A real git repo is checked out here, shipped there over SSH (through the jump host), built
there with only the allow-listed environment and `build.env`, its log streamed into the build queue; the
artifact comes back with its sha256 checked, and `roll` deploys it. A cancelled build is killed there."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import yaml

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import OutputLine
from tests.conftest import commit_file
from tests.lab import Lab
from tests.lab.config import write_lab_config

pytest_plugins = ["tests.lab.fixtures"]

SLEEPER = "sleep 300 & echo $! > sleeper.pid; wait"  # a build that runs until killed, its child's pid on disk


def build_host_config(tmp: Path, lab: Lab) -> Path:
    cfg = write_lab_config(tmp, lab)
    data = yaml.safe_load(cfg.read_text())
    data["groups"]["builders"] = {"provider": "static", "role": "build",
                                  "hosts": [{"name": "builder", "address": lab.db.address, "user": lab.user}]}
    itrust = data["apps"]["itrust"]
    itrust["build"].update(host="builder", env=["LAB_BUILD_FLAG"], commands=["sh build.sh", "env | sort"])
    data["apps"]["slow"] = {**itrust, "demo_repo": False,
                            "build": {"host": "builder", "artifact": "never.tar.gz", "commands": [SLEEPER],
                                      "env": ["LAB_BUILD_FLAG"]}}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process is gone
        return b""


async def until(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_build_on_a_build_host_comes_back_checked_then_rolls_and_cancel_kills_it(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_BUILD_FLAG", "flag-for-the-build")  # named by build.env: the build sees it
    monkeypatch.setenv("LAB_CONSOLE_ONLY", "kept-on-the-console")  # not named: it must not reach the host
    engine = Engine(load_config(build_host_config(tmp_path, lab)))
    engine.prepare()
    lines: list[OutputLine] = []
    engine.bus.subscribe(lambda e: lines.append(e) if isinstance(e, OutputLine) else None)
    host_files = Path(lab.db.files)
    try:
        sha = commit_file(tmp_path / "repo", "message.txt", "built on the build host\n", "v-build-host")
        built = await engine.execute(engine.parse("build itrust"))
        assert built.ok, built.message
        record = engine.deployer.builds.artifact_for("itrust", sha)
        assert record is not None and record.sha256
        # Built there: the work tree is on the build host, not here; what came back is byte for byte the same.
        on_host = host_files / "builds" / "itrust" / "dist" / "app.tar.gz"
        assert on_host.is_file()
        assert not (tmp_path / "state" / "builds" / "work" / "itrust" / "dist").exists()
        here = Path(record.artifact or "").read_bytes()
        assert hashlib.sha256(here).hexdigest() == record.sha256 == hashlib.sha256(on_host.read_bytes()).hexdigest()

        # The log streamed into the build queue, as a local build's, and into the build's log file.
        out = [e.line for e in lines if e.source == record.build_id]
        assert f"built dist/app.tar.gz for version {sha[:7]}" in out, out
        assert f"built dist/app.tar.gz for version {sha[:7]}" in Path(record.log or "").read_text()
        # The host's environment: its allow-list, build.env and ours; not the console's others, not sshd's.
        assert "LAB_BUILD_FLAG=flag-for-the-build" in out and f"OPSCONSOLE_VERSION={sha[:7]}" in out
        assert any(line.startswith("PATH=") for line in out)
        leaked = [line for line in out if line.startswith(("LAB_CONSOLE_ONLY=", "SSH_CONNECTION=", "SSH_CLIENT="))]
        assert leaked == []

        rolled = await engine.execute(engine.parse("roll itrust"))
        assert rolled.ok, rolled.message
        assert all(engine.views[h.name].version == sha[:7] for h in lab.apps)
        assert [r.build_id for r in engine.deployer.builds.records() if r.app == "itrust"] == [record.build_id]

        # Cancel: the build's processes on the build host die with it.
        building = asyncio.ensure_future(engine.execute(engine.parse("build slow")))
        pid_file = host_files / "builds" / "slow" / "sleeper.pid"
        await until(lambda: pid_file.is_file() and pid_file.read_text().strip().isdigit(), "the slow build to start")
        pid = pid_file.read_text().strip()
        assert lab.exec("db", "sh", "-c", f"kill -0 {pid}", check=False).returncode == 0
        # While it runs, the build.env value is in no process's arguments on the build host (whose processes
        # this machine's /proc shows: the lab's hosts are network namespaces). `env -i NAME=value` put it there.
        in_argv = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"flag-for-the-build" in _read(p)]
        assert in_argv == [], [_read(p) for p in in_argv]
        (running,) = [r for r in engine.deployer.builds.records() if r.app == "slow" and r.status == "running"]
        cancelled = await engine.execute(engine.parse(f"cancel build {running.build_id}"))
        assert cancelled.ok, cancelled.message
        assert not (await building).ok
        await until(lambda: lab.exec("db", "sh", "-c", f"kill -0 {pid}", check=False).returncode != 0,
                    "the cancelled build's process on the build host to die", timeout=15)
        final = [r for r in engine.deployer.builds.records() if r.build_id == running.build_id]
        assert final[-1].status == "cancelled"
    finally:
        await engine.execute(engine.parse("stop itrust"))
        await engine.close()
