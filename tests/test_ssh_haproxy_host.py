"""The console outside the bastion with HAProxy on the lab's proxy host: `provision proxy` puts the
distribution's HAProxy there (in the lab the `haproxy` binary installed on this machine stands in for
`apt-get install haproxy`: the playbook finds it and installs nothing), with the generated config and its
runtime socket; the console steers it through socat over SSH. A rolling update under load drops nothing,
a SIGKILLed canary costs no client an error, and `canary … weight` changes HAProxy's weights."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.haproxy_config import render_haproxy_config
from tests.conftest import ROOT, commit_file
from tests.lab import Lab
from tests.lab.config import write_lab_config
from tests.loadgen import Load
from tests.test_zero_drop import wait_serving

pytest_plugins = ["tests.lab.fixtures"]

LISTEN = 18082
SOCKET = "/srv/opsconsole/run/haproxy.sock"  # on the proxy host


def console_config(tmp: Path, lab: Lab) -> Path:
    stable, canary = lab.apps[:-1], lab.apps[-1]
    extra = (f"proxy:\n  driver: haproxy\n  haproxy: {{host: proxy, stats_socket: {SOCKET}, nbthread: 1}}\n"
             f"  drain_timeout: 10s\n  connect_timeout: 1s\n"
             f"  apps:\n    itrust:\n      listen: 0.0.0.0:{LISTEN}\n"
             f"      health: {{path: /health, interval: 200ms, timeout: 500ms, fall: 2, rise: 1}}\n"
             f"      pools:\n        stable: {{group: itrust, weight: 100}}\n"
             f"        canary: {{group: itrust-canary, weight: 0}}\n")
    cfg = write_lab_config(tmp, lab, extra=extra)
    data = yaml.safe_load(cfg.read_text())
    hosts = data["groups"]["itrust"]["hosts"]
    data["groups"]["itrust"]["hosts"] = [h for h in hosts if h["name"] != canary.name]
    data["groups"]["itrust-canary"] = {"provider": "static", "role": "app",
                                       "hosts": [h for h in hosts if h["name"] == canary.name]}
    data["apps"]["itrust-canary"] = {**data["apps"]["itrust"], "group": "itrust-canary"}
    data["groups"]["proxy"] = {"provider": "static", "role": "proxy",
                               "provision": str(ROOT / "playbooks" / "proxy-host.yml"),
                               "vars": {},
                               "hosts": [{"name": "proxy", "address": lab.proxy.address, "user": lab.user}]}
    # No haproxy_config variable: `provision proxy` renders haproxy.cfg from the `proxy:` section above.
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    assert len(stable) >= 2
    return cfg


async def test_provisioned_haproxy_on_its_host_rolls_survives_a_canary_kill_and_takes_weights(
        lab: Lab, tmp_path: Path) -> None:
    engine = Engine(load_config(console_config(tmp_path, lab)))
    engine.prepare()
    url = f"http://{lab.proxy.public_address}:{LISTEN}/"
    canary = lab.apps[-1].name
    said: list[str] = []
    engine.bus.subscribe(lambda e: said.append(repr(e)))
    try:
        provisioned = await engine.execute(engine.parse("provision proxy"))
        assert provisioned.ok, provisioned.message
        # found, so not installed: no apt-get in a test
        assert any("/usr/sbin/haproxy" in s for s in said), said
        assert not any("apt-get" in s for s in said), [s for s in said if "apt-get" in s]
        assert (Path(lab.proxy.files) / "run" / "haproxy.sock").is_socket()
        # The config on the host is the one the console renders from its own `proxy:` section.
        proxy, _ = load_proxy_config(tmp_path / "lab.yaml")
        assert (Path(lab.proxy.files) / "proxy" / "haproxy.cfg").read_text() == render_haproxy_config(proxy)

        assert (await engine.execute(engine.parse("deploy itrust"))).ok
        assert (await engine.execute(engine.parse("deploy itrust-canary"))).ok
        v1 = engine.views[lab.apps[0].name].version
        await wait_serving(url, timeout=30)

        sha = commit_file(tmp_path / "repo", "message.txt", "v2 behind haproxy\n", "v2")
        load = Load(url, max_seconds=90).start()
        await load.more()  # clients are being served before the roll starts
        outcome = await engine.execute(engine.parse("roll itrust"))
        await load.more()  # … and after it ends
        result = await load.stop()
        assert outcome.ok, outcome.message
        assert result.failures == [], result.failures[:5]
        assert set(result.versions) == {v1, sha[:7]}

        # Weights from the console, through socat on the proxy host.
        steered = await engine.execute(engine.parse("canary itrust weight 50"))
        assert steered.ok, steered.message
        state = await engine.traffic.driver().app("itrust")
        assert (state.pools["stable"].weight, state.pools["canary"].weight) == (50, 50)

        # The canary SIGKILLed under load: HAProxy retries elsewhere, no client sees an error.
        load = Load(url, max_seconds=60).start()
        await load.more()
        # the whole process group (the service leads its own session): nothing of it may keep the port
        killed = await engine.execute(engine.parse(f"run {canary} -- kill -KILL -$(cat run/itrust-canary.pid)"))
        assert killed.ok, killed.message
        deadline = asyncio.get_running_loop().time() + 10
        while lab.exec(canary, "ss", "-Htln", "sport = :8080").stdout.strip():
            assert asyncio.get_running_loop().time() < deadline, "the canary still listens after SIGKILL"
            await asyncio.sleep(0.1)
        deadline = asyncio.get_running_loop().time() + 15
        while (await engine.traffic.driver().app("itrust")).member(canary).healthy:
            assert asyncio.get_running_loop().time() < deadline, "HAProxy never saw the canary die"
            await asyncio.sleep(0.1)
        await load.more()
        result = await load.stop()
        assert result.failures == [], result.failures[:5]
    finally:
        await engine.execute(engine.parse("stop itrust"))
        await engine.execute(engine.parse("stop itrust-canary"))
        await engine.execute(engine.parse("run proxy -- kill -TERM $(cat run/proxy.pid)"))
        await engine.close()
