"""The embedded proxy under overload, with members that look like small real apps (stdlib servers, backlog 5).

wrk (keep-alive, `--timeout 5s`) against three targets in the same test — one backend directly, a real
HAProxy running the config `render_haproxy_config` makes from the same `proxy:` section, and the embedded
proxy with DEFAULT settings — at 50, 200 and 500 clients; then a slow member, all members dead, and a
canary SIGKILLed under 200 clients.

Needs `wrk` (and `haproxy` for the comparison); a missing tool skips — or fails when CI is set, so CI cannot
go green without these having run. `pytest -s` prints the figures. The module holds
`/tmp/opsconsole-load.lock` (as bench/bench_proxy.py should be run under `flock` of it) so two load runs on one
machine take turns instead of skewing each other's figures.
"""

from __future__ import annotations

import os
import re
import signal
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from loadwrk import WrkResult, need, run_wrk, start_wrk
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.haproxy_config import render_haproxy_config
from stdlib_backend import StdlibBackend, start_backend
from test_proxy_support import TOKEN, ProxyProc, free_port, proxy_config_text, start_haproxy, start_proxy

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_load_at_a_time")]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECONDS = int(os.environ.get("OPSC_OVERLOAD_SECONDS", "10"))  # per target in the overload tests


# -- configs with the proxy's defaults ------------------------------------------------------------------

def config_text(tmp: Path, apps: str, *, extra: str = "") -> str:
    """A full config whose `proxy:` section sets nothing but the admin API and the apps: every timeout,
    limit and health setting is the proxy's default, which is what these tests judge."""
    return proxy_config_text(tmp, apps, extra=extra, tuned=False)


def plain_app(name: str, stable: list, canary: list = (), *, stable_weight: int = 100, canary_weight: int = 0,
              settings: str = "") -> str:
    """An app block with default health checks, retries and limits; `settings` adds app-level YAML lines."""
    def members(bs) -> str:
        return "[" + ", ".join(f"{{name: {b.name}, address: 127.0.0.1, port: {b.port}}}" for b in bs) + "]"
    out = f"{name}:\n  listen: 127.0.0.1:0\n"
    out += "".join(f"  {line}\n" for line in textwrap.dedent(settings).splitlines() if line.strip())
    out += f"  pools:\n    stable:\n      weight: {stable_weight}\n      members: {members(stable)}\n"
    if canary:
        out += f"    canary:\n      weight: {canary_weight}\n      members: {members(canary)}\n"
    return out


# -- processes -----------------------------------------------------------------------------------------------

@pytest.fixture
def procs(tmp_path):
    """Start members, proxies, HAProxy and wrk through this; everything is stopped at teardown."""
    started: list = []

    class Factory:
        def backend(self, name: str, **kw) -> StdlibBackend:
            b = start_backend(name, **kw)
            started.append(b)
            return b

        def proxy(self, text: str) -> ProxyProc:
            p = start_proxy(tmp_path, text)
            started.append(p)
            return p

        def haproxy(self, text: str, app: str = "web"):
            """A real HAProxy from the same `proxy:` section; returns (proc, port)."""
            cfg_file = tmp_path / "haproxy-source.yaml"
            cfg_file.write_text(text)
            cfg, _ = load_proxy_config(cfg_file)
            port = free_port()
            sock = str(tmp_path / "haproxy.sock")
            hcfg = tmp_path / "haproxy.cfg"
            hcfg.write_text(render_haproxy_config(cfg, stats_socket=sock, nbthread=1, bind={app: ("127.0.0.1", port)}))
            hp = start_haproxy(hcfg, sock, port, tmp_path / "haproxy.log")
            started.append(hp)
            return hp, port

        def wrk(self, url: str, seconds: float, connections: int):
            run = start_wrk(url, seconds, connections)
            started.append(run)
            return run

    yield Factory()
    for item in reversed(started):
        (item.kill if isinstance(item, StdlibBackend) else item.stop)()


def app_state(p: ProxyProc, app: str = "web", client: httpx.Client | None = None) -> dict:
    r = (client or httpx).get(f"{p.admin_url}/apps/{app}", headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def all_members(st: dict) -> list[dict]:
    return [m for pool in st["pools"].values() for m in pool["members"]]


def settled_state(p: ProxyProc, app: str = "web", timeout: float = 10.0) -> dict:
    """The app's state once no member has a request in flight: the proxy finished what clients walked away from."""
    deadline = time.monotonic() + timeout
    while True:
        st = app_state(p, app)
        if not any(m["inflight"] for m in all_members(st)):
            return st
        assert time.monotonic() < deadline, f"requests still in flight after {timeout:g}s"
        time.sleep(0.02)


def proxy_answers(st: dict) -> tuple[int, int]:
    """(answers the proxy made itself with a status, responses it cut short) from the app's `answers`.

    `answers` is {status: count} (JSON keys are strings); a "cut" key, if any, counts responses cut short.
    """
    assert "answers" in st, ("GET /apps/APP carries no `answers` {status: count}: the proxy must count every "
                             f"answer it makes itself; keys: {sorted(st)}")
    answers = st["answers"]
    statuses = sum(int(n) for k, n in answers.items() if str(k).isdigit())
    other = sum(int(n) for k, n in answers.items() if not str(k).isdigit())
    return statuses, other


def row(name: str, r: WrkResult) -> str:
    return (f"  {name:<9} {r.rps:>9.0f} req/s  failed {r.failed:>6}  p99 {r.p99 * 1000:>9.2f} ms   "
            f"({r.requests} requests; {r.errors_text()})")


# -- 1. overload: direct vs HAProxy vs embedded --------------------------------------------------------------

@pytest.mark.parametrize("clients", [50, 200, 500])
def test_overload_embedded_fails_no_more_than_direct_or_haproxy(clients, procs, tmp_path):
    need("wrk", "haproxy")
    members = [procs.backend(n) for n in ("s1", "s2", "s3")]
    text = config_text(tmp_path, plain_app("web", members))

    direct = run_wrk(f"http://127.0.0.1:{members[0].port}/", SECONDS, clients)
    time.sleep(0.5)

    hp, hport = procs.haproxy(text)
    haproxy = run_wrk(f"http://127.0.0.1:{hport}/", SECONDS, clients)
    hp.stop()
    time.sleep(0.5)

    p = procs.proxy(text)
    run = procs.wrk(f"http://127.0.0.1:{p.port('web')}/", SECONDS, clients)
    sick_seen: set[str] = set()
    with httpx.Client() as client:  # watch health during the run: an ejected member may be back by its end
        while run.proc.poll() is None:
            sick_seen.update(m["name"] for m in all_members(app_state(p, client=client)) if not m["healthy"])
            time.sleep(0.1)
    embedded = run.wait()
    st = settled_state(p)  # the proxy has finished the requests wrk walked away from
    down_lines = [line for line in p.log_text().splitlines() if " is DOWN" in line or "PANIC" in line]

    print(f"\n{clients} clients, {SECONDS}s each, wrk -t1 keep-alive --timeout 5s; 3 stdlib members (backlog 5)")
    for name, r in (("direct", direct), ("haproxy", haproxy), ("embedded", embedded)):
        print(row(name, r))
    relayed = sum(pool["requests"] for pool in st["pools"].values())
    print(f"  proxy counters: relayed {relayed}, answered itself {st.get('answers', '(no `answers` key)')}, "
          f"client_errors {st.get('client_errors')}, queued {st['pools']['stable'].get('queued')}")
    for line in [x for x in p.log_text().splitlines() if "DOWN" in x or "PANIC" in x or "not ejected" in x][:10]:
        print("  proxy log: " + line)

    assert embedded.requests > 0, embedded.output
    if direct.failed == 0:
        assert embedded.failed == 0, f"direct had no failure, the embedded proxy had {embedded.errors_text()}"
    assert embedded.failed <= haproxy.failed, (
        f"embedded failed {embedded.failed} ({embedded.errors_text()}) > haproxy {haproxy.failed} "
        f"({haproxy.errors_text()})")

    # No member was ejected: overload is not a member fault.
    sick = sorted(sick_seen | {m["name"] for m in all_members(st) if not m["healthy"] or m.get("ejected")})
    assert not sick, f"members marked unhealthy under overload: {sick}"
    assert not down_lines, down_lines[:5]

    # The proxy's counters agree with what wrk saw.
    answered, cut = proxy_answers(st)
    if embedded.failed == 0:
        assert answered == 0 and cut == 0, f"wrk saw no failure but the proxy says it answered {st['answers']}"
        assert st.get("client_errors", 0) == 0, st.get("client_errors")
    else:
        # Every answer the proxy made is an error to wrk (the members only answer 200). wrk counts those it
        # read before it stopped; at most one per connection was still on its way then.
        assert embedded.non2xx <= answered <= embedded.non2xx + clients, (embedded.errors_text(), st["answers"])
    # Every response wrk read was counted (relayed or answered); at most one per connection more.
    assert embedded.requests <= relayed + answered <= embedded.requests + clients + cut, (
        embedded.requests, relayed, st["answers"])


# -- 2. a slow member is queued for, not ejected ---------------------------------------------------------------

def test_slow_member_is_queued_for_not_ejected(procs, tmp_path):
    need("wrk")
    fast1 = procs.backend("fast1")
    slow = procs.backend("slow", delay_ms=2000)
    fast2 = procs.backend("fast2")
    p = procs.proxy(config_text(tmp_path, plain_app("web", [fast1, slow, fast2], settings="max_conns: 2")))
    run = procs.wrk(f"http://127.0.0.1:{p.port('web')}/", 6, 50)
    seen: list[bool] = []
    with httpx.Client() as client:
        while run.proc.poll() is None:
            st = app_state(p, client=client)
            seen.append(next(m for m in all_members(st) if m["name"] == "slow")["healthy"])
            time.sleep(0.05)
    r = run.wait()
    st = settled_state(p)
    slow_st = next(m for m in all_members(st) if m["name"] == "slow")
    stable = st["pools"]["stable"]
    print(f"\nslow member next to two fast ones, max_conns 2, 50 clients:\n{row('embedded', r)}\n"
          f"  queued {stable.get('queued')}, slow answered {slow_st['requests']}, polls {len(seen)}")

    assert len(seen) >= 20, "too few polls of the admin API during the run"
    assert all(seen), f"the slow member was marked unhealthy in {seen.count(False)} of {len(seen)} polls"
    assert slow_st["healthy"] and not slow_st.get("ejected")
    assert not [line for line in p.log_text().splitlines() if " is DOWN" in line], p.log_text()[-2000:]
    assert r.failed == 0, r.errors_text()
    assert "queued" in stable, f"the stable pool carries no `queued` counter; keys: {sorted(stable)}"
    assert stable["queued"] > 0, "50 clients on 3 × max_conns 2 must have queued"
    assert slow_st["requests"] > 0, "the slow member took no request at all: it was left out, not queued for"


# -- 3. every member dead: a plain 503, at once --------------------------------------------------------------

def test_all_members_dead_answers_503_at_once_and_names_nothing(procs, tmp_path):
    members = [procs.backend(n) for n in ("s1", "s2", "s3")]
    p = procs.proxy(config_text(tmp_path, plain_app("web", members)))
    url = f"http://127.0.0.1:{p.port('web')}/"
    for _ in range(6):  # some kept-alive upstream connections exist when the members die
        assert httpx.get(url, timeout=5).status_code == 200
    for m in members:
        m.kill()

    def one() -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        r = httpx.get(url, timeout=10)
        return r, time.monotonic() - t0

    def check(r: httpx.Response, took: float, when: str) -> None:
        print(f"\n{when}: {r.status_code} in {took * 1000:.1f} ms: {r.text!r}")
        assert r.status_code == 503, (when, r.status_code, r.text)
        assert took < 1.0, f"{when}: the 503 took {took:.2f}s"
        body = r.text.lower()
        assert re.search(r"\bno\b[\w\s-]*\b(server|backend|member|upstream)s?\b[\w\s-]*\bavailable\b", body), (
            f"{when}: the body does not say plainly that no server is available: {r.text!r}")
        leaks = [w for w in ["stable", "canary", "127.0.0.1", "web-1"] + [m.name for m in members]
                 + [str(m.port) for m in members] if w.lower() in body]
        assert not leaks, f"{when}: the body names {leaks}: {r.text!r}"

    check(*one(), "right after the SIGKILL")
    deadline = time.monotonic() + 10  # active checks (defaults: every 1s, fall 2) have had their say
    while any(m["healthy"] for m in all_members(app_state(p))):
        assert time.monotonic() < deadline, "the active checks never marked the dead members down"
        time.sleep(0.1)
    check(*one(), "once the checks saw it")


# -- 4. the canary dies under 200 clients ---------------------------------------------------------------------

def test_canary_sigkill_under_200_clients_no_failure_and_alert_within_half_a_second(procs, tmp_path):
    need("wrk")
    s1, s2, c1 = procs.backend("s1"), procs.backend("s2"), procs.backend("c1")
    p = procs.proxy(config_text(tmp_path, plain_app("web", [s1, s2], [c1], stable_weight=80, canary_weight=20)))
    run = procs.wrk(f"http://127.0.0.1:{p.port('web')}/", 6, 200)
    time.sleep(2.0)
    assert run.proc.poll() is None, "wrk ended before the kill"
    with httpx.Client() as client:
        before = app_state(p, client=client)
        # The latch is timed by the proxy's own clock (the alert's `since`, wall time): our admin reads wait
        # behind 200 clients on the proxy's one thread, so when we *see* the alert says little.
        killed_at = time.monotonic()
        killed_wall = time.time()
        os.kill(c1.proc.pid, signal.SIGKILL)
        alert = None
        deadline = killed_at + 5.0
        while time.monotonic() < deadline:
            st = app_state(p, client=client)
            if st["alert"] is not None:
                alert = st["alert"]
                break
            time.sleep(0.02)
    c1.proc.wait(5)
    r = run.wait()
    final = settled_state(p)
    latch = None if alert is None else alert["since"] - killed_wall
    print(f"\ncanary SIGKILL ~2s into 6s at 200 clients:\n{row('embedded', r)}\n"
          f"  alert {'never' if latch is None else f'{latch * 1000:.0f} ms'} after the kill; "
          f"canary_percent {final['canary_percent']}; canary answered {before['pools']['canary']['requests']} "
          f"before it died")

    assert before["pools"]["canary"]["requests"] > 0, "the canary had no traffic before it was killed"
    assert r.failed == 0, r.errors_text()
    assert latch is not None, "the alert never latched"
    assert 0 <= latch < 0.5, f"the alert latched {latch:.3f}s after the kill"
    assert final["alert"] is not None
    assert final["canary_percent"] == 0.0
