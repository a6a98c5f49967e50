"""The console outside the bastion with the embedded proxy on the lab's proxy host: `provision proxy`
installs and starts it (playbooks/proxy-host.yml through the real playbook runner), then a rolling update
under load drops nothing and `canary … weight` changes its weights — over an SSH-forwarded admin port."""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

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


def remote_proxy_config(lab: Lab) -> str:
    """The proxy's own config on its host: the app hosts by name (the console drains them by name)."""
    members = [{"name": h.name, "address": h.address, "port": 8080} for h in lab.apps]
    return yaml.safe_dump({
        "project": "lab", "state_dir": "/srv/opsconsole/proxy/state",
        "groups": {"itrust": {"provider": "static", "hosts": members}},
        # The loader wants an existing deploy playbook even in the proxy's process: this file will do.
        "apps": {"itrust": {"group": "itrust", "repo": "https://git.invalid/itrust.git",
                            "deploy": {"playbook": "/srv/opsconsole/proxy/opsconsole.yaml"}}},
        "proxy": {"admin": {"listen": "127.0.0.1:0", "token_file": "/srv/opsconsole/proxy/token"},
                  "upstream_idle": "1s", "drain_timeout": "10s",
                  "apps": {"itrust": {"listen": f"0.0.0.0:{LISTEN}",
                                      "health": {"path": "/health", "interval": "200ms", "timeout": "500ms",
                                                 "fall": 2, "rise": 1},
                                      "pools": {"stable": {"weight": 100, "members": members},
                                                "canary": {"weight": 0, "members": []}}}}},
    }, sort_keys=False)


def console_config(tmp: Path, lab: Lab, wheelhouse: Path, token: str) -> Path:
    (tmp / "token").write_text(token + "\n")
    (tmp / "token").chmod(0o600)
    (wheel,) = wheelhouse.glob("opsconsole-*.whl")
    proxy_vars = {"proxy_driver": "embedded", "proxy_wheel": str(wheel),
                  "proxy_pip_args": f"--no-index --find-links {wheelhouse}",
                  "proxy_config": remote_proxy_config(lab), "proxy_token": token}
    group = {"provider": "static", "role": "proxy", "provision": str(ROOT / "playbooks" / "proxy-host.yml"),
             "vars": proxy_vars, "hosts": [{"name": "proxy", "address": lab.proxy.address, "user": lab.user}]}
    extra = (f"proxy:\n  driver: embedded\n  host: proxy\n"
             f"  admin: {{listen: 127.0.0.1:0, token_file: {tmp / 'token'}}}\n  drain_timeout: 10s\n"
             f"  apps:\n    itrust:\n      listen: 127.0.0.1:0\n"
             f"      pools:\n        stable: {{group: itrust, weight: 100}}\n")
    cfg = write_lab_config(tmp, lab, extra=extra)
    data = yaml.safe_load(cfg.read_text())
    data["groups"]["proxy"] = group
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


async def test_provisioned_remote_proxy_rolls_without_a_drop_and_takes_weights(
        lab: Lab, tmp_path: Path, wheelhouse: Path) -> None:  # noqa: F811
    token = secrets.token_hex(16)
    engine = Engine(load_config(console_config(tmp_path, lab, wheelhouse, token)))
    engine.prepare()
    url = f"http://{lab.proxy.public_address}:{LISTEN}/"
    try:
        provisioned = await engine.execute(engine.parse("provision proxy"))
        assert provisioned.ok, provisioned.message
        files = Path(lab.proxy.files)
        assert stat.S_IMODE((files / "proxy" / "token").stat().st_mode) == 0o600
        journal = "".join(p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file())
        assert token not in journal

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
    finally:
        await engine.execute(engine.parse("stop itrust"))
        await engine.execute(engine.parse("run proxy -- kill -TERM $(cat run/proxy.pid)"))
        await engine.close()
