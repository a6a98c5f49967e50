"""The console outside the bastion with the embedded proxy on the lab's proxy host: `provision proxy`
installs and starts it (playbooks/proxy-host.yml through the real playbook runner) with the config it
renders from the console's own `proxy:` section and the admin token from `secrets:`; then a rolling update
under load drops nothing, `canary … weight` changes its weights — over an SSH-forwarded admin port — and a
proxy killed and started again there gets the operator's weights back from the console's proxy watch."""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
from pathlib import Path

import pytest
import yaml

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from tests.conftest import ROOT, commit_file
from tests.lab import Lab
from tests.lab.config import write_lab_config
from tests.loadgen import Load
from tests.test_ssh_proxy_host import wheelhouse  # noqa: F401  (the fixture)
from tests.test_zero_drop import wait_serving

pytest_plugins = ["tests.lab.fixtures"]

LISTEN = 18081
TOKEN_ENV = "LAB_PROXY_TOKEN"
# How playbooks/proxy-host.yml runs the proxy; the test starts it again so, as a supervisor would after a crash.
PROXY_COMMAND = "exec proxy/venv/bin/python -m opsconsole.proxy --config proxy/opsconsole.yaml --runtime-file run/proxy.json"


def console_config(tmp: Path, lab: Lab, wheelhouse: Path) -> Path:
    """The operator's config: `proxy:` written once (provision renders the proxy host's config from it),
    the admin token a `secrets:` entry (from the environment), no token file anywhere on this machine."""
    (wheel,) = wheelhouse.glob("opsconsole-*.whl")
    proxy_vars = {"proxy_wheel": str(wheel), "proxy_pip_args": f"--no-index --find-links {wheelhouse}"}
    group = {"provider": "static", "role": "proxy", "provision": str(ROOT / "playbooks" / "proxy-host.yml"),
             "vars": proxy_vars, "hosts": [{"name": "proxy", "address": lab.proxy.address, "user": lab.user}]}
    extra = (f"proxy:\n  driver: embedded\n  host: proxy\n"
             f"  admin: {{listen: 127.0.0.1:0, token_secret: proxy_token}}\n"
             f"  upstream_idle: 1s\n  drain_timeout: 10s\n"
             f"  apps:\n    itrust:\n      listen: 0.0.0.0:{LISTEN}\n"
             f"      health: {{path: /health, interval: 200ms, timeout: 500ms, fall: 2, rise: 1}}\n"
             f"      pools:\n        stable: {{group: itrust, weight: 100}}\n"
             f"secrets:\n  proxy_token: {{env: {TOKEN_ENV}}}\n")
    cfg = write_lab_config(tmp, lab, extra=extra)
    data = yaml.safe_load(cfg.read_text())
    data["groups"]["proxy"] = group
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


async def test_provisioned_remote_proxy_rolls_without_a_drop_and_takes_weights(
        lab: Lab, tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    token = secrets.token_hex(16)
    monkeypatch.setenv(TOKEN_ENV, token)
    engine = Engine.open(load_config(console_config(tmp_path, lab, wheelhouse)), watch_proxy=True)
    said: list[str] = []
    engine.bus.subscribe(lambda e: said.append(repr(e)))
    await engine.start()  # the proxy watch: it re-applies weights after a restart, with no operator action
    url = f"http://{lab.proxy.public_address}:{LISTEN}/"
    try:
        provisioned = await engine.execute(engine.parse("provision proxy"))
        assert provisioned.ok, provisioned.message
        files = Path(lab.proxy.files)
        assert stat.S_IMODE((files / "proxy" / "token").stat().st_mode) == 0o600
        assert (files / "proxy" / "token").read_text() == token  # from `secrets:`, through a no_log task
        # The proxy's config on its host is the console's `proxy:` section, members resolved, no token in it.
        rendered = yaml.safe_load((files / "proxy" / "opsconsole.yaml").read_text())
        stable = rendered["proxy"]["apps"]["itrust"]["pools"]["stable"]
        assert "group" not in stable
        assert [(m["name"], m["address"], m["port"]) for m in stable["members"]] == \
            [(h.name, h.address, 8080) for h in lab.apps]
        assert rendered["proxy"]["admin"]["token_file"] == "token" and "host" not in rendered["proxy"]
        assert token not in (files / "proxy" / "opsconsole.yaml").read_text()
        # Nothing the console wrote here holds the token: not its state, not a token file, not the journal.
        written = [p for p in tmp_path.rglob("*") if p.is_file() and "repo" not in p.parts]
        assert written and not [p for p in written if token in p.read_text(errors="replace")]
        assert not any(token in s for s in said)

        assert (await engine.execute(engine.parse("deploy itrust"))).ok
        v1 = engine.views[lab.apps[0].name].version
        await wait_serving(url, timeout=30)

        sha = commit_file(tmp_path / "repo", "message.txt", "v2 behind the remote proxy\n", "v2")
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

        # Weights from the console: the proxy on the other host has them.
        steered = await engine.execute(engine.parse("canary itrust weight 30"))
        assert steered.ok, steered.message
        state = await engine.traffic.driver().app("itrust")
        assert (state.pools["stable"].weight, state.pools["canary"].weight) == (70, 30)
        runtime = json.loads((files / "run" / "proxy.json").read_text())
        assert runtime["admin"].startswith("http://127.0.0.1:")  # loopback there: only the forward reaches it

        # 90/10, then the proxy on its host is killed and comes back (with the config's 100/0): the console
        # notices the new process through the admin API and puts 90/10 back by itself, and says so.
        assert (await engine.execute(engine.parse("canary itrust weight 10"))).ok
        proxy_host = engine.fleet.transport_for(engine.inventory.get("proxy"))
        old_pid = await proxy_host.service_pid("proxy")
        assert old_pid is not None
        await proxy_host.run(f"kill -KILL {old_pid}")
        # A supervisor starts it again once it has exited. A KILLed process lives on while the kernel tears
        # it down, and start_service rightly answers "already running" with its pid until then.
        gone_by = asyncio.get_running_loop().time() + 10
        while await proxy_host.service_pid("proxy") == old_pid:
            assert asyncio.get_running_loop().time() < gone_by, "the KILLed proxy was still alive after 10 s"
            await asyncio.sleep(0.02)
        new_pid = await proxy_host.start_service("proxy", PROXY_COMMAND)
        assert new_pid != old_pid
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                state = await engine.traffic.driver().app("itrust")
                weights = (state.pools["stable"].weight, state.pools["canary"].weight)
            except Exception as exc:  # the proxy is still starting, or its old admin port is forwarded
                weights = repr(exc)
            if weights == (90, 10) and json.loads((files / "run" / "proxy.json").read_text())["pid"] == new_pid:
                break
            assert asyncio.get_running_loop().time() < deadline, f"weights after the restart: {weights}"
            await asyncio.sleep(0.2)
        assert any("restarted" in s and "set back to 10%" in s for s in said), [s for s in said if "proxy" in s]
    finally:
        await engine.execute(engine.parse("stop itrust"))
        await engine.execute(engine.parse("run proxy -- kill -TERM $(cat run/proxy.pid)"))
        await engine.close()
