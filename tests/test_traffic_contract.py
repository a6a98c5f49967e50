"""The same split, live weight, failover, drain and console-death tests through both drivers:
the embedded proxy (admin API) and a real HAProxy (runtime API over its stats socket)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.base import Endpoint, TrafficBadRequest, TrafficDriver, TrafficNotFound
from opsconsole.traffic.drivers import open_driver
from opsconsole.traffic.haproxy_config import render_haproxy_config
from test_proxy_support import (
    PY, ROOT, TOKEN, Backend, app_block, free_port, load, proxy_config_text, start_backend, start_haproxy, start_proxy,
)

pytestmark = pytest.mark.timeout(180)


@dataclass
class Rig:
    kind: str
    port: int
    config: Path
    runtime_file: Path | None
    backends: dict[str, Backend]

    def driver(self) -> TrafficDriver:
        cfg, _ = load_proxy_config(self.config)
        return open_driver(cfg, runtime_file=self.runtime_file, token=TOKEN)


@pytest.fixture(params=["embedded", "haproxy"])
def rig(request, tmp_path):
    """stable s1, s2 and canary c1 behind the proxy under test; weights 100/0 to begin with."""
    started: list = []
    backends: dict[str, Backend] = {}
    try:
        backends.update({n: start_backend(n) for n in ("s1", "s2", "c1")})
        started += backends.values()
        apps = app_block("web", [backends["s1"], backends["s2"]], [backends["c1"]], interval="200ms")
        if request.param == "embedded":
            p = start_proxy(tmp_path, proxy_config_text(tmp_path, apps))
            started.append(p)
            yield Rig("embedded", p.port("web"), p.config, tmp_path / "proxy-runtime.json", backends)
        else:
            sock = str(tmp_path / "haproxy.sock")
            text = proxy_config_text(tmp_path, apps, extra=f"driver: haproxy\nhaproxy: {{stats_socket: {sock}, nbthread: 1, slots: 4}}\n")
            cfg_file = tmp_path / "opsconsole.yaml"
            cfg_file.write_text(text)
            port = free_port()
            cfg, _ = load_proxy_config(cfg_file)
            hcfg = tmp_path / "haproxy.cfg"
            hcfg.write_text(render_haproxy_config(cfg, bind={"web": ("127.0.0.1", port)}))
            hp = start_haproxy(hcfg, sock, port, tmp_path / "haproxy.log")
            started.append(hp)
            yield Rig("haproxy", port, cfg_file, None, backends)
    finally:
        # Backends a test restarted live in the dict, not in `started`; stop both.
        for item in reversed(started + list(backends.values())):
            item.kill() if isinstance(item, Backend) else item.stop()


async def _with_driver(rig: Rig, fn):
    async with rig.driver() as d:
        return await fn(d)


def run(rig: Rig, fn):
    return asyncio.run(_with_driver(rig, fn))


def test_split_80_20_within_3_percent(rig):
    st = run(rig, lambda d: d.set_canary_percent("web", 20))
    assert st.pools["canary"].weight == 20 and st.pools["stable"].weight == 80
    r = asyncio.run(load(rig.port, total=5000, concurrency=8, seconds=90))
    assert r.failed == 0, (r.statuses, r.errors[:5])
    share = r.members["c1"] / sum(r.members.values())
    assert abs(share - 0.20) <= 0.03, r.members
    counted = run(rig, lambda d: d.app("web"))
    assert counted.pools["canary"].counters.requests == r.members["c1"]
    assert counted.pools["stable"].counters.requests == r.members["s1"] + r.members["s2"]


def test_weight_change_takes_effect_for_new_requests_at_once(rig):
    assert asyncio.run(load(rig.port, total=50, concurrency=1)).members["c1"] == 0
    run(rig, lambda d: d.set_canary_percent("web", 50))
    r = asyncio.run(load(rig.port, total=100, concurrency=1))
    assert 45 <= r.members["c1"] <= 55, r.members
    run(rig, lambda d: d.set_canary_percent("web", 0))
    assert asyncio.run(load(rig.port, total=50, concurrency=1)).members["c1"] == 0


def test_bad_input_raises_and_changes_nothing(rig):
    async def scenario(d: TrafficDriver):
        await d.set_canary_percent("web", 10)
        for bad in ({"canary": 101}, {"stable": -1}, {"canary": "5"}, {"stable": 50, "canary": 1000}):
            with pytest.raises(TrafficBadRequest):
                await d.set_weights("web", bad)
        with pytest.raises(TrafficNotFound):
            await d.set_weights("nope", {"canary": 5})
        with pytest.raises(TrafficNotFound):
            await d.set_weights("web", {"blue": 5})
        with pytest.raises(TrafficNotFound):
            await d.drain("web", "ghost")
        return await d.app("web")

    st = run(rig, scenario)
    assert (st.pools["stable"].weight, st.pools["canary"].weight) == (90, 10)


async def _under_load(port: int, total: int, concurrency: int, at: float, action, seconds: float = 90, **kw):
    """Load bounded by `total` and `seconds`; `action` runs `at` seconds in."""
    task = asyncio.create_task(load(port, total=total, concurrency=concurrency, seconds=seconds, **kw))
    await asyncio.sleep(at)
    assert not task.done(), "load finished before the action"
    await action()
    return await task


def test_sigkill_canary_under_load_no_failed_request_and_alert(rig):
    async def scenario(d: TrafficDriver):
        await d.set_canary_percent("web", 50)
        t0 = time.monotonic()
        marks = {}

        async def kill():
            marks["kill"] = time.monotonic() - t0
            rig.backends["c1"].kill()

        r = await _under_load(rig.port, 100_000, 16, 1.0, kill, seconds=3.0)
        deadline = time.monotonic() + 10  # until the driver reports what it saw: the canary down, the alert up
        while (st := await d.app("web")).alert is None or st.pools["canary"].members[0].healthy:
            assert time.monotonic() < deadline, "the killed canary never raised the alert"
            await asyncio.sleep(0.05)
        return r, marks, st

    r, marks, st = run(rig, scenario)
    assert r.failed == 0, (r.statuses, r.errors[:5])
    assert r.members["c1"] > 100
    assert not [m for t, m in r.timeline if t > marks["kill"] + 0.3 and m == "c1"]
    assert sum(1 for t, _ in r.timeline if t > marks["kill"] + 0.3) > 300
    assert st.alert is not None
    assert st.canary_percent == 0.0
    assert not st.pools["canary"].members[0].healthy


def answers_its_checks(m) -> bool:
    return m.healthy or "passed" in m.check or m.check.split(" ")[0] in ("L4OK", "L6OK", "L7OK", "L7OKC")


def test_canary_back_stays_out_until_the_alert_is_cleared(rig):
    async def scenario(d: TrafficDriver):
        await d.set_canary_percent("web", 50)
        rig.backends["c1"].kill()
        r1 = await load(rig.port, total=200, concurrency=4)
        rig.backends["c1"] = start_backend("c1", port=rig.backends["c1"].port)
        # Wait until it answers its checks again (the embedded proxy marks it healthy behind the latch;
        # HAProxy's last check passes while the latch keeps the server down), not a fixed number of intervals.
        deadline = time.monotonic() + 20
        while not answers_its_checks((await d.app("web")).member("c1")):
            assert time.monotonic() < deadline, "the restarted canary never passed a check"
            await asyncio.sleep(0.05)
        held = await load(rig.port, total=100, concurrency=2)
        st = await d.app("web")
        cleared = await d.clear_alert("web")
        deadline = time.monotonic() + 10  # until the canary is back in its pool, ready for traffic
        while not (await d.app("web")).member("c1").healthy:
            assert time.monotonic() < deadline, "the cleared canary never came back"
            await asyncio.sleep(0.05)
        back = await load(rig.port, total=100, concurrency=2)
        return r1, held, st, cleared, back, await d.app("web")

    r1, held, st, cleared, back, after = run(rig, scenario)
    assert r1.failed == 0 and held.failed == 0 and back.failed == 0
    assert held.members["c1"] == 0 and st.alert is not None
    assert cleared is True and after.alert is None
    assert 30 <= back.members["c1"] <= 70, back.members


def test_draining_a_member_under_load_loses_nothing(rig):
    async def scenario(d: TrafficDriver):
        t0 = time.monotonic()
        marks = {}

        async def drain():
            await d.drain("web", "s2")
            m = (await d.app("web")).member("s2")
            marks["inflight"] = m.inflight
            assert m.admin == "draining"
            assert await d.wait_drained("web", "s2", timeout=10)
            marks["drained"] = time.monotonic() - t0

        # s2 slow (300 ms a request, the others at once): it surely has requests in flight when the drain
        # begins, even on a busy machine where 30 ms requests could all be done by the time s2 is read.
        r = await _under_load(rig.port, 1500, 16, 1.0, drain, path="/slow?ms=300&slow=s2")
        await d.enable("web", "s2")
        again = await load(rig.port, total=40, concurrency=1)
        return r, marks, again

    r, marks, again = run(rig, scenario)
    assert r.failed == 0, (r.statuses, r.errors[:5])
    assert marks["inflight"] > 0, "nothing in flight on s2 when the drain began"
    late = [m for t, m in r.timeline if t > marks["drained"] + 0.01]
    assert late and "s2" not in late
    assert again.members["s2"] >= 15


CONSOLE = """
import asyncio, sys, time
from pathlib import Path
sys.path.insert(0, "tests")
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.drivers import open_driver
cfg, _ = load_proxy_config(Path(sys.argv[1]))
runtime = Path(sys.argv[2]) if sys.argv[2] != "-" else None

async def main():
    d = open_driver(cfg, runtime_file=runtime, token=sys.argv[3])
    await d.set_canary_percent("web", 30)
    print("set", flush=True)
    await asyncio.sleep(60)  # a console that stays up, steering, until it is killed

asyncio.run(main())
"""


def test_killing_the_console_under_load_changes_nothing(rig):
    console = subprocess.Popen([PY, "-c", CONSOLE, str(rig.config), str(rig.runtime_file or "-"), TOKEN],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert console.stdout.readline().strip() == "set"

        async def scenario():
            async def kill():
                console.send_signal(signal.SIGKILL)
                console.wait(5)
            return await _under_load(rig.port, 100_000, 8, 0.5, kill, seconds=2.5)

        r = asyncio.run(scenario())
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(5)
    assert console.returncode == -signal.SIGKILL
    assert r.failed == 0, r.errors[:5]
    assert abs(r.members["c1"] / sum(r.members.values()) - 0.30) <= 0.03
    st = run(rig, lambda d: d.app("web"))
    # A new console reads the weights the dead one set (HAProxy: adopted from the servers' weights, not reset).
    assert (st.pools["stable"].weight, st.pools["canary"].weight) == (70, 30)
    assert st.canary_percent == pytest.approx(30, abs=0.5)
    assert abs(asyncio.run(load(rig.port, total=1000, concurrency=4)).members["c1"] - 300) <= 30


def _names(st, pool: str) -> list[str]:
    return [m.name for m in st.pools[pool].members]


def test_member_set_under_load_adds_at_once_and_drains_the_removed(rig):
    """The runtime member set (what Kubernetes EndpointSlices drive): s2 leaves, s3 joins, under load.
    The new member takes traffic at once; the removed one finishes what it has in flight and gets nothing new."""
    rig.backends["s3"] = start_backend("s3")
    s1, s3 = rig.backends["s1"], rig.backends["s3"]

    async def scenario(d: TrafficDriver):
        t0 = time.monotonic()
        marks = {}

        async def swap():
            marks["set"] = time.monotonic() - t0
            st = await d.set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port),
                                                        Endpoint("s3", "127.0.0.1", s3.port)])
            marks["after_set"], marks["set_done"] = st, time.monotonic() - t0
            deadline = time.monotonic() + 10
            while True:  # until s2 finished its requests in flight (then it is gone, or shown drained)
                st = await d.app("web")
                names = [m.name for m in st.pools["stable"].members]
                if "s2" not in names or st.member("s2").drained:
                    break
                assert time.monotonic() < deadline, "the removed member never drained"
                await asyncio.sleep(0.02)
            marks["drained"] = time.monotonic() - t0

        # s2 is slow (300 ms a request), so it still has requests in flight when the set has been answered.
        r = await _under_load(rig.port, 3000, 16, 1.0, swap, path="/slow?ms=300&slow=s2")
        deadline = time.monotonic() + 10
        while "s2" in _names(st := await d.app("web"), "stable"):
            assert time.monotonic() < deadline, "the drained member was never dropped from the pool"
            await asyncio.sleep(0.05)
        return r, marks, st

    r, marks, st = run(rig, scenario)
    assert r.failed == 0, (r.statuses, r.errors[:5])
    after = marks["after_set"]
    s2 = after.member("s2")
    assert s2.removed and s2.admin == "draining"
    assert s2.inflight > 0, "nothing in flight on s2 when it was removed: the drain proved nothing"
    assert after.member("s3").healthy and after.member("s3").admin == "enabled"  # a new member starts healthy
    assert [m.name for m in st.pools["stable"].members] == ["s1", "s3"]
    # Nothing new went to s2: what it answered after the set were the requests it had in flight then.
    assert sum(1 for t, m in r.timeline if t > marks["set_done"] and m == "s2") <= s2.inflight
    late = [m for t, m in r.timeline if t > marks["drained"] + 0.3]
    assert late and "s2" not in late
    assert late.count("s3") > 50  # the new member took its share
    assert (st.pools["stable"].weight, st.pools["canary"].weight) == (100, 0)


def test_bad_member_set_changes_nothing(rig):
    async def scenario(d: TrafficDriver):
        good = Endpoint("s1", "127.0.0.1", rig.backends["s1"].port)
        for bad in ([Endpoint("x", "not-an-ip", 80)], [Endpoint("x", "127.0.0.1", 0)],
                    [good, Endpoint("s1", "127.0.0.1", 9)], [good, Endpoint("y", "127.0.0.1", good.port)],
                    [Endpoint("c1", "127.0.0.1", 9)]):  # c1 is the canary pool's member
            with pytest.raises(TrafficBadRequest):
                await d.set_members("web", "stable", bad)
        with pytest.raises(TrafficNotFound):
            await d.set_members("web", "blue", [good])
        return await d.app("web")

    st = run(rig, scenario)
    assert [m.name for m in st.pools["stable"].members] == ["s1", "s2"]
    assert all(m.admin == "enabled" and not m.removed for m in st.pools["stable"].members)
    r = asyncio.run(load(rig.port, total=100, concurrency=2))
    assert r.failed == 0 and r.members["s2"] > 20
