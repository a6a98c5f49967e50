"""HAProxy specifics: the generated config, retry rules, re-applying runtime state after a reload, remote channel."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest

from opsconsole.hosts import Host
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.haproxy import HaproxyDriver, TransportChannel, UnixSocketChannel
from opsconsole.traffic.haproxy_config import render_haproxy_config, server_weights
from opsconsole.transport.local import LocalTransport
from test_proxy_support import app_block, free_port, load, proxy_config_text, start_backend, start_haproxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lab(tmp_path):
    """Write an opsconsole config for HAProxy, generate haproxy.cfg, start it; everything stopped at teardown."""
    started: list = []

    class Lab:
        def backend(self, name, **kw):
            b = start_backend(name, **kw)
            started.append(b)
            return b

        def haproxy(self, apps: str, *, replace=None):
            sock = str(tmp_path / "haproxy.sock")
            text = proxy_config_text(tmp_path, apps, extra=f"driver: haproxy\nhaproxy: {{stats_socket: {sock}, nbthread: 1}}\n")
            self.config_file = tmp_path / "opsconsole.yaml"
            self.config_file.write_text(text)
            self.cfg, _ = load_proxy_config(self.config_file)
            if replace is None:
                self.ports = {app: free_port() for app in self.cfg.frontends}
            hcfg = tmp_path / "haproxy.cfg"
            hcfg.write_text(render_haproxy_config(self.cfg, bind={a: ("127.0.0.1", p) for a, p in self.ports.items()}))
            hp = start_haproxy(hcfg, sock, 0, tmp_path / "haproxy.log", replace=replace)
            started.append(hp)
            self.sock = sock
            return hp

        def driver(self, **kw) -> HaproxyDriver:
            return HaproxyDriver(self.cfg, UnixSocketChannel(self.sock), **kw)

    yield Lab()
    for item in reversed(started):
        (item.kill if hasattr(item, "kill") else item.stop)()


def test_generated_config_is_valid_and_carries_the_guarantees(tmp_path, lab):
    s, c = lab.backend("s1"), lab.backend("c1")
    for split in ("request", "sticky"):
        text = proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=80, canary_weight=20, split=split),
                                 extra="driver: haproxy\nhaproxy: {nbthread: 1}\n")
        f = tmp_path / f"{split}.yaml"
        f.write_text(text)
        cfg, _ = load_proxy_config(f)
        out = render_haproxy_config(cfg, stats_socket=str(tmp_path / "x.sock"), bind={"web": ("127.0.0.1", free_port())})
        hf = tmp_path / f"{split}.cfg"
        hf.write_text(out)
        check = subprocess.run(["haproxy", "-c", "-f", str(hf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        for needle in ("nbthread 1", "observe layer7", "on-error mark-down", "retry-on conn-failure empty-response",
                       "option redispatch", "http-request disable-l7-retry if !METH_GET !METH_HEAD",
                       "server c1 127.0.0.1:%d weight 51" % c.port, "rise 100000", "weight 205"):
            assert needle in out, needle
        assert ("cookie opsconsole_bucket insert" in out) == (split == "sticky")


def test_server_weights_split_pools_and_never_round_a_share_to_zero(tmp_path, lab):
    s1, s2, c = lab.backend("s1"), lab.backend("s2"), lab.backend("c1")
    lab.haproxy(app_block("web", [s1, s2], [c]))
    fe = lab.cfg.frontends["web"]
    assert server_weights(fe, {"stable": 80, "canary": 20}) == {"s1": 102, "s2": 102, "c1": 51}
    assert server_weights(fe, {"stable": 100, "canary": 0})["c1"] == 0
    assert server_weights(fe, {"stable": 100, "canary": 1})["c1"] == 3
    assert server_weights(fe, {"stable": 0, "canary": 0}) == {"s1": 0, "s2": 0, "c1": 0}


def test_retry_rules_through_haproxy(lab):
    s, cg, cp = lab.backend("s1"), lab.backend("cg"), lab.backend("cp")
    dead = lab.backend("cd")
    dead.kill()
    lab.haproxy(app_block("g", [s], [cg], stable_weight=1, canary_weight=100, interval="10s")
                + app_block("p", [s], [cp], stable_weight=1, canary_weight=100, interval="10s")
                + app_block("n", [s], [dead], stable_weight=1, canary_weight=100, interval="10s"))
    # HAProxy runs its first check at once; let it pass on the live canaries before we kill one by request.
    time.sleep(0.3)
    r = httpx.get(f"http://127.0.0.1:{lab.ports['g']}/die?who=cg", timeout=10)
    assert r.status_code == 200 and r.headers["x-member"] == "s1"
    r = httpx.post(f"http://127.0.0.1:{lab.ports['p']}/die?who=cp", content=b"pay=1", timeout=10)
    assert r.status_code in (502, 503), r.text
    rows = asyncio.run(lab.driver()._stats())
    s_posts = [x for x in rows if x["pxname"] == "be_p" and x["svname"] == "s1"][0]
    assert int(s_posts["req_tot"] or 0) == 0  # the POST that was sent never went to stable too
    # Never sent (connection refused): retried, POST or not.
    for _ in range(3):
        r = httpx.post(f"http://127.0.0.1:{lab.ports['n']}/", content=b"pay=1", timeout=10)
        assert r.status_code == 200 and r.headers["x-member"] == "s1"


def test_desired_state_is_reapplied_after_a_haproxy_reload(lab):
    s1, s2, c = lab.backend("s1"), lab.backend("s2"), lab.backend("c1")
    apps = app_block("web", [s1, s2], [c])
    hp = lab.haproxy(apps)
    d = lab.driver()

    async def before():
        await d.set_canary_percent("web", 20)
        await d.drain("web", "s2")
        return await load(lab.ports["web"], total=500, concurrency=4)

    r = asyncio.run(before())
    assert r.members["s2"] == 0 and 70 <= r.members["c1"] <= 130
    # The reload: a new HAProxy from the file (weights 100/0, nobody draining); the old one finishes and goes.
    new = lab.haproxy(apps, replace=hp)
    hp.proc.wait(10)

    async def watch_and_load():
        stop = asyncio.Event()
        watcher = asyncio.create_task(d.watch(0.2, stop))
        await asyncio.sleep(0.8)
        r = await load(lab.ports["web"], total=500, concurrency=4)
        stop.set()
        await watcher
        return r, await d.app("web")

    r, st = asyncio.run(watch_and_load())
    assert d.reapplied == 1
    assert r.failed == 0 and r.members["s2"] == 0 and 70 <= r.members["c1"] <= 130, r.members
    assert st.member("s2").admin == "draining" and st.pools["canary"].weight == 20
    assert new.proc.poll() is None


def test_state_file_carries_the_desired_state_to_a_new_console(tmp_path, lab):
    s, c = lab.backend("s1"), lab.backend("c1")
    hp = lab.haproxy(app_block("web", [s], [c]))
    state = tmp_path / "haproxy-desired.json"
    asyncio.run(lab.driver(state_file=state).set_canary_percent("web", 40))
    hp.stop()  # a full restart this time, not a reload: HAProxy starts from its file (canary 0)
    lab.haproxy(app_block("web", [s], [c]))
    st = asyncio.run(lab.driver(state_file=state).app("web"))
    assert st.pools["canary"].weight == 40
    r = asyncio.run(load(lab.ports["web"], total=500, concurrency=4))
    assert 170 <= r.members["c1"] <= 230


def test_runtime_api_through_a_transport_with_socat(tmp_path, lab):
    s, c = lab.backend("s1"), lab.backend("c1")
    lab.haproxy(app_block("web", [s], [c]))
    transport = LocalTransport(Host(name="proxy-host", group="proxy", address="127.0.0.1", root=str(tmp_path / "ph")))
    d = HaproxyDriver(lab.cfg, TransportChannel(transport, lab.sock))

    async def scenario():
        await d.set_canary_percent("web", 50)
        return await d.app("web")

    st = asyncio.run(scenario())
    assert st.canary_percent == 50.0
    r = asyncio.run(load(lab.ports["web"], total=100, concurrency=1))
    assert 40 <= r.members["c1"] <= 60


def test_sticky_through_haproxy_keeps_each_client_on_one_server(lab):
    s, c = lab.backend("s1"), lab.backend("c1")
    lab.haproxy(app_block("web", [s], [c], stable_weight=50, canary_weight=50, split="sticky"))

    async def clients():
        return [await load(lab.ports["web"], total=5, concurrency=1, cookie=True) for _ in range(40)]

    results = asyncio.run(clients())
    assert all(len(r.members) == 1 for r in results)
    assert 8 <= sum(1 for r in results if "c1" in r.members) <= 32
