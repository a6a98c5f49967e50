"""WebSocket tunnels and TLS termination through the embedded proxy, with real clients.

The WebSocket side uses the `websockets` library (a test dependency) on both ends: an echo server
as the member, a real client in front. TLS uses a throwaway CA made in tmp_path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from rawbackend import RecordingBackend, WsBackend, app_yaml, exchange, make_ca, make_cert, read_responses
from test_proxy import admin, app_state, procs, wait_for  # noqa: F401  (procs is a fixture)
from test_proxy_support import proxy_config_text

WS_HEALTH = "{path: /health, interval: 500ms, timeout: 500ms, fall: 2, rise: 2}"


@pytest.fixture
def lab(procs, tmp_path):
    """WebSocket and recording backends, and proxies; all stopped at teardown (proxies first)."""
    started: list = []
    proxies: list = []

    class Lab:
        def ws(self, name: str) -> WsBackend:
            b = WsBackend(name)
            b.start()
            started.append(b)
            return b

        def rec(self, name: str = "rec1") -> RecordingBackend:
            b = RecordingBackend(name)
            b.start()
            started.append(b)
            return b

        def proxy(self, apps: str, *, edit=None):
            text = proxy_config_text(tmp_path, apps)
            if edit is not None:
                text = edit(text)
            p = procs.proxy(tmp_path, text)
            proxies.append(p)
            return p

    yield Lab()
    for p in proxies:
        p.stop()
    for b in started:
        b.stop()


def open_ws(port: int, path: str = "/echo"):
    """A real WebSocket client through the proxy (its own socket: no proxy from the environment)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ws_connect(f"ws://127.0.0.1:{port}{path}", sock=sock, open_timeout=5, close_timeout=2,
                      ping_interval=None, compression=None)


def member(p, name: str, app: str = "web") -> dict:
    for pool in app_state(p, app)["pools"].values():
        for m in pool["members"]:
            if m["name"] == name:
                return m
    raise AssertionError(f"no member {name}")


def tunnels(p, app: str = "web") -> dict:
    st = app_state(p, app)
    assert "tunnels" in st, f"GET /apps/{app} has no 'tunnels': keys {sorted(st)}"
    return st["tunnels"]


# -- 1. echo -------------------------------------------------------------------------------------------

def test_websocket_echo_through_the_proxy_is_counted_as_a_tunnel(lab):
    a = lab.ws("wsa")
    p = lab.proxy(app_yaml("web", [("wsa", a.port)], health=WS_HEALTH))
    with open_ws(p.port("web")) as ws:
        for text in ("one", "two", "three"):
            ws.send(text)
            assert ws.recv(timeout=5) == text
        blob = bytes(range(256)) * 4
        ws.send(blob)
        assert ws.recv(timeout=5) == blob
        assert a.total == 1 and a.paths == ["/echo"]
        t = wait_for(lambda: (lambda t: t if t.get("open") == 1 else None)(tunnels(p)), timeout=5,
                     what="tunnels.open == 1")
        assert t["total"] >= 1
        assert member(p, "wsa").get("tunnels") == 1
    wait_for(lambda: tunnels(p)["open"] == 0, timeout=5, what="tunnels.open back to 0 after the close")
    assert member(p, "wsa")["tunnels"] == 0
    assert tunnels(p)["total"] >= 1


def test_tunnels_to_a_member_are_bounded_by_max_tunnels_and_plain_requests_still_pass(lab):
    """A tunnel gives back its request slot at the 101; `max_tunnels` bounds what it keeps open instead."""
    a = lab.ws("wsa")
    p = lab.proxy(app_yaml("web", [("wsa", a.port)], health=WS_HEALTH, extra="max_tunnels: 2\nmax_conns: 4\n"))
    port = p.port("web")
    with contextlib.ExitStack() as stack:
        open_now = [stack.enter_context(open_ws(port)) for _ in range(2)]
        for i, ws in enumerate(open_now):
            ws.send(f"t{i}")
            assert ws.recv(timeout=5) == f"t{i}"
        wait_for(lambda: member(p, "wsa").get("tunnels") == 2, timeout=5, what="two tunnels counted")
        # A third upgrade is refused at once (waiting would not help: tunnels close when users leave) …
        started = time.monotonic()
        data = (b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = exchange(port, data, want=1, timeout=5)
        assert r.statuses == [503], f"statuses={r.statuses} raw={r.raw[:300]!r}"
        assert time.monotonic() - started < 5.0, "the refusal waited for the queue timeout (10 s)"
        assert a.total == 2, "the member never saw the refused upgrade"
        # … while plain requests still get through, and the open tunnels still work.
        r = exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", want=1, timeout=5)
        assert r.statuses == [200], r.raw[:300]
        open_now[0].send("still")
        assert open_now[0].recv(timeout=5) == "still"
        # One closes: a new tunnel fits again.
        open_now[0].close()
        wait_for(lambda: member(p, "wsa")["tunnels"] == 1, timeout=5, what="the closed tunnel uncounted")
        third = stack.enter_context(open_ws(port))
        third.send("third")
        assert third.recv(timeout=5) == "third"
    assert app_state(p, "web")["answers"].get("503") == 1


# -- 2. drain with a tunnel open -----------------------------------------------------------------------

def test_draining_a_member_waits_for_its_tunnel_then_closes_it_at_drain_timeout(lab):
    a, b = lab.ws("wsa"), lab.ws("wsb")
    p = lab.proxy(app_yaml("web", [("wsa", a.port), ("wsb", b.port)], health=WS_HEALTH),
                  edit=lambda t: t.replace("drain_timeout: 10s", "drain_timeout: 2s"))
    port = p.port("web")
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(open_ws(port))
        first.send("hello")
        assert first.recv(timeout=5) == "hello"
        wait_for(lambda: a.open + b.open == 1, timeout=5, what="the tunnel at one member")
        on, other = (a, b) if a.open else (b, a)
        wait_for(lambda: member(p, on.name).get("tunnels") == 1, timeout=5, what="the member's tunnel counted")

        t_drain = time.monotonic()  # before the call: the proxy's drain clock starts within it
        r = admin(p, "POST", f"/apps/web/members/{on.name}/drain")
        assert r.status_code == 200 and r.json()["admin"] == "draining", r.text
        assert r.json()["drained"] is False, "a member with an open tunnel is not drained"

        # The tunnel lives on during the drain …
        first.send("still here")
        assert first.recv(timeout=5) == "still here"
        # … and a new one goes to the other member.
        second = stack.enter_context(open_ws(port))
        second.send("new")
        assert second.recv(timeout=5) == "new"
        assert other.total == 1 and on.total == 1, (on.total, other.total)
        if time.monotonic() - t_drain < 1.5:
            assert member(p, on.name)["drained"] is False

        # At drain_timeout the proxy closes the tunnel; the client sees its connection end.
        closed_at = None
        deadline = t_drain + 5
        while time.monotonic() < deadline:
            try:
                first.recv(timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionClosed:
                closed_at = time.monotonic() - t_drain
                break
        assert closed_at is not None, "the tunnel to the draining member was never closed"
        assert 1.5 <= closed_at <= 4.0, f"the tunnel was closed {closed_at:.2f}s after the drain (drain_timeout 2s)"
        wait_for(lambda: member(p, on.name)["drained"] is True, timeout=3, what="drained once the tunnel is gone")
        wait_for(lambda: on.open == 0, timeout=3, what="the member's side of the tunnel closed too")

        # The tunnel on the other member is untouched.
        second.send("after")
        assert second.recv(timeout=5) == "after"
        assert on.total == 1


# -- 3. an upgrade the member refuses -------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 426])
def test_an_upgrade_the_member_refuses_gets_its_status_not_a_hang(lab, status):
    a = lab.ws("wsa")
    p = lab.proxy(app_yaml("web", [("wsa", a.port)], health=WS_HEALTH))
    data = (f"GET /refuse?status={status} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    r = exchange(p.port("web"), data, want=1, timeout=5)
    assert r.statuses == [status], f"statuses={r.statuses} closed={r.closed} raw={r.raw[:300]!r}"
    assert b"refuses the upgrade" in r.responses[0].body


# -- 4. TLS --------------------------------------------------------------------------------------------

def _tls_request(port: int, ca, *, path: str = "/") -> tuple[int, bytes, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            r = read_responses(s, until_close=True, timeout=5)
            return (r.statuses[0] if r.statuses else 0), (r.responses[0].body if r.responses else r.raw), \
                s.getpeercert(binary_form=True)


def test_tls_is_terminated_and_the_backend_is_told_https(lab, tmp_path):
    ca, ca_key, ca_cert = make_ca(tmp_path)
    cert, key, _ = make_cert(tmp_path, ca_key, ca_cert)
    b = lab.rec()
    p = lab.proxy(app_yaml("web", [(b.name, b.port)], tls=(cert, key)))
    status, body, _ = _tls_request(p.port("web"), ca, path="/secure")
    assert status == 200 and body.startswith(b"path=/secure "), (status, body)
    (req,) = [q for q in b.requests() if q.path == "/secure"]
    assert req.header_values("X-Forwarded-Proto") == ["https"], req.headers
    assert req.header_values("X-Forwarded-For") == ["127.0.0.1"], req.headers


def _serial(der: bytes) -> int:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_reloads_the_certificate_and_keeps_open_tls_connections(lab, tmp_path):
    ca, ca_key, ca_cert = make_ca(tmp_path)
    cert, key, serial1 = make_cert(tmp_path, ca_key, ca_cert)
    b = lab.rec()
    p = lab.proxy(app_yaml("web", [(b.name, b.port)], tls=(cert, key)))
    port = p.port("web")
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    old = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        old_der = old.getpeercert(binary_form=True)
        assert _serial(old_der) == serial1
        old.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_responses(old, want=1, timeout=5)
        assert r.statuses == [200], r.raw[:300]

        # A new certificate (new key, new serial, same CA) in place of the old files, then SIGHUP.
        new_cert, new_key, serial2 = make_cert(tmp_path, ca_key, ca_cert, stem="next")
        assert serial2 != serial1
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        os.kill(p.proc.pid, signal.SIGHUP)
        wait_for(lambda: "config reloaded" in p.log_text(), timeout=10, what="config reloaded")

        status, body, new_der = _tls_request(port, ca, path="/two")
        assert status == 200, body
        assert new_der != old_der and _serial(new_der) == serial2, "a new connection still gets the old certificate"

        # The connection made before the reload lives on, with its old session.
        old.sendall(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_responses(old, want=1, timeout=5)
        assert r.statuses == [200] and r.responses[0].body.startswith(b"path=/three "), r.raw[:300]
    finally:
        old.close()
