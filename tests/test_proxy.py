"""The embedded proxy under real traffic: split, weight changes, failover, drain, retries, reload, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from test_proxy_support import (
    PY, TOKEN, Backend, ProxyProc, app_block, load, proxy_config_text, start_backend, start_proxy,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def procs():
    """Start backends and proxies through this; all of them are stopped at teardown."""
    started: list = []

    class Factory:
        def backend(self, name: str, **kw) -> Backend:
            b = start_backend(name, **kw)
            started.append(b)
            return b

        def proxy(self, tmp: Path, text: str, **kw) -> ProxyProc:
            p = start_proxy(tmp, text, **kw)
            started.append(p)
            return p

    yield Factory()
    for item in reversed(started):
        if isinstance(item, Backend):
            item.kill()
        else:
            item.stop()


def admin(p: ProxyProc, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, p.admin_url + path, headers=AUTH, timeout=5, **kw)


def app_state(p: ProxyProc, app: str = "web") -> dict:
    r = admin(p, "GET", f"/apps/{app}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_split_80_20_within_3_percent(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=80, canary_weight=20)))
    r = asyncio.run(load(p.port("web"), total=5000, concurrency=8, seconds=60))
    assert r.failed == 0, r.errors[:5]
    assert sum(r.members.values()) == 5000
    share = r.members["c1"] / 5000
    assert abs(share - 0.20) <= 0.03, r.members
    # The proxy's own counters agree with what the clients saw.
    st = app_state(p)
    assert st["pools"]["canary"]["requests"] == r.members["c1"]
    assert st["pools"]["stable"]["requests"] == r.members["s1"]


def test_weight_change_applies_to_the_next_requests(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=100, canary_weight=0)))
    before = asyncio.run(load(p.port("web"), total=100, concurrency=1))
    assert before.members == {"s1": 100}
    r = admin(p, "PUT", "/apps/web/weights", json={"stable": 50, "canary": 50})
    assert r.status_code == 200 and r.json()["canary_percent"] == 50.0
    after = asyncio.run(load(p.port("web"), total=10, concurrency=1))
    # Smooth WRR alternates: the very next 10 requests are split 5/5, no warm-up, no stale connection bias.
    assert after.members == {"s1": 5, "c1": 5}
    admin(p, "PUT", "/apps/web/pools/canary/weight", json={"weight": 0})
    again = asyncio.run(load(p.port("web"), total=20, concurrency=1))
    assert again.members == {"s1": 20}


async def _load_and(port: int, total: int, concurrency: int, action, at: float, seconds: float = 60, **kw):
    """Load bounded by `total` and `seconds`; the blocking `action` runs in a thread `at` seconds in."""
    task = asyncio.create_task(load(port, total=total, concurrency=concurrency, seconds=seconds, **kw))
    await asyncio.sleep(at)
    assert not task.done(), "the load finished before the action; raise `total`"
    extra = await asyncio.get_running_loop().run_in_executor(None, action)
    return await task, extra


def test_sigkill_canary_under_load_no_client_fails_and_alert_latches(procs, tmp_path):
    s1, s2, c = procs.backend("s1"), procs.backend("s2"), procs.backend("c1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s1, s2], [c], stable_weight=50, canary_weight=50)))
    killed_at = []

    def kill():
        killed_at.append(time.monotonic())
        c.kill()

    t0 = time.monotonic()
    r, _ = asyncio.run(_load_and(p.port("web"), 100_000, 16, kill, 1.0, seconds=3.0))
    assert r.failed == 0, (r.statuses, r.errors[:5])
    assert r.members["c1"] > 100  # the canary really had traffic before it died
    cut = killed_at[0] - t0 + 0.3  # a response already on its way when the kill landed may arrive a little later
    assert not [m for t, m in r.timeline if t > cut and m == "c1"], "canary answered after it was killed"
    assert sum(1 for t, m in r.timeline if t > cut) > 300, "too little load after the kill to show anything"
    st = app_state(p)
    assert st["alert"] is not None and st["canary_percent"] == 0.0
    assert "ALERT latched" in p.log_text()

    # The canary comes back: the latch holds (no auto_restore) until the operator clears it.
    c2 = procs.backend("c1", port=c.port)
    wait_for(lambda: app_state(p)["pools"]["canary"]["members"][0]["healthy"], what="canary healthy again")
    held = asyncio.run(load(p.port("web"), total=200, concurrency=4))
    assert held.members["c1"] == 0 and held.failed == 0
    r = admin(p, "POST", "/apps/web/alert/clear")
    assert r.status_code == 200 and r.json()["cleared"] is True
    back = asyncio.run(load(p.port("web"), total=200, concurrency=4))
    assert 60 <= back.members["c1"] <= 140
    c2.kill()


def test_auto_restore_brings_the_canary_back_without_an_operator(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=50,
                                                                    canary_weight=50, auto_restore=True)))
    c.kill()
    r = asyncio.run(load(p.port("web"), total=200, concurrency=4))
    assert r.failed == 0 and r.members["c1"] == 0
    assert app_state(p)["alert"] is not None
    procs.backend("c1", port=c.port)
    wait_for(lambda: app_state(p)["alert"] is None, what="alert to clear itself")
    assert asyncio.run(load(p.port("web"), total=100, concurrency=2)).members["c1"] > 20


CONSOLE = """
import sys, time, httpx
url, token = sys.argv[1], sys.argv[2]
r = httpx.put(url + "/apps/web/weights", json={"stable": 70, "canary": 30}, headers={"Authorization": "Bearer " + token})
r.raise_for_status()
print("set", flush=True)
time.sleep(60)
"""


def test_killing_the_console_under_load_changes_nothing_for_clients(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=100, canary_weight=0)))
    console = subprocess.Popen([PY, "-c", CONSOLE, p.admin_url, TOKEN], stdout=subprocess.PIPE, text=True)
    try:
        assert console.stdout.readline().strip() == "set"

        def kill_console():
            console.send_signal(signal.SIGKILL)
            console.wait(5)

        r, _ = asyncio.run(_load_and(p.port("web"), 100_000, 8, kill_console, 0.5, seconds=2.5))
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(5)
    assert console.returncode == -signal.SIGKILL
    assert r.failed == 0, r.errors[:5]
    assert abs(r.members["c1"] / sum(r.members.values()) - 0.30) <= 0.03
    st = app_state(p)
    assert (st["pools"]["stable"]["weight"], st["pools"]["canary"]["weight"]) == (70, 30)


def test_draining_a_member_under_load_loses_nothing(procs, tmp_path):
    s1, s2 = procs.backend("s1"), procs.backend("s2")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s1, s2], [])))
    marks = {}

    def drain():
        # On a busy machine the load may still be ramping up, or pause between requests: drain only once s2
        # has work in flight, and if the drain found nothing in flight after all (the requests ended in
        # between), enable s2 and try again: the test is about a drain with requests on the member.
        for _ in range(20):
            wait_for(lambda: admin(p, "GET", "/apps/web/members/s2").json()["inflight"] > 0, what="requests on s2")
            r = admin(p, "POST", "/apps/web/members/s2/drain")
            assert r.status_code == 200 and r.json()["admin"] == "draining"
            marks["drain"] = time.monotonic()
            # Slow requests were in flight on s2 when it started draining; they finish, then it is drained.
            marks["inflight"] = r.json()["inflight"]
            if marks["inflight"] > 0:
                break
            assert admin(p, "POST", "/apps/web/members/s2/enable").status_code == 200
        else:
            raise AssertionError("20 drains of s2, none with a request in flight: the test shows nothing")
        wait_for(lambda: admin(p, "GET", "/apps/web/members/s2").json()["drained"], what="s2 drained")
        marks["drained"] = time.monotonic()

    t0 = time.monotonic()
    r, _ = asyncio.run(_load_and(p.port("web"), 1500, 16, drain, 1.0, path="/slow?ms=30"))
    assert r.failed == 0, r.errors[:5]
    assert marks["inflight"] > 0, "nothing was in flight on s2 when draining began; the test shows nothing"
    late = [m for t, m in r.timeline if t > marks["drained"] - t0 + 0.01]
    assert late and "s2" not in late
    assert r.members["s2"] > 50
    # Enabled again, it takes traffic.
    admin(p, "POST", "/apps/web/members/s2/enable")
    assert asyncio.run(load(p.port("web"), total=40, concurrency=1)).members["s2"] == 20


def test_retry_rules_get_retried_post_never_after_it_was_sent(procs, tmp_path):
    s = procs.backend("s1")
    cg, cp = procs.backend("cg"), procs.backend("cp")
    apps = (app_block("g", [s], [cg], stable_weight=0, canary_weight=100, interval="10s")
            + app_block("p", [s], [cp], stable_weight=0, canary_weight=100, interval="10s"))
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, apps))
    port_g, port_p = p.runtime["frontends"]["g"]["port"], p.runtime["frontends"]["p"]["port"]
    # GET: the canary dies with the request on the wire; nothing reached the client yet → retried on stable.
    r = httpx.get(f"http://127.0.0.1:{port_g}/die?who=cg", timeout=5)
    assert r.status_code == 200 and r.headers["x-member"] == "s1"
    # POST: it was sent; the backend may have acted on it; the client gets an error, stable never sees it.
    before = app_state(p, "p")["pools"]["stable"]["requests"]
    r = httpx.post(f"http://127.0.0.1:{port_p}/die?who=cp", content=b"pay=1", timeout=5)
    assert r.status_code == 502
    assert app_state(p, "p")["pools"]["stable"]["requests"] == before


def test_post_never_sent_is_retried(procs, tmp_path):
    s, dead = procs.backend("s1"), procs.backend("c1")
    dead.kill()  # its port now refuses connections
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [dead], stable_weight=0,
                                                                    canary_weight=100, interval="10s")))
    r = httpx.post(f"http://127.0.0.1:{p.port('web')}/", content=b"pay=1", timeout=5)
    assert r.status_code == 200 and r.headers["x-member"] == "s1"
    assert r.json()["body"] == 5
    assert app_state(p)["alert"] is not None


def test_upstream_idle_is_shorter_than_the_backends_so_posts_never_meet_a_closed_connection(procs, tmp_path):
    # Backend closes idle connections after 1.2s; the proxy drops its own after 1s (upstream_idle in the test config).
    s = procs.backend("s1", keepalive=1.2)
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))
    with httpx.Client(timeout=5) as client:
        for gap in (0, 1.1, 1.15, 1.25):
            time.sleep(gap)
            r = client.post(f"http://127.0.0.1:{p.port('web')}/", content=b"x")
            assert r.status_code == 200, (gap, r.text)
    assert app_state(p)["client_errors"] == 0


def test_sticky_split_keeps_each_client_on_one_pool(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=70,
                                                                    canary_weight=30, split="sticky")))
    # 200 clients, 5 requests each, each keeping its cookie.
    results = asyncio.run(_many_clients(p.port("web"), 200, 5))
    assert all(len(r.members) == 1 and sum(r.members.values()) == 5 for r in results)
    canary_clients = sum(1 for r in results if "c1" in r.members)
    assert 30 <= canary_clients <= 90  # 30% of 200 = 60; wide bounds: 200 random buckets
    assert app_state(p)["split"] == "sticky"


async def _many_clients(port: int, clients: int, each: int):
    sem = asyncio.Semaphore(16)

    async def one():
        async with sem:
            return await load(port, total=each, concurrency=1, cookie=True)
    return await asyncio.gather(*(one() for _ in range(clients)))


def test_sighup_reloads_without_dropping_connections_and_keeps_runtime_weights(procs, tmp_path):
    s, c, s2 = procs.backend("s1"), procs.backend("c1"), procs.backend("s2")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=100, canary_weight=0)))
    admin(p, "PUT", "/apps/web/weights", json={"stable": 90, "canary": 10})
    sock = socket.create_connection(("127.0.0.1", p.port("web")))
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        p.config.write_text(proxy_config_text(tmp_path, app_block("web", [s, s2], [c], stable_weight=100, canary_weight=0)))
        os.kill(p.proc.pid, signal.SIGHUP)
        wait_for(lambda: "config reloaded" in p.log_text(), what="reload")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection, after the reload
        assert b"200 OK" in sock.recv(65536)
    finally:
        sock.close()
    st = app_state(p)
    assert [m["name"] for m in st["pools"]["stable"]["members"]] == ["s1", "s2"]
    assert (st["pools"]["stable"]["weight"], st["pools"]["canary"]["weight"]) == (90, 10)
    # A broken config is refused; the proxy keeps running on the old one.
    p.config.write_text("proxy: [oops\n")
    os.kill(p.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in p.log_text(), what="refusal")
    assert asyncio.run(load(p.port("web"), total=10, concurrency=1)).failed == 0


def test_sigterm_finishes_requests_in_flight_then_exits(procs, tmp_path):
    s = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))

    async def scenario():
        task = asyncio.create_task(load(p.port("web"), total=8, concurrency=8, path="/slow?ms=700"))
        deadline = time.monotonic() + 10
        while True:  # until all 8 are in flight at the member: the SIGTERM lands while they run
            state = await asyncio.to_thread(app_state, p)
            if sum(m["inflight"] for pool in state["pools"].values() for m in pool["members"]) >= 8:
                break
            assert time.monotonic() < deadline and not task.done(), "the 8 requests were never in flight together"
            await asyncio.sleep(0.02)
        os.kill(p.proc.pid, signal.SIGTERM)
        return await task

    r = asyncio.run(scenario())
    assert r.ok == 8 and r.failed == 0
    assert p.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port("web")), timeout=1)


def test_http_details_chunked_head_forwarded_for_and_hop_by_hop(procs, tmp_path):
    s = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))
    base = f"http://127.0.0.1:{p.port('web')}"
    assert httpx.get(base + "/chunked").text == "hello world"
    h = httpx.head(base + "/")
    assert h.status_code == 200 and h.headers["content-length"] != "0"
    big = os.urandom(300_000)
    r = httpx.post(base + "/upload", content=big)
    assert r.json()["body"] == len(big)
    r = httpx.post(base + "/upload", content=iter([b"a" * 1000] * 50))  # chunked request body, streamed
    assert r.json()["body"] == 50_000
    raw = socket.create_connection(("127.0.0.1", p.port("web")))
    raw.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    raw.close()
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data and data.endswith(b"}")


def test_a_member_that_never_answers_times_out_and_the_get_is_retried(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    text = proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=0, canary_weight=100, interval="10s"))
    p = procs.proxy(tmp_path, text.replace("response_timeout: 5s", "response_timeout: 800ms"))
    t0 = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{p.port('web')}/x?ms=5000&slow=c1", timeout=10)
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.headers["x-member"] == "s1"
    assert 0.7 < took < 4.5  # at response_timeout, then retried: not the slow member's 5 s
    # One timeout is not a verdict (a slow member is not a dead one): it takes 5 in a row, as in Envoy.
    st = app_state(p)
    assert st["alert"] is None and st["pools"]["canary"]["members"][0]["healthy"]
    for _ in range(4):
        r = httpx.get(f"http://127.0.0.1:{p.port('web')}/x?ms=5000&slow=c1", timeout=10)
        assert r.status_code == 200 and r.headers["x-member"] == "s1"
    st = app_state(p)
    assert st["alert"] is not None and not st["pools"]["canary"]["members"][0]["healthy"]
    assert st["pools"]["canary"]["members"][0]["ejected"] is True
    # A POST that was sent and timed out is not retried: the client is told, with 504.
    s2 = procs.backend("s2")
    other = tmp_path / "second"
    other.mkdir()
    text = proxy_config_text(other, app_block("web", [s2], [s], stable_weight=0, canary_weight=100, interval="10s"))
    p2 = procs.proxy(other, text.replace("response_timeout: 5s", "response_timeout: 800ms"))
    r = httpx.post(f"http://127.0.0.1:{p2.port('web')}/x?ms=5000&slow=s1", content=b"x", timeout=10)
    # The client is told what happened in general; which member and why stays in the proxy's log.
    assert r.status_code == 504 and r.text == "504 Gateway Timeout: the server did not answer in time\n"
    assert "s1" not in r.text and "no response in time" in p2.log_text()


def test_pipelined_requests_are_answered_in_order(procs, tmp_path):
    s1, s2 = procs.backend("s1"), procs.backend("s2")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s1, s2], [])))
    sock = socket.create_connection(("127.0.0.1", p.port("web")), timeout=5)
    try:
        # The first is slow, the others fast, on two members: answers must still come back in request order.
        sock.sendall(b"GET /a?ms=300 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    paths = [seg.split(b'"path": "')[1].split(b'"')[0] for seg in data.split(b"HTTP/1.1 200")[1:]]
    assert paths == [b"/a?ms=300", b"/b", b"/c"]


def test_sighup_moves_a_listener_and_keeps_connections_on_the_old_one(procs, tmp_path):
    import json as _json

    from test_proxy_support import free_port

    s = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))
    old_port, new_port = p.port("web"), free_port()
    sock = socket.create_connection(("127.0.0.1", old_port))
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        p.config.write_text(p.config.read_text().replace("listen: 127.0.0.1:0\n      split", f"listen: 127.0.0.1:{new_port}\n      split"))
        os.kill(p.proc.pid, signal.SIGHUP)
        wait_for(lambda: "config reloaded" in p.log_text(), what="reload")
        runtime = _json.loads((tmp_path / "proxy-runtime.json").read_text())
        assert runtime["frontends"]["web"]["port"] == new_port
        assert httpx.get(f"http://127.0.0.1:{new_port}/", timeout=5).status_code == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection accepted before the move lives on
        assert b"200 OK" in sock.recv(65536)
    finally:
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", old_port), timeout=1)


def test_passive_evidence_never_empties_the_stable_pool(procs, tmp_path):
    # Active checks every 10 s, so only live traffic judges here.
    s1, s2 = procs.backend("s1"), procs.backend("s2")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s1, s2], [], interval="10s")))
    s1.kill()
    s2.kill()
    for _ in range(6):  # each refused on both members: nothing listens
        r = httpx.get(f"http://127.0.0.1:{p.port('web')}/", timeout=5)
        assert r.status_code == 503
    members = app_state(p)["pools"]["stable"]["members"]
    # One member may be ejected (max_ejection_percent 10%, at least one); the other stays in.
    assert sorted(m["ejected"] for m in members) == [False, True]
    assert sum(m["healthy"] for m in members) == 1
    assert "not ejected" in p.log_text() and "max_ejection_percent is 10" in p.log_text()


def test_panic_when_every_stable_member_fails_its_checks_is_shown_and_balanced(procs, tmp_path):
    s1, s2 = procs.backend("s1"), procs.backend("s2")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s1, s2], [])))
    s1.kill()
    s2.kill()
    wait_for(lambda: app_state(p)["pools"]["stable"]["panic"], what="panic")
    t0 = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{p.port('web')}/", timeout=5)
    # Members gone: refused at once, retried, then 503 (three connect timeouts of 500 ms would take 1.5 s).
    assert r.status_code == 503 and time.monotonic() - t0 < 1.4
    assert r.headers["retry-after"] == "1" and "no server is available" in r.text
    st = app_state(p)
    assert st["panic"] is True and st["answers"]["503"] >= 1 and st["client_errors"] >= 1
    metrics = admin(p, "GET", "/metrics").text
    assert 'opsconsole_proxy_pool_panic{app="web",pool="stable"} 1' in metrics
    assert 'opsconsole_proxy_answers_total{app="web",code="503"}' in metrics
    assert "PANIC: no healthy member" in p.log_text()
    # One member back: it rises, panic is over, clients are served.
    procs.backend("s1", port=s1.port)
    wait_for(lambda: not app_state(p)["pools"]["stable"]["panic"], what="panic over")
    assert httpx.get(f"http://127.0.0.1:{p.port('web')}/", timeout=5).headers["x-member"] == "s1"
    assert "panic over" in p.log_text()


def test_a_503_to_a_request_without_a_body_keeps_the_connection(procs, tmp_path):
    """No member can take it, decided as its head arrives: a request with no body leaves nothing unread, so the
    client keeps its connection (as HAProxy does) and its next request on it is answered too."""
    s1 = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s1], [])))
    assert admin(p, "POST", "/apps/web/members/s1/drain").status_code == 200
    sock = socket.create_connection(("127.0.0.1", p.port("web")), timeout=5)
    try:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, f"the proxy closed the connection after {first!r}"
            first += chunk
        assert first.startswith(b"HTTP/1.1 503 ") and b"connection: close" not in first.lower(), first
        sock.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        second = b""
        while chunk := sock.recv(65536):
            second += chunk
    finally:
        sock.close()
    assert second.startswith(b"HTTP/1.1 503 "), second
    assert app_state(p)["answers"]["503"] == 2
