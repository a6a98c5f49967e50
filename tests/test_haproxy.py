"""HAProxy specifics: the generated config, retry rules, re-applying runtime state after a reload, remote channel."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from opsconsole.hosts import Host
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.traffic.base import Endpoint, TrafficBadRequest, TrafficUnavailable
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

        def haproxy(self, apps: str, *, replace=None, extra: str = "", slots: int = 0):
            sock = str(tmp_path / "haproxy.sock")
            text = proxy_config_text(tmp_path, apps, extra=f"driver: haproxy\nhaproxy: {{stats_socket: {sock}, "
                                                           f"nbthread: 1, slots: {slots}}}\n" + extra)
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

        def echo(self, name):
            e = EchoBackend(name)
            started.append(e)
            return e

    yield Lab()
    for item in reversed(started):
        (item.kill if hasattr(item, "kill") else item.stop)()


def _checks_passed(lab, *members: tuple[str, str], timeout: float = 10.0) -> None:
    """Until HAProxy's first checks have passed on each (app, member): it starts checking at once."""
    driver = lab.driver()
    deadline = time.monotonic() + timeout
    for app, member in members:
        while not asyncio.run(driver.app(app)).member(member).healthy:
            assert time.monotonic() < deadline, f"{member} of {app} never passed a check"
            time.sleep(0.05)


def _with(app: str, *, app_keys: str = "", health: str = "") -> str:
    """An app_block with extra keys for the app (`max_conns: 1`) and its health mapping (`on_5xx: true`)."""
    if app_keys:
        app = app.replace("  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n" + "".join(
            f"  {line}\n" for line in app_keys.splitlines()), 1)
    if health:
        app = app.replace("rise: 2}", f"rise: 2, {health}}}", 1)
    return app


def _tls_pair(tmp_path, *, combined: bool = False, key_name: str | None = None):
    """A throwaway self-signed certificate for 127.0.0.1 (cryptography: asyncssh needs it anyway).
    Returns (cert, key): the key at `<cert>.key`, inside the cert's PEM (`combined`), or at `key_name`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    d = tmp_path / f"tls-{'combined' if combined else (key_name or 'dotkey')}"
    d.mkdir()
    cert_path = d / "site.pem"
    if combined:
        cert_path.write_bytes(cert_pem + key_pem)
        return cert_path, cert_path
    key_path = d / (key_name or "site.pem.key")
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


def _render(tmp_path, name: str, apps: str, extra: str = "") -> str:
    f = tmp_path / f"{name}.yaml"
    f.write_text(proxy_config_text(tmp_path, apps, extra="driver: haproxy\nhaproxy: {nbthread: 1}\n" + extra))
    cfg, _ = load_proxy_config(f)
    return render_haproxy_config(cfg, stats_socket=str(tmp_path / "x.sock"), bind={"web": ("127.0.0.1", free_port())})


def _haproxy_check(tmp_path, name: str, text: str) -> None:
    hf = tmp_path / f"{name}.cfg"
    hf.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(hf)], capture_output=True, text=True)
    assert check.returncode == 0, f"{name}:\n{text}\n{check.stdout}{check.stderr}"


def test_generated_config_is_valid_and_carries_the_guarantees(tmp_path, lab):
    s, c = lab.backend("s1"), lab.backend("c1")

    def web(split="request", auto_restore=False):
        return app_block("web", [s], [c], stable_weight=80, canary_weight=20, split=split, auto_restore=auto_restore)

    combined = _tls_pair(tmp_path, combined=True)
    dotkey = _tls_pair(tmp_path)
    common = ["nbthread 1", "retries 3\n", "retry-on conn-failure empty-response\n", "option redispatch",
              "http-request disable-l7-retry if !METH_GET !METH_HEAD",
              "server c1 127.0.0.1:%d weight 51 maxconn 32" % c.port, "server s1 127.0.0.1:%d weight 205 maxconn 32" % s.port,
              # the test config's timeouts (connect 500ms) and the defaults of the rest
              "timeout connect 500ms", "timeout queue 10000ms", "timeout http-request 10000ms",
              "timeout check 1000ms",  # the app's health timeout
              "option forwardfor", "http-request del-header X-Forwarded-For",
              'http-request deny deny_status 431 content-type text/plain string "request header fields too large" '
              "if { req.hdrs,length gt 32768 }"]
    passive = ["observe layer4 error-limit 5 on-error fail-check", "error-limit 1 on-error mark-down rise 100000"]
    variants = {
        # name: (apps, extra proxy keys, must contain, must not contain)
        # The old passive rule (layer7, error-limit 1, mark-down) took any server down on one error; now only
        # a canary goes at once, a stable server's line carries no override.
        "request": (web(), "", common + passive + ["X-Forwarded-Proto http", "del-header X-Forwarded-For\n",
                                                   "server s1 127.0.0.1:%d weight 205 maxconn 32\n" % s.port],
                    ["cookie opsconsole_bucket", "ssl crt", "acl from_trusted_proxy", "layer7"]),
        "sticky": (web(split="sticky"), "", common + passive + ["cookie opsconsole_bucket insert",
                                                                "maxconn 32 cookie c1 error-limit 1"], []),
        "auto_restore": (web(auto_restore=True), "", common + ["server c1 127.0.0.1:%d weight 51 maxconn 32 error-limit 1 "
                                                               "on-error mark-down\n" % c.port], ["rise 100000"]),
        "on_5xx": (_with(web(), health="on_5xx: true"), "",
                   common + ["observe layer7 error-limit 5 on-error fail-check", "weight 51 maxconn 32 rise 100000"],
                   ["layer4", "mark-down"]),
        "no_passive": (_with(web(), health="passive: false"), "", common + ["rise 100000"], ["observe", "on-error"]),
        "knobs": (_with(web(), app_keys="max_conns: 1", health="passive_failures: 7, passive_refused: 2")
                  .replace("timeout: 1s,", "timeout: 3s,"),
                  "queue_timeout: 0s\nhead_timeout: 2500ms\nmax_head_bytes: 4096\n",
                  ["timeout queue 1ms", "timeout http-request 2500ms", "timeout check 3000ms",
                   "req.hdrs,length gt 4096", "observe layer4 error-limit 7 on-error fail-check",
                   "weight 51 maxconn 1 error-limit 2 on-error mark-down"], ["maxconn 32"]),
        # No retry of a request once sent; a connect that failed is still retried (3 times, as HAProxy's default).
        "no_l7_retry": (_with(web(), app_keys="retry: {attempts: 0}"), "",
                        [line for line in common if not line.startswith("retry-on")] + ["retry-on conn-failure\n"],
                        ["empty-response"]),
        # A count of the user's own (over the 3 connect retries): timed-out answers of a GET are retried too.
        "many_retries": (_with(web(), app_keys="retry: {attempts: 5}"), "",
                         [line for line in common if not line.startswith(("retries", "retry-on"))]
                         + ["retries 5\n", "retry-on conn-failure empty-response response-timeout\n"], []),
        "trusted": (web(), "trusted_proxies: [127.0.0.0/8, 10.1.2.3, '2001:db8::/32']\n",
                    common + ["acl from_trusted_proxy src 127.0.0.0/8 10.1.2.3/32 2001:db8::/32",
                              "http-request del-header X-Forwarded-For if !from_trusted_proxy"], []),
        "tls_dotkey": (_with(web(), app_keys=f"tls: {{cert: {dotkey[0]}, key: {dotkey[1]}}}"), "",
                       common + [f"ssl crt {dotkey[0]}\n", "X-Forwarded-Proto https"], ["X-Forwarded-Proto http\n"]),
        "tls_combined": (_with(web(), app_keys=f"tls: {{cert: {combined[0]}, key: {combined[1]}}}"), "",
                         common + [f"ssl crt {combined[0]}\n", "X-Forwarded-Proto https"], []),
    }
    for name, (apps, extra, needles, absent) in variants.items():
        out = _render(tmp_path, name, apps, extra)
        _haproxy_check(tmp_path, name, out)
        for needle in needles:
            assert needle in out, (name, needle, out)
        for needle in absent:
            assert needle not in out, (name, needle, out)


def test_a_tls_key_haproxy_cannot_find_is_refused_when_rendering(tmp_path, lab):
    s = lab.backend("s1")
    cert, key = _tls_pair(tmp_path, key_name="elsewhere.key")
    apps = _with(app_block("web", [s], []), app_keys=f"tls: {{cert: {cert}, key: {key}}}")
    with pytest.raises(ValueError, match=r"site\.pem\.key"):
        _render(tmp_path, "tls_elsewhere", apps)
    # HAProxy looks for the key in the cert's PEM, then at <cert>.key only; moved there, the pair is valid.
    key.rename(str(cert) + ".key")
    _haproxy_check(tmp_path, "tls_moved", _render(tmp_path, "tls_moved", apps.replace(str(key), str(cert) + ".key")))


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
    dead, gone1, gone2 = lab.backend("cd"), lab.backend("sd1"), lab.backend("sd2")
    for b in (dead, gone1, gone2):
        b.kill()
    lab.haproxy(app_block("g", [s], [cg], stable_weight=1, canary_weight=100, interval="10s")
                + app_block("p", [s], [cp], stable_weight=1, canary_weight=100, interval="10s")
                + app_block("n", [s], [dead], stable_weight=1, canary_weight=100, interval="10s")
                + app_block("two", [gone1, gone2, s], [], interval="10s"))
    # HAProxy runs its first check at once; let it pass on the live canaries before we kill one by request.
    _checks_passed(lab, ("g", "cg"), ("p", "cp"))
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
    # Two dead stable members still in rotation (their checks have not failed yet): a redispatch can land on
    # the other dead one, and `attempts: 1` must not mean one try after the first, or a client fails where
    # the embedded proxy (3 connect retries) would not. (With `retries 1` half of these got 503.)
    for _ in range(6):
        r = httpx.post(f"http://127.0.0.1:{lab.ports['two']}/", content=b"pay=1", timeout=10)
        assert r.status_code == 200 and r.headers["x-member"] == "s1", (r.status_code, r.text)


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
        deadline = time.monotonic() + 10
        while d.reapplied < 1:  # the watch has seen the new HAProxy and given it the desired state
            assert time.monotonic() < deadline, "the desired state was never re-applied"
            await asyncio.sleep(0.05)
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


# -- behaviour through a real HAProxy: forwarding fields, maxconn, head limits ----------------------------

class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"xff": self.headers.get_all("X-Forwarded-For") or [],
                           "proto": self.headers.get_all("X-Forwarded-Proto") or [],
                           "names": sorted({k.lower() for k in self.headers.keys()})}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Member", self.server.member_name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args) -> None:
        pass


@dataclass
class EchoBackend:
    """A member that answers every request with the forwarding header lines it received."""

    name: str

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        self.server.daemon_threads = True
        self.server.member_name = self.name
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _xff(r: httpx.Response) -> list[str]:
    """Every X-Forwarded-For hop the member saw, whether in one line or several."""
    return [hop.strip() for line in r.json()["xff"] for hop in line.split(",")]


def test_a_client_x_forwarded_for_is_replaced_at_the_edge(lab):
    e = lab.echo("e1")
    lab.haproxy(app_block("web", [e], []))
    url = f"http://127.0.0.1:{lab.ports['web']}/"
    r = httpx.get(url, headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}, timeout=10)
    assert r.status_code == 200 and _xff(r) == ["127.0.0.1"]
    assert r.json()["proto"] == ["http"]  # a plain-HTTP client cannot claim https either
    assert _xff(httpx.get(url, timeout=10)) == ["127.0.0.1"]


def test_other_forwarding_claims_and_underscore_spellings_are_dropped_at_the_edge(lab):
    """As the embedded proxy does: X-Real-IP, Forwarded, X-Forwarded-Host/-Port from a client are claims,
    and X_Forwarded_For reads as X-Forwarded-For in a CGI or WSGI app. Other underscore names pass."""
    e = lab.echo("e1")
    lab.haproxy(app_block("web", [e], []))
    r = httpx.get(f"http://127.0.0.1:{lab.ports['web']}/", timeout=10, headers={
        "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Port": "1", "X_Forwarded_For": "6.6.6.6", "X_Real_IP": "6.6.6.6", "X_Custom": "kept",
        "X-Forwarded_For": "6.6.6.6", "X_Forwarded-Proto": "https", "X-Real_IP": "6.6.6.6"})
    assert r.status_code == 200
    names = set(r.json()["names"])
    assert not names & {"x-real-ip", "forwarded", "x-forwarded-host", "x-forwarded-port", "x_forwarded_for",
                        "x_real_ip", "x-forwarded_for", "x_forwarded-proto", "x-real_ip"}, names
    assert "x_custom" in names and _xff(r) == ["127.0.0.1"]


def test_a_trusted_proxy_x_forwarded_for_is_extended(lab):
    e = lab.echo("e1")
    lab.haproxy(app_block("web", [e], []), extra="trusted_proxies: [10.0.0.0/8, 127.0.0.0/8]\n")
    r = httpx.get(f"http://127.0.0.1:{lab.ports['web']}/", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
    assert r.status_code == 200 and _xff(r) == ["203.0.113.7", "127.0.0.1"]


def test_a_tls_frontend_terminates_and_says_https(tmp_path, lab):
    e = lab.echo("e1")
    cert, key = _tls_pair(tmp_path)  # the key at <cert>.key: HAProxy finds it by itself
    lab.haproxy(_with(app_block("web", [e], []), app_keys=f"tls: {{cert: {cert}, key: {key}}}"))
    r = httpx.get(f"https://127.0.0.1:{lab.ports['web']}/", headers={"X-Forwarded-Proto": "http"},
                  verify=False, timeout=10)
    assert r.status_code == 200 and r.json()["proto"] == ["https"] and _xff(r) == ["127.0.0.1"]


def test_maxconn_queues_the_excess_instead_of_failing_it(lab):
    s = lab.backend("s1")
    lab.haproxy(_with(app_block("web", [s], []), app_keys="max_conns: 1"))
    url = f"http://127.0.0.1:{lab.ports['web']}/hold?ms=1000"
    _checks_passed(lab, ("web", "s1"))

    def get(_):
        t0 = time.monotonic()
        r = httpx.get(url, timeout=15)
        return r.status_code, time.monotonic() - t0

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(get, range(2)), key=lambda x: x[1])
    assert [code for code, _ in results] == [200, 200], results
    # One after the other: the second waited in HAProxy's queue for the first to finish.
    assert results[0][1] >= 0.9 and results[1][1] >= 1.9, results
    rows = {(r["pxname"], r["svname"]): r for r in asyncio.run(lab.driver()._stats())}
    assert rows[("be_web", "s1")]["smax"] == "1"  # never two at once on the server
    assert int(rows[("be_web", "BACKEND")]["qmax"]) >= 1


def test_a_request_head_over_max_head_bytes_gets_431(lab):
    e = lab.echo("e1")
    lab.haproxy(app_block("web", [e], []), extra="max_head_bytes: 4096\n")
    url = f"http://127.0.0.1:{lab.ports['web']}/"
    assert httpx.get(url, headers={"X-Big": "a" * 3000}, timeout=10).status_code == 200
    r = httpx.get(url, headers={"X-Big": "a" * 5000}, timeout=10)
    assert r.status_code == 431 and "too large" in r.text


def test_passive_errors_count_toward_fall_and_a_dead_canary_goes_at_once(lab):
    s1, s2, c = lab.backend("s1"), lab.backend("s2"), lab.backend("c1")
    # Active checks every 60 s (HAProxy spreads the first ones over that interval): within this test only
    # live traffic can say anything about the servers. Until its first check passes a server is "UP 1/2",
    # one failure from down; `health up` gives each its full health, as passed checks would.
    lab.haproxy(app_block("web", [s1, s2], [c], stable_weight=50, canary_weight=50, interval="60s"))
    d = lab.driver()
    asyncio.run(d._run([f"set server be_web/{n} health up" for n in ("s1", "s2", "c1")]))
    assert {x["status"] for x in asyncio.run(d._stats()) if x["pxname"] == "be_web" and x["svname"] != "BACKEND"} == {"UP"}
    s2.kill()
    c.kill()
    seen = {"s2": [], "c1": []}  # (passive failures so far, status) after each request
    with httpx.Client(timeout=10) as client:
        for _ in range(200):
            r = client.get(f"http://127.0.0.1:{lab.ports['web']}/")
            assert r.status_code == 200 and r.headers["x-member"] == "s1"  # every refused connect was redispatched
            rows = {x["svname"]: x for x in asyncio.run(d._stats()) if x["pxname"] == "be_web"}
            for name in seen:
                seen[name].append((int(rows[name]["hanafail"] or 0), rows[name]["status"]))
            if seen["s2"][-1][1].startswith("DOWN") and seen["c1"][-1][1].startswith("DOWN"):
                break
    # The canary: down on its first refused connection (error-limit 1, mark-down), and latched.
    assert all(st.startswith("DOWN") for n, st in seen["c1"] if n >= 1), seen["c1"]
    assert seen["c1"][-1][0] == 1
    # A stable server: 5 refused connections in a row are one failed check; it stays up after the first
    # and goes down with the second (fall 2), never on a single error.
    assert any(n == 1 and st.startswith("UP") for n, st in seen["s2"]), seen["s2"]
    assert all(st.startswith("UP") for n, st in seen["s2"] if n < 2), seen["s2"]
    assert seen["s2"][-1][0] == 2 and seen["s2"][-1][1].startswith("DOWN"), seen["s2"]


def test_runtime_member_set_is_reapplied_after_a_haproxy_reload_and_adopted_by_a_new_console(lab):
    """Members set at runtime live in server-template slots, in HAProxy's memory only: a reloaded HAProxy
    gets them back from the driver's desired state, and a console started with no state file adopts them."""
    s1, s2, s3, c = lab.backend("s1"), lab.backend("s2"), lab.backend("s3"), lab.backend("c1")
    apps = app_block("web", [s1, s2], [c])
    hp = lab.haproxy(apps, slots=2)
    d = lab.driver()

    async def swap():
        await d.set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port), Endpoint("pod-s3", "127.0.0.1", s3.port)])
        deadline = time.monotonic() + 10
        while "s2" in [m.name for m in (await d.app("web")).pools["stable"].members]:
            assert time.monotonic() < deadline, "s2 was never reaped"
            await asyncio.sleep(0.05)
        return await load(lab.ports["web"], total=300, concurrency=4)

    r = asyncio.run(swap())
    assert r.failed == 0 and r.members["s2"] == 0 and r.members["s3"] > 100, r.members
    new = lab.haproxy(apps, replace=hp, slots=2)  # the reload: a fresh HAProxy from the file (slots empty, s2 in)
    hp.proc.wait(10)

    async def after_reload():
        st = await d.app("web")  # the driver sees the new instance and re-applies
        return st, await load(lab.ports["web"], total=300, concurrency=4)

    st, r = asyncio.run(after_reload())
    assert d.reapplied == 1
    assert [m.name for m in st.pools["stable"].members] == ["s1", "pod-s3"]
    assert r.failed == 0 and r.members["s2"] == 0 and r.members["s3"] > 100, r.members
    adopted = asyncio.run(lab.driver().app("web"))  # a new console, no state file: reads the slots in use
    assert sorted((m.address, m.port) for m in adopted.pools["stable"].members) == \
        sorted([("127.0.0.1", s1.port), ("127.0.0.1", s3.port)])
    assert new.proc.poll() is None


def test_a_new_console_on_the_same_haproxy_lets_a_removed_member_finish_its_drain(tmp_path, lab):
    """Each console command is a new driver reading the state file. On the HAProxy the file was applied to,
    a member the last console removed while it had a request in flight stays listed, draining, until that
    request is done; only a HAProxy started since then (nothing in flight) gets the state re-applied."""
    s1, s2 = lab.backend("s1"), lab.backend("s2")
    hp = lab.haproxy(app_block("web", [s1, s2], []), slots=2)
    _checks_passed(lab, ("web", "s1"), ("web", "s2"))
    state = tmp_path / "haproxy-desired.json"
    console = lambda: lab.driver(state_file=state)  # noqa: E731 (one line: a new console each call)

    async def swap_with_s2_busy():
        async with httpx.AsyncClient(timeout=15) as client:
            # Every request goes through s2 until it is out: s1 is drained first, s2 gets a 1.5 s request.
            await console().drain("web", "s1")
            held = asyncio.create_task(client.get(f"http://127.0.0.1:{lab.ports['web']}/hold?ms=1500"))
            deadline = time.monotonic() + 5
            while (await console().app("web")).member("s2").inflight == 0:
                assert time.monotonic() < deadline, "the held request never reached s2"
                await asyncio.sleep(0.02)
            await console().set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port)])
            seen = await console().app("web")  # the next command, a new console, same HAProxy
            answer = await held
            after = await console().app("web")
            return seen, answer, after

    seen, answer, after = asyncio.run(swap_with_s2_busy())
    s2_then = seen.member("s2")
    assert s2_then.removed and s2_then.admin == "draining" and s2_then.inflight == 1, s2_then
    assert answer.status_code == 200 and answer.json()["member"] == "s2"
    assert [m.name for m in after.pools["stable"].members] == ["s1"], "s2 not reaped once its request was done"
    hp.stop()  # a full restart: a new console re-applies the file to the new process
    lab.haproxy(app_block("web", [s1, s2], []), slots=2)
    st = asyncio.run(console().app("web"))
    assert [m.name for m in st.pools["stable"].members] == ["s1"] and st.member("s1").admin == "draining"
    # What the new process runs, read from HAProxy itself (the driver's view is built from the file).
    rows = {r["svname"]: r["status"] for r in asyncio.run(lab.driver()._stats()) if r["pxname"] == "be_web"}
    assert rows["s1"].startswith("DRAIN") and rows["s2"].startswith("MAINT"), rows


class _FakeRuntime:
    """A stand-in for HAProxy's stats socket that only says which process it is and records commands."""

    def __init__(self, pid: str) -> None:
        self.pid = pid
        self.sent: list[str] = []

    async def command(self, line: str) -> str:
        if line == "show info":
            return f"Pid: {self.pid}\nStart_time_sec: 1796000000\n"
        if line == "show stat":
            return "# pxname,svname,status,scur,weight,uweight,addr\nbe_web,s1,UP,0,1,1,\nbe_web,BACKEND,UP,0,1,1,\n"
        self.sent.append(line)
        return ""


def test_the_state_file_is_trusted_only_on_the_process_it_was_applied_to(tmp_path, lab):
    """Same process: a new console sends nothing. Another process, or a change that never finished (the file
    written ahead of the commands, then the console gone): the whole desired state is sent again."""
    lab.haproxy(app_block("web", [lab.backend("s1")], []))  # (for its config; the runtime here is fake)
    state = tmp_path / "desired.json"
    one = _FakeRuntime("100")
    asyncio.run(HaproxyDriver(lab.cfg, one, state_file=state).set_weights("web", {"stable": 50}))
    saved = json.loads(state.read_text())
    assert saved["_haproxy_instance"] == ["100", "1796000000"] and saved["web"]["weights"]["stable"] == 50
    again = _FakeRuntime("100")
    asyncio.run(HaproxyDriver(lab.cfg, again, state_file=state).app("web"))
    assert again.sent == []
    other = _FakeRuntime("200")
    asyncio.run(HaproxyDriver(lab.cfg, other, state_file=state).app("web"))
    assert any("set weight be_web/s1" in c for c in other.sent), other.sent
    assert json.loads(state.read_text())["_haproxy_instance"] == ["200", "1796000000"]
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "_haproxy_instance": None}))  # as a console killed mid-change leaves it
    crashed = _FakeRuntime("200")
    asyncio.run(HaproxyDriver(lab.cfg, crashed, state_file=state).app("web"))
    assert any("set weight be_web/s1" in c for c in crashed.sent), crashed.sent

    class _GoneMidChange(_FakeRuntime):
        async def command(self, line: str) -> str:
            if line.startswith("set "):
                raise TrafficUnavailable("the socket went away")
            return await super().command(line)

    with pytest.raises(TrafficUnavailable):
        asyncio.run(HaproxyDriver(lab.cfg, _GoneMidChange("200"), state_file=state).set_weights("web", {"stable": 70}))
    assert json.loads(state.read_text())["_haproxy_instance"] is None  # written ahead: not trusted any more


def test_member_set_beyond_the_slots_is_refused_and_changes_nothing(lab):
    s1, s2, s3 = lab.backend("s1"), lab.backend("s2"), lab.backend("s3")
    lab.haproxy(app_block("web", [s1], []), slots=1)
    d = lab.driver()

    async def scenario():
        await d.set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port), Endpoint("p2", "127.0.0.1", s2.port)])
        with pytest.raises(TrafficBadRequest) as err:  # p2 holds the one slot; p3 needs another
            await d.set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port),
                                                  Endpoint("p2", "127.0.0.1", s2.port),
                                                  Endpoint("p3", "127.0.0.1", s3.port)])
        return err.value, await d.app("web"), await load(lab.ports["web"], total=200, concurrency=2)

    error, st, r = asyncio.run(scenario())
    assert "no free HAProxy server slot for p3" in str(error) and "proxy.haproxy.slots" in str(error)
    assert [m.name for m in st.pools["stable"].members] == ["s1", "p2"]
    assert r.failed == 0 and r.members["s3"] == 0 and r.members["s2"] > 50, r.members
