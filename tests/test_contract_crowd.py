"""The traffic contract under a crowd, through both drivers: 200 keep-alive clients (wrk) against members that
look like small real apps (stdlib ThreadingHTTPServer, listen backlog 5), with every proxy setting at its
default. test_traffic_contract.py checks the same promises with 8-16 in-process clients against asyncio
members; this is the load a real site sends, and the HAProxy driver is judged under it as the embedded proxy is.

- a canary SIGKILLed under the crowd: no client sees a failure, the driver reports the alert, the canary's share
  goes to 0;
- a stable member drained under the crowd: no client sees a failure, the drain ends, and the member gets
  nothing new once it is drained;
- the stable pool's member set swapped under the crowd (what Kubernetes EndpointSlices drive): no client sees
  a failure, the new member takes traffic, the removed one drains and leaves the pool (once gone, nothing can
  be sent to it; the drain test above checks "nothing new once drained" where the counter stays readable).

Needs wrk and haproxy (a missing tool fails when CI is set). `pytest -s` prints the figures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadwrk import WrkResult, WrkRun, need, start_wrk
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.base import AppTraffic, Endpoint, TrafficDriver
from opsconsole.traffic.drivers import open_driver
from opsconsole.traffic.haproxy_config import render_haproxy_config
from stdlib_backend import StdlibBackend, start_backend, start_backends
from test_proxy_support import TOKEN, free_port, proxy_config_text, start_haproxy, start_proxy

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_load_at_a_time")]

CLIENTS = 200
LOAD_LIMIT = 30  # seconds: wrk's run in the drain and swap tests, ended (finish) once AFTER_SECONDS have passed
AFTER_SECONDS = 2.0  # of load after the drain ended: time enough for "nothing new" and "no failure" to mean much
SWAPPED_MEMBER_MS = 500  # how long the member swapped out takes per answer (see the swap test)


@dataclass
class Crowd:
    """One proxy (embedded or HAProxy from the same `proxy:` section) in front of stdlib members."""

    kind: str
    port: int
    config: Path
    runtime_file: Path | None
    members: dict[str, StdlibBackend]
    started: list = field(default_factory=list)

    def state(self) -> AppTraffic:
        return asyncio.run(self._with(lambda d: d.app("web")))

    def call(self, fn):  # type: ignore[no-untyped-def]
        return asyncio.run(self._with(fn))

    async def _with(self, fn):  # type: ignore[no-untyped-def]
        cfg, _ = load_proxy_config(self.config)
        # Each call is a new console, as the product's (traffic_service) is: the HAProxy driver keeps what
        # HAProxy cannot hold (the names a member set gave its slots) in a state file across consoles.
        async with open_driver(cfg, runtime_file=self.runtime_file, token=TOKEN,
                               state_file=self.config.parent / "haproxy-desired.json") as d:
            return await fn(d)


def _app(members: dict[str, StdlibBackend]) -> str:
    """Stable s1, s2 and canary c1; no health, retry or limit setting: the defaults are what is judged."""
    def listed(names: list[str]) -> str:
        return "[" + ", ".join(f"{{name: {n}, address: 127.0.0.1, port: {members[n].port}}}" for n in names) + "]"
    return (f"web:\n  listen: 127.0.0.1:0\n  pools:\n"
            f"    stable:\n      weight: 100\n      members: {listed(['s1', 's2'])}\n"
            f"    canary:\n      weight: 0\n      members: {listed(['c1'])}\n")


@pytest.fixture(params=["embedded", "haproxy"])
def crowd(request, tmp_path):  # type: ignore[no-untyped-def]
    """`@pytest.mark.member_delays({"s2": MS})` makes a member answer every request in at least MS ms."""
    need("wrk", "haproxy")
    marker = request.node.get_closest_marker("member_delays")
    started: list = []
    try:
        names = ("s1", "s2", "c1")
        started += start_backends(names, delay_ms=marker.args[0] if marker else None)  # (all stopped if one fails)
        members = dict(zip(names, started))
        apps = _app(members)
        if request.param == "embedded":
            p = start_proxy(tmp_path, proxy_config_text(tmp_path, apps, tuned=False))
            started.append(p)
            yield Crowd("embedded", p.port("web"), p.config, tmp_path / "proxy-runtime.json", members, started)
        else:
            sock = str(tmp_path / "haproxy.sock")
            cfg_file = tmp_path / "opsconsole.yaml"
            cfg_file.write_text(proxy_config_text(
                tmp_path, apps, tuned=False,
                extra=f"driver: haproxy\nhaproxy: {{stats_socket: {sock}, nbthread: 1, slots: 4}}\n"))
            cfg, _ = load_proxy_config(cfg_file)
            port = free_port()
            hcfg = tmp_path / "haproxy.cfg"
            hcfg.write_text(with_error_log(render_haproxy_config(cfg, bind={"web": ("127.0.0.1", port)})))
            hp = start_haproxy(hcfg, sock, port, tmp_path / "haproxy.log")
            started.append(hp)
            yield Crowd("haproxy", port, cfg_file, None, members, started)
    finally:
        for item in reversed(started):  # members, proxies and wrk runs: each has stop()
            item.stop()


def _wait(crowd: Crowd, what: str, ok, timeout: float) -> tuple[AppTraffic, float]:  # type: ignore[no-untyped-def]
    """Poll one driver (one console) every 50 ms until `ok(state)`; (that state, seconds it took). Gently: the
    observer shares two cores with the proxy and 200 clients it is watching."""
    async def poll(d: TrafficDriver) -> tuple[AppTraffic, float]:
        t0 = time.monotonic()
        while True:
            st = await d.app("web")
            if ok(st):
                return st, time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, f"{crowd.kind}: {what} within {timeout:g}s; last state {st}"
            await asyncio.sleep(0.05)

    return crowd.call(poll)  # type: ignore[no-any-return]


def _slow_crowd_on_s2(crowd: Crowd) -> WrkRun:
    """The crowd, answered in at least 20 ms each (so every member has requests in flight all along, and a
    drain has something to wait for), 1.5 s after s2 first took traffic. It runs until `_after_the_change`
    ends it, AFTER_SECONDS after the change is done, however long the change took (within LOAD_LIMIT)."""
    run = start_wrk(f"http://127.0.0.1:{crowd.port}/?ms=20", LOAD_LIMIT, CLIENTS)
    crowd.started.append(run)
    _wait(crowd, "s2 took traffic", lambda st: st.member("s2").counters.requests > 0, 5)
    time.sleep(1.5)
    assert run.proc.poll() is None, "wrk ended before the change under load"
    return run


def _after_the_change(run: WrkRun) -> WrkResult:
    """AFTER_SECONDS more of the crowd, then its result; it must not have ended by itself (LOAD_LIMIT)."""
    time.sleep(AFTER_SECONDS)
    assert run.proc.poll() is None, f"the change took so long that wrk's {LOAD_LIMIT}s ran out"
    return run.finish()


def with_error_log(config: str) -> str:
    """The generated config, plus a log line on stderr (haproxy.log) for each request that did not end
    normally, with HAProxy's termination state: when HAProxy fails a client here, the log says why."""
    assert config.startswith("global\n") and "\ndefaults\n" in config, config[:200]
    return (config.replace("global\n", "global\n    log stderr format raw local0 info\n", 1)
            .replace("\ndefaults\n", "\ndefaults\n    log global\n    option httplog\n    option dontlog-normal\n", 1))


def test_a_canary_killed_under_200_clients_fails_nobody_and_raises_the_alert(crowd):
    crowd.call(lambda d: d.set_canary_percent("web", 20))
    run = start_wrk(f"http://127.0.0.1:{crowd.port}/", 4, CLIENTS)
    crowd.started.append(run)
    _, warm = _wait(crowd, "the canary took traffic", lambda st: st.member("c1").counters.requests > 0, 5)
    time.sleep(max(0.0, 2.0 - warm))
    assert run.proc.poll() is None, "wrk ended before the kill"
    os.kill(crowd.members["c1"].proc.pid, signal.SIGKILL)
    crowd.members["c1"].proc.wait(5)
    st, latch = _wait(crowd, "the driver reported the canary's alert", lambda s: s.alert is not None, 10)
    r = run.wait()
    print(f"\n{crowd.kind}: canary SIGKILL ~2s into 4s at {CLIENTS} clients: {r.summary()}; alert seen "
          f"{latch * 1000:.0f} ms after the kill")
    assert r.requests > 1000, r.summary()
    assert r.failed == 0, f"{crowd.kind}: {r.errors_text()}"
    assert st.canary_percent == 0.0
    assert not st.member("c1").healthy


def test_a_member_drained_under_200_clients_fails_nobody_and_gets_nothing_new(crowd):
    run = _slow_crowd_on_s2(crowd)

    async def drain(d: TrafficDriver) -> tuple[int, bool]:
        await d.drain("web", "s2")
        inflight = (await d.app("web")).member("s2").inflight
        return inflight, await d.wait_drained("web", "s2", timeout=10)

    t0 = time.monotonic()
    inflight, drained = crowd.call(drain)
    took = time.monotonic() - t0
    left_on_s2 = crowd.members["s2"].inflight()  # asked of s2 itself: "drained" must be true there too
    at_drained = crowd.state().member("s2").counters.requests
    r = _after_the_change(run)
    after = crowd.state()
    print(f"\n{crowd.kind}: s2 drained under {CLIENTS} clients: {r.summary()}; {inflight} in flight at the "
          f"drain, drained after {took:.2f}s; s2 answered {at_drained} in all")
    assert drained, f"{crowd.kind}: s2 never drained"
    assert left_on_s2 == 0, f"{crowd.kind}: the driver said s2 drained with {left_on_s2} answers still in the making"
    assert r.failed == 0, f"{crowd.kind}: {r.errors_text()}"
    assert after.member("s2").counters.requests == at_drained, (
        f"{crowd.kind}: s2 answered {after.member('s2').counters.requests - at_drained} requests after it was "
        "drained")
    assert after.member("s1").counters.requests > 0 and after.member("s2").admin == "draining"


# s2 answers in 500 ms, not 20: the drain a swap starts must still have requests on s2 when set_members returns.
# With 20 ms answers HAProxy finished them before the driver's next stats read, which then (rightly) reaped s2.
@pytest.mark.member_delays({"s2": SWAPPED_MEMBER_MS})
def test_a_member_set_swapped_under_200_clients_fails_nobody(crowd):
    s3 = start_backend("s3")
    crowd.started.append(s3)
    s1 = crowd.members["s1"]
    run = _slow_crowd_on_s2(crowd)

    async def swap(d: TrafficDriver) -> AppTraffic:
        return await d.set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port),
                                                      Endpoint("s3", "127.0.0.1", s3.port)])

    t0 = time.monotonic()
    after_set = crowd.call(swap)

    def s2_done(st: AppTraffic) -> bool:
        return "s2" not in [m.name for m in st.pools["stable"].members] or st.member("s2").drained

    st, _ = _wait(crowd, "the removed s2 drained", s2_done, 10)
    took = time.monotonic() - t0
    left_on_s2 = crowd.members["s2"].inflight()  # asked of s2 itself: "drained" or "gone" must be true there
    s3_at_drained = st.member("s3").counters.requests
    r = _after_the_change(run)
    final, _ = _wait(crowd, "s2 left the pool", lambda s: "s2" not in [m.name for m in s.pools["stable"].members], 10)
    print(f"\n{crowd.kind}: stable set swapped (s2 out, s3 in) under {CLIENTS} clients: {r.summary()}; "
          f"s2 drained after {took:.2f}s; s3 answered {final.member('s3').counters.requests}")
    assert after_set.member("s2").removed and after_set.member("s2").inflight > 0, (
        "nothing in flight on s2 when it was removed: the swap proved nothing")
    assert left_on_s2 == 0, (
        f"{crowd.kind}: the driver showed s2 drained or gone with {left_on_s2} answers still in the making")
    assert r.failed == 0, f"{crowd.kind}: {r.errors_text()}"
    assert final.member("s3").counters.requests > s3_at_drained > 0, "the new member did not take its share"
    assert [m.name for m in final.pools["stable"].members] == ["s1", "s3"]
