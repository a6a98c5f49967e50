"""Rolling updates behind the embedded proxy under real GET load: not one request may fail."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from tests.conftest import ROOT, commit_file, kill_services, write_config, write_secret
from tests.loadgen import Load

pytest_plugins = ["tests.lab.fixtures"]

TOKEN = "zero-drop-test-token"


def proxy_section(tmp: Path, listen: str = "127.0.0.1:0") -> str:
    write_secret(tmp / "token", TOKEN + "\n")
    return f"""
proxy:
  driver: embedded
  admin: {{listen: "unix:{tmp / 'admin.sock'}", token_file: {tmp / 'token'}}}
  runtime_file: {tmp / 'proxy.json'}
  upstream_idle: 1s
  drain_timeout: 10s
  apps:
    itrust:
      listen: {listen}
      pools:
        stable: {{group: itrust, weight: 100}}
      health: {{path: /health, interval: 200ms, timeout: 500ms, fall: 2, rise: 1}}
"""


def start_proxy(cfg: Path, tmp: Path, prefix: list[str] | None = None) -> tuple[subprocess.Popen, dict]:
    runtime = tmp / "proxy.json"
    runtime.unlink(missing_ok=True)
    log = open(tmp / "proxy.log", "w")
    proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "opsconsole", "proxy", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 20
    while time.time() < deadline:
        if runtime.exists():
            try:
                return proc, json.loads(runtime.read_text())
            except ValueError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the proxy did not start: {(tmp / 'proxy.log').read_text()}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_serving(url: str, timeout: float = 15.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


@pytest.fixture
def local_fleet(tmp_path: Path):
    cfg = write_config(tmp_path, count=3, extra=proxy_section(tmp_path))
    engine = Engine(load_config(cfg))
    engine.prepare()
    yield cfg, engine
    kill_services(tmp_path / "state")


async def test_rolling_update_under_load_drops_nothing(local_fleet, tmp_path: Path) -> None:
    cfg, engine = local_fleet
    proxy = None
    try:
        assert (await engine.execute(engine.parse("deploy itrust"))).ok
        v1 = engine.views["itrust-1"].version
        proxy, runtime = start_proxy(cfg, tmp_path)
        url = f"http://127.0.0.1:{runtime['frontends']['itrust']['port']}/"
        await wait_serving(url)
        sha = commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        load = Load(url).start()
        await load.more()  # clients are being served before the roll starts
        outcome = await engine.execute(engine.parse("roll itrust"))
        await load.more()  # … and after it ends
        result = await load.stop()
        assert outcome.ok, outcome.message
        assert result.failures == [], result.failures[:5]
        assert result.ok > 200
        assert set(result.versions) == {v1, sha[:7]}  # both versions served during the roll, no error between
        assert all(engine.views[f"itrust-{i}"].version == sha[:7] for i in (1, 2, 3))
        state = await engine.traffic.driver().app("itrust")
        assert all(m.admin == "enabled" for m in state.pools["stable"].members)  # every host back in the pool
        # Clients saw no error; and thanks to the drain the proxy never even had to retry one
        # (its retries would hide a rollout that restarts hosts still in the pool).
        stable = state.pools["stable"].counters
        assert (stable.errors, stable.retries) == (0, 0)
    finally:
        if proxy is not None:
            stop(proxy)
        await engine.close()


async def test_unhealthy_build_stops_at_first_host_under_load(local_fleet, tmp_path: Path) -> None:
    cfg, engine = local_fleet
    proxy = None
    try:
        assert (await engine.execute(engine.parse("deploy itrust"))).ok
        v1 = engine.views["itrust-1"].version
        proxy, runtime = start_proxy(cfg, tmp_path)
        url = f"http://127.0.0.1:{runtime['frontends']['itrust']['port']}/"
        await wait_serving(url)
        commit_file(tmp_path / "repo", "HEALTHY", "no\n", "a build that fails its health check")
        load = Load(url).start()
        await load.more()  # clients are being served before the roll starts
        outcome = await engine.execute(engine.parse("roll itrust"))
        await load.more()  # … and after it ends
        result = await load.stop()
        assert not outcome.ok and "itrust-1" in outcome.message
        assert result.failures == [], result.failures[:5]
        assert set(result.versions) == {v1}  # the bad version never served a client
        state = await engine.traffic.driver().app("itrust")
        admin = {m.name: m.admin for m in state.pools["stable"].members}
        assert admin["itrust-1"] != "enabled" and admin["itrust-2"] == admin["itrust-3"] == "enabled"
    finally:
        if proxy is not None:
            stop(proxy)
        await engine.close()


async def test_rolling_update_of_lab_hosts_through_lab_proxy_drops_nothing(lab, tmp_path: Path) -> None:
    """The same through the SSH lab: app hosts behind the jump host, the proxy on the lab's proxy host
    (one leg public, one on the private network), the console steering it over its admin socket."""
    from tests.lab.config import write_lab_config

    public = lab.proxy.public_address
    cfg = write_lab_config(tmp_path, lab, extra=proxy_section(tmp_path, listen=f"{public}:18080"))
    engine = Engine(load_config(cfg))
    engine.prepare()
    proxy = None
    try:
        assert (await engine.execute(engine.parse("deploy itrust"))).ok
        v1 = engine.views[lab.apps[0].name].version
        proxy, runtime = start_proxy(cfg, tmp_path, prefix=["ip", "netns", "exec", lab.proxy.ns])
        url = f"http://{public}:18080/"
        await wait_serving(url)
        sha = commit_file(tmp_path / "repo", "message.txt", "v2 in the lab\n", "v2")
        load = Load(url, max_seconds=90).start()
        await load.more()  # clients are being served before the roll starts
        outcome = await engine.execute(engine.parse("roll itrust"))
        await load.more()  # … and after it ends
        result = await load.stop()
        assert outcome.ok, outcome.message
        assert result.failures == [], result.failures[:5]
        assert set(result.versions) == {v1, sha[:7]}
        state = await engine.traffic.driver().app("itrust")
        assert (state.pools["stable"].counters.errors, state.pools["stable"].counters.retries) == (0, 0)
        assert all(engine.views[h.name].version == sha[:7] for h in lab.apps)

        # a build that fails its health check stops at the first host, under the same load
        commit_file(tmp_path / "repo", "HEALTHY", "no\n", "a build that fails its health check")
        load = Load(url, max_seconds=90).start()
        await load.more()  # clients are being served before the roll starts
        outcome = await engine.execute(engine.parse("roll itrust"))
        await load.more()  # … and after it ends
        result = await load.stop()
        first, *others = [h.name for h in lab.apps]
        assert not outcome.ok and first in outcome.message and "not touched" in outcome.message
        assert result.failures == [], result.failures[:5]
        assert set(result.versions) == {sha[:7]}  # the bad version never reached a client
        state = await engine.traffic.driver().app("itrust")
        admin = {m.name: m.admin for m in state.pools["stable"].members}
        assert admin[first] != "enabled" and all(admin[h] == "enabled" for h in others)
    finally:
        if proxy is not None:
            stop(proxy)
        await engine.execute(engine.parse("stop itrust"))
        await engine.close()
