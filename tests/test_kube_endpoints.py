"""EndpointSlices → the traffic proxy: the stable and canary Services' ready endpoints become the
proxy's pool members, canary weights stay exact, and a dropped watch is reopened.

The API server is kmock (a real HTTP server, tests/kubelab.py) behind a TCP relay that can cut the
client's connections; the slices are written by a stand-in for the EndpointSlice controller
(tests/kubecontroller.py). The "pods" are real loopback processes, the proxy is the real embedded
proxy process, the traffic real HTTP requests through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from opsconsole.config.loader import load_config
from opsconsole.kube.client import KubeClient
from opsconsole.kube.endpoints import EndpointFollower, ready_endpoints
from opsconsole.kube.manifests import kube_section
from opsconsole.traffic.base import AppTraffic, Endpoint
from opsconsole.traffic.embedded import EmbeddedDriver
from tests.kubecontroller import StandInEndpointSlices
from tests.kubelab import Relay, kube_api, write_kubeconfig
from tests.loadwrk import need, start_wrk
from tests.stdlib_backend import start_backend  # small real apps: ThreadingHTTPServer, listen backlog 5
from tests.test_proxy_support import TOKEN, Backend, LoadResult, ProxyProc, load, start_proxy

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def proxy_lab_config(tmp_path: Path, kubeconfig: Path) -> str:
    """examples/kubernetes.yaml with the lab's kubeconfig, a token from the environment and quick checks."""
    text = (ROOT / "examples" / "kubernetes.yaml").read_text()
    text = text.replace("state_dir: ../.demo/state-k8s", f"state_dir: {tmp_path / 'state'}")
    text = text.replace("      # kubeconfig: ~/.kube/lab ", f"      kubeconfig: {kubeconfig} ")
    text = text.replace("    token_file: ../.demo/proxy.token", "    token_env: OPSC_TEST_PROXY_TOKEN")
    text = text.replace("  runtime_file: ../.demo/proxy-k8s.json\n", "")
    text = text.replace("health: {path: /health, interval: 1s, timeout: 2s, fall: 2, rise: 2}",
                        "health: {path: /health, interval: 200ms, timeout: 1s, fall: 2, rise: 2}")
    assert "token_env" in text and "interval: 200ms" in text, "examples/kubernetes.yaml changed shape"
    return text


@dataclass
class Lab:
    api: Any
    proxy: ProxyProc
    driver: EmbeddedDriver
    slices: StandInEndpointSlices
    relay: Relay
    follower: EndpointFollower
    backends: dict[str, Backend]
    said: list[str]

    @property
    def port(self) -> int:
        return self.proxy.port("checkbox")

    async def until(self, what: str, check: Callable[[AppTraffic], bool], timeout: float = 15) -> AppTraffic:
        deadline = time.monotonic() + timeout
        while True:
            st = await self.driver.app("checkbox")
            if check(st):
                return st
            assert time.monotonic() < deadline, f"{what}: never happened; proxy has {members(st)}; said {self.said[-5:]}"
            await asyncio.sleep(0.05)


def members(st: AppTraffic, pool: str | None = None) -> dict[str, list[str]] | list[str]:
    if pool is not None:
        return sorted(m.name for m in st.pools[pool].members if not m.removed)
    return {p: sorted(m.name for m in st.pools[p].members if not m.removed) for p in st.pools}


def _all_members(st: AppTraffic, pool: str) -> list[str]:
    """Draining ones too."""
    return [m.name for m in st.pools[pool].members]


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    backends = {n: start_backend(n) for n in ("checkbox-s1", "checkbox-s2", "checkbox-s3", "checkbox-c1", "checkbox-c2")}
    proxy = None
    try:
        async with kube_api() as (api, url), Relay(url) as relay:
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", relay.url)  # opsconsole's way in: cuttable
            direct = write_kubeconfig(tmp_path / "kubeconfig-direct", url)  # the stand-in controller's
            text = proxy_lab_config(tmp_path, kubeconfig)
            proxy = start_proxy(tmp_path, text)
            config = load_config(tmp_path / "opsconsole.yaml")
            said: list[str] = []
            async with KubeClient(kube_section(config.groups["checkbox"])) as client, \
                    StandInEndpointSlices(direct) as slices, \
                    EmbeddedDriver.from_runtime_file(tmp_path / "proxy-runtime.json", TOKEN) as driver:
                follower = EndpointFollower(client, "checkbox", {"stable": "checkbox", "canary": "checkbox-canary"},
                                            lambda: driver, lambda text, level: said.append(text))
                task = asyncio.ensure_future(follower.run())
                try:
                    yield Lab(api, proxy, driver, slices, relay, follower, backends, said)
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
    finally:
        if proxy is not None:
            proxy.stop()
        for b in backends.values():
            b.kill()


def test_kube_ready_endpoints_from_slices() -> None:
    def slice_(service: str, port: int, *endpoints: dict) -> dict:
        return {"metadata": {"name": f"{service}-x", "labels": {"kubernetes.io/service-name": service}},
                "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": port}],
                "endpoints": list(endpoints)}

    got = ready_endpoints([slice_("web", 8080,
                                  {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "targetRef": {"name": "web-a"}},
                                  {"addresses": ["10.0.0.2"], "conditions": {}, "targetRef": {"name": "web-b"}},
                                  {"addresses": ["10.0.0.3"], "conditions": {"ready": False}, "targetRef": {"name": "web-c"}},
                                  {"addresses": ["10.0.0.4"], "conditions": {"ready": False, "terminating": True}},
                                  {"addresses": ["10.0.0.5"]})])
    # unset `ready` counts as ready (the API's rule); not ready and terminating do not; no targetRef: address:port
    assert got == [Endpoint("10.0.0.5:8080", "10.0.0.5", 8080), Endpoint("web-a", "10.0.0.1", 8080),
                   Endpoint("web-b", "10.0.0.2", 8080)]


async def test_kube_endpoints_become_pool_members_and_canary_weights_stay_exact(lab: Lab) -> None:
    b = lab.backends
    for pod in ("checkbox-s1", "checkbox-s2"):
        await lab.slices.publish("checkbox", pod, b[pod].port)
    await lab.slices.publish("checkbox-canary", "checkbox-c1", b["checkbox-c1"].port)
    await lab.until("the pods became members", lambda st: members(st) ==
                    {"stable": ["checkbox-s1", "checkbox-s2"], "canary": ["checkbox-c1"]})

    await lab.driver.set_canary_percent("checkbox", 20)
    r = await load(lab.port, total=2000, concurrency=8)
    assert r.failed == 0, (r.statuses, r.errors[:5])
    assert abs(r.members["checkbox-c1"] / sum(r.members.values()) - 0.20) <= 0.03, r.members

    # A pod goes not-ready: out of its pool, nothing fails, and the canary's share does not move.
    await lab.slices.set_ready("checkbox", "checkbox-s2", b["checkbox-s2"].port, ready=False)
    await lab.until("the not-ready pod left", lambda st: members(st, "stable") == ["checkbox-s1"])
    # A second canary pod comes: the canary's 20% is now split between two pods, still 20% in all.
    await lab.slices.publish("checkbox-canary", "checkbox-c2", b["checkbox-c2"].port)
    st = await lab.until("the second canary pod joined", lambda st: members(st, "canary") == ["checkbox-c1", "checkbox-c2"])
    assert (st.pools["stable"].weight, st.pools["canary"].weight) == (80, 20)
    r = await load(lab.port, total=2000, concurrency=8)
    assert r.failed == 0, (r.statuses, r.errors[:5])
    assert r.members["checkbox-s2"] == 0, r.members
    canary = r.members["checkbox-c1"] + r.members["checkbox-c2"]
    assert abs(canary / sum(r.members.values()) - 0.20) <= 0.03, r.members
    assert min(r.members["checkbox-c1"], r.members["checkbox-c2"]) > 100, r.members

    # The slice deleted (the Service's pod gone): its member goes too.
    await lab.slices.remove("checkbox-c1")
    await lab.until("the deleted slice's pod left", lambda st: members(st, "canary") == ["checkbox-c2"])


async def test_kube_endpoints_watch_dropped_is_reopened_from_its_resource_version(lab: Lab) -> None:
    b = lab.backends
    await lab.slices.publish("checkbox", "checkbox-s1", b["checkbox-s1"].port)
    await lab.until("the first pod became a member", lambda st: members(st, "stable") == ["checkbox-s1"])
    watches_before = [line for line in lab.relay.requests if "watch=" in line and "endpointslices" in line]
    assert len(watches_before) == 1, lab.relay.requests

    lab.relay.drop()  # the server's side of every open connection, the watch stream among them, is gone
    await lab.slices.publish("checkbox", "checkbox-s3", b["checkbox-s3"].port)
    await lab.until("a pod published after the drop became a member",
                    lambda st: members(st, "stable") == ["checkbox-s1", "checkbox-s3"])
    assert lab.follower.reopened >= 1
    watches = [line for line in lab.relay.requests if "watch=" in line and "endpointslices" in line]
    assert len(watches) >= 2
    assert "resourceVersion=" in watches[-1], watches[-1]  # reopened from where it was, not listed afresh
    lists = [line for line in lab.relay.requests if "endpointslices" in line and "watch=" not in line]
    assert len(lists) == 1, lists
    assert any("watching again" in s for s in lab.said), lab.said


async def test_kube_endpoints_watch_gone_silent_is_relisted(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice watch that never speaks again (a load balancer dropped it without a RST) once left the pools as
    they were for good: pods gone stayed members, new ones never came. The slices are listed afresh every
    RELIST seconds."""
    from opsconsole.kube import endpoints

    b = lab.backends
    await lab.slices.publish("checkbox", "checkbox-s1", b["checkbox-s1"].port)
    await lab.until("the first pod became a member", lambda st: members(st, "stable") == ["checkbox-s1"])
    monkeypatch.setattr(endpoints, "RELIST", 0.5)
    lab.api.silent_watches = True
    lab.relay.drop()  # the watch reopens, and the new one says nothing at all
    await lab.slices.publish("checkbox", "checkbox-s3", b["checkbox-s3"].port)
    await lab.slices.remove("checkbox-s1")
    await lab.until("the pools as the slices say, from a list", lambda st: members(st, "stable") == ["checkbox-s3"])


@dataclass
class EngineLab:
    engine: "Engine"
    driver: EmbeddedDriver
    slices: StandInEndpointSlices
    proxy: ProxyProc
    backends: dict[str, Backend]


@contextlib.asynccontextmanager
async def engine_lab(tmp_path: Path, stable: list[str], canary: list[str], extra: str = "") -> AsyncIterator[EngineLab]:
    """The engine (watch_proxy: it runs the EndpointSlice follower) with the embedded proxy in front of
    loopback "pods" published by the stand-in controller; yields once the proxy's pools hold them.
    OPSC_TEST_PROXY_TOKEN must be set (monkeypatch)."""
    from opsconsole.engine.engine import Engine

    backends = {n: start_backend(n) for n in stable + canary}
    proxy = None
    try:
        async with kube_api() as (api, url):
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
            text = proxy_lab_config(tmp_path, kubeconfig)
            text = text.replace("  admin:\n", f"  runtime_file: {tmp_path / 'proxy-runtime.json'}\n  admin:\n", 1)
            text = text.replace("\nproxy:\n", f"\n{extra}\nproxy:\n", 1)
            proxy = start_proxy(tmp_path, text)
            engine = Engine.open(load_config(tmp_path / "opsconsole.yaml"), watch_proxy=True)
            async with StandInEndpointSlices(kubeconfig) as slices, engine, \
                    EmbeddedDriver.from_runtime_file(tmp_path / "proxy-runtime.json", TOKEN) as driver:
                for service, pods in (("checkbox", stable), ("checkbox-canary", canary)):
                    for pod in pods:
                        await slices.publish(service, pod, backends[pod].port)
                deadline = time.monotonic() + 15
                while members(await driver.app("checkbox")) != {"stable": sorted(stable), "canary": sorted(canary)}:
                    assert time.monotonic() < deadline, "the engine never set the proxy's members from the slices"
                    await asyncio.sleep(0.05)
                yield EngineLab(engine, driver, slices, proxy, backends)
    finally:
        if proxy is not None:
            proxy.stop()
        for b in backends.values():
            b.kill()


@pytest.mark.exclusive  # 200 clients: run alone, after the parallel phase
async def test_kube_canary_endpoint_killed_under_load_zero_failed_requests(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's test: under load through the embedded proxy, a canary pod's process is killed and the
    stand-in controller turns its endpoint not-ready. No client request fails, the other canary pod
    keeps the canary's exact share, and the engine (not the test) moved the proxy's members.

    The load is 200 keep-alive clients (wrk: the failures) beside 16 of our own (which member answered
    each request: the shares); the pods are stdlib servers with the default listen backlog of 5."""
    need("wrk")
    monkeypatch.setenv("OPSC_TEST_PROXY_TOKEN", TOKEN)
    async with engine_lab(tmp_path, ["checkbox-s1", "checkbox-s2"], ["checkbox-c1", "checkbox-c2"]) as lab:
        engine, driver, slices, proxy, backends = lab.engine, lab.driver, lab.slices, lab.proxy, lab.backends
        outcome = await engine.execute(engine.parse("canary checkbox weight 50"))
        assert outcome.ok, outcome.message

        async def served(pods: tuple[str, ...]) -> dict[str, int]:
            """Requests each pod answered, from one read of the proxy's state (one moment for all of them)."""
            st = await driver.app("checkbox")
            return {pod: st.member(pod).counters.requests for pod in pods}

        stop = asyncio.Event()
        t0 = time.monotonic()
        crowd = start_wrk(f"http://127.0.0.1:{proxy.port('checkbox')}/", 60, 200)  # ended by finish() below
        ours = LoadResult()
        task = asyncio.ensure_future(load(proxy.port("checkbox"), total=500_000, concurrency=16,
                                          seconds=60, stop=stop, into=ours))

        async def until_ours(what: str, done: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 30
            while not done():
                assert time.monotonic() < deadline and not task.done(), f"timed out waiting for {what}"
                await asyncio.sleep(0.05)

        # Traffic flows to both canary pods, our own clients' too (the crowd takes most of the answers).
        await until_ours("60 of our requests answered by checkbox-c1", lambda: ours.members["checkbox-c1"] >= 60)
        killed_at = time.monotonic() - t0
        backends["checkbox-c1"].kill()
        await slices.set_ready("checkbox-canary", "checkbox-c1", backends["checkbox-c1"].port, ready=False)
        # The assertions read the requests sent from 0.5 s after the kill: wait for 400 of ours in that window.
        # The shares come from the proxy's counters over the same window (every request, the crowd's too):
        # ours alone are a sample of a few hundred, too few for a 5% bound.
        await until_ours("0.5 s after the kill", lambda: time.monotonic() - t0 > killed_at + 0.5)
        left = ("checkbox-s1", "checkbox-s2", "checkbox-c2")
        counted_from = await served(left)
        await until_ours("400 of our requests sent after the kill's first 0.5 s",
                         lambda: sum(1 for t, _ in ours.timeline if t > killed_at + 0.5) >= 400)
        counted = {pod: n - counted_from[pod] for pod, n in (await served(left)).items()}
        stop.set()
        r = await task
        crowded = await asyncio.to_thread(crowd.finish)
        deadline = time.monotonic() + 10
        while "checkbox-c1" in _all_members(st := await driver.app("checkbox"), "canary"):
            assert time.monotonic() < deadline, "the killed pod's endpoint never left the canary pool"
            await asyncio.sleep(0.05)
    assert r.failed == 0, (r.statuses, r.errors[:5])
    assert crowded.failed == 0 and crowded.requests > 1000, crowded.summary()
    before = [m for t, m in r.timeline if t < killed_at]
    assert before.count("checkbox-c1") >= 50, (killed_at, Counter(before), r.members)  # it served before it died
    after = [m for t, m in r.timeline if t > killed_at + 0.5]
    assert len(after) > 300 and "checkbox-c1" not in after, Counter(after)
    share = counted["checkbox-c2"] / sum(counted.values())  # the canary's 50% now all on the pod that is left
    print(f"\nafter the kill: {counted} answered ({share:.3f} on checkbox-c2); {crowded.summary()}")
    assert sum(counted.values()) > 1000 and abs(share - 0.50) <= 0.02, (counted, r.members)
    assert st.alert is None and st.pools["canary"].weight == 50 and st.client_errors == 0
    assert members(st, "canary") == ["checkbox-c2"]


async def test_kube_canary_steps_and_clear_same_as_on_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`canary APP steps` (judged on the proxy's counters) and `canary APP clear` (the latch) on a
    Kubernetes app take the SSH fleet's code path: the proxy in front, its members from EndpointSlices."""
    monkeypatch.setenv("OPSC_TEST_PROXY_TOKEN", TOKEN)
    steps = "canary: {steps: [20, 50], hold: 300ms, min_requests: 20, max_wait: 20s}\n"
    async with engine_lab(tmp_path, ["checkbox-s1"], ["checkbox-c1"], extra=steps) as lab:
        engine, driver, proxy, backends = lab.engine, lab.driver, lab.proxy, lab.backends
        stop = asyncio.Event()
        task = asyncio.ensure_future(load(proxy.port("checkbox"), total=500_000, concurrency=4, seconds=60,
                                          stop=stop))
        stepped = await engine.execute(engine.parse("canary checkbox steps"))
        held = await driver.app("checkbox")
        # The canary's process dies (its endpoint still listed ready: the kubelet has not noticed yet).
        backends["checkbox-c1"].kill()
        deadline = time.monotonic() + 10
        while (await driver.app("checkbox")).alert is None:
            assert time.monotonic() < deadline, "the dead canary never latched the alert"
            await asyncio.sleep(0.05)
        refused = await engine.execute(engine.parse("canary checkbox clear"))  # still dead: stays latched
        backends["checkbox-c1"] = start_backend("checkbox-c1", port=backends["checkbox-c1"].port)  # restarted
        deadline = time.monotonic() + 10
        while "passed" not in (await driver.app("checkbox")).member("checkbox-c1").check and \
                not (await driver.app("checkbox")).member("checkbox-c1").healthy:
            assert time.monotonic() < deadline, "the restarted canary never passed a check"
            await asyncio.sleep(0.05)
        latched = await driver.app("checkbox")
        cleared = await engine.execute(engine.parse("canary checkbox clear"))
        after = await driver.app("checkbox")
        stop.set()
        r = await task
    assert stepped.ok, stepped.message
    assert "up to 50%" in stepped.message
    assert (held.pools["stable"].weight, held.pools["canary"].weight) == (50, 50)
    assert not refused.ok and "still down" in refused.message
    assert latched.alert is not None and latched.canary_percent == 0.0
    assert cleared.ok, cleared.message
    assert after.alert is None and after.canary_percent == 50.0
    assert r.failed == 0, (r.statuses, r.errors[:5])


def test_kube_endpoint_at_a_metadata_or_bogus_address_is_left_out_and_named() -> None:
    """An EndpointSlice anyone with slice rights wrote must not point the proxy at the cloud metadata service,
    nor keep the pool from following its good endpoints."""
    slices = [{"ports": [{"name": "http", "port": 8080}], "endpoints": [
        {"addresses": ["10.1.0.5"], "targetRef": {"name": "good"}},
        {"addresses": ["169.254.169.254"], "targetRef": {"name": "imds"}},
        {"addresses": ["0.0.0.0"], "targetRef": {"name": "anywhere"}},
        {"addresses": ["not-an-ip"], "targetRef": {"name": "named"}}]}]
    refused: list[str] = []
    assert [(e.name, e.address) for e in ready_endpoints(slices, refused=refused)] == [("good", "10.1.0.5")]
    assert [r.split(":")[0] for r in refused] == ["imds 169.254.169.254", "anywhere 0.0.0.0", "named not-an-ip"]
