"""Admin API security and bad input: every refusal says why and changes nothing; the proxy refuses to run unguarded."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import textwrap

import httpx
import pytest

from opsconsole.config.reader import MappingReader
from opsconsole.proxy.config import parse_proxy_section
from opsconsole.yamlsource import SourceError, load_yaml
from test_proxy import admin, app_state, procs  # noqa: F401  (fixture)
from test_proxy_support import PY, ROOT, TOKEN, Backend, app_block, load, proxy_config_text, start_proxy


@pytest.fixture
def proxy(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    return procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=80, canary_weight=20)))


def _snapshot(p) -> tuple:
    st = app_state(p)
    return (st["pools"]["stable"]["weight"], st["pools"]["canary"]["weight"],
            tuple((m["name"], m["admin"]) for pool in st["pools"].values() for m in pool["members"]), st["alert"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"}])
def test_bad_or_missing_token_is_401_and_changes_nothing(proxy, headers):
    before = _snapshot(proxy)
    for method, path, body in [("PUT", "/apps/web/weights", {"stable": 0, "canary": 100}),
                               ("POST", "/apps/web/members/s1/disable", None), ("GET", "/state", None),
                               ("GET", "/metrics", None), ("POST", "/apps/web/alert/clear", None)]:
        r = httpx.request(method, proxy.admin_url + path, json=body, headers=headers, timeout=5)
        assert r.status_code == 401, (path, r.text)
        assert "token" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert _snapshot(proxy) == before


@pytest.mark.parametrize("body", [{"stable": 101}, {"canary": -1}, {"canary": "50"}, {"canary": True},
                                  {"canary": 20.5}, {"stable": 50, "canary": 500}, {}, [50]])
def test_weight_outside_0_100_or_malformed_is_400_and_changes_nothing(proxy, body):
    before = _snapshot(proxy)
    r = admin(proxy, "PUT", "/apps/web/weights", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]
    # {"stable": 50, "canary": 500}: the valid half must not be applied either.
    assert _snapshot(proxy) == before


def test_not_json_is_400(proxy):
    r = admin(proxy, "PUT", "/apps/web/pools/canary/weight", content=b"weight=5")
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = admin(proxy, "PUT", "/apps/web/pools/canary/weight", json={"weight": 5, "extra": 1})
    assert r.status_code == 400


@pytest.mark.parametrize("method,path,needle", [
    ("PUT", "/apps/nope/weights", "no app 'nope'"),
    ("PUT", "/apps/web/pools/blue/weight", "no pool 'blue'"),
    ("POST", "/apps/web/members/ghost/drain", "no member 'ghost'"),
    ("GET", "/apps/web/members/ghost", "no member 'ghost'"),
    ("POST", "/apps/nope/alert/clear", "no app"),
    ("GET", "/nothing/here", "no such endpoint"),
])
def test_unknown_app_pool_member_is_404_and_changes_nothing(proxy, method, path, needle):
    before = _snapshot(proxy)
    body = {"weight": 10} if "pools" in path else ({"canary": 10} if "weights" in path else None)
    r = admin(proxy, method, path, json=body)
    assert r.status_code == 404, r.text
    assert needle in r.json()["error"]
    assert _snapshot(proxy) == before


def test_unknown_pool_in_a_weights_body_changes_nothing(proxy):
    before = _snapshot(proxy)
    r = admin(proxy, "PUT", "/apps/web/weights", json={"stable": 10, "blue": 90})
    assert r.status_code == 404
    assert _snapshot(proxy) == before


def test_disable_and_enable_member(proxy):
    r = admin(proxy, "POST", "/apps/web/members/c1/disable")
    assert r.status_code == 200 and r.json()["admin"] == "disabled" and r.json()["drained"] is True
    res = asyncio.run(load(proxy.port("web"), total=50, concurrency=1))
    assert res.members == {"s1": 50}
    assert app_state(proxy)["alert"] is None  # an operator's choice is not a failure
    admin(proxy, "POST", "/apps/web/members/c1/enable")
    assert asyncio.run(load(proxy.port("web"), total=50, concurrency=1)).members["c1"] == 10


def test_metrics_in_prometheus_format(proxy):
    asyncio.run(load(proxy.port("web"), total=100, concurrency=2))
    text = admin(proxy, "GET", "/metrics").text
    assert '# TYPE opsconsole_proxy_member_latency_seconds histogram' in text
    assert 'opsconsole_proxy_member_requests_total{app="web",pool="canary",member="c1"} 20' in text
    assert 'opsconsole_proxy_member_requests_total{app="web",pool="stable",member="s1"} 80' in text
    assert 'opsconsole_proxy_member_latency_seconds_bucket{app="web",pool="stable",member="s1",le="+Inf"} 80' in text
    assert 'opsconsole_proxy_pool_weight{app="web",pool="canary"} 20' in text
    assert 'opsconsole_proxy_alert{app="web"} 0' in text


def test_refuses_to_start_without_a_token(tmp_path):
    nobody = Backend("x", None, 1)  # never contacted: the proxy must stop before listening
    p = start_proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [nobody], [])), token=None, wait=False)
    try:
        assert p.proc.wait(20) == 2
    finally:
        p.stop()
    assert "no admin token" in p.log_text() and "OPSC_TEST_PROXY_TOKEN" in p.log_text()


def test_admin_on_a_unix_socket_only_we_can_open(procs, tmp_path):
    s = procs.backend("s1")
    sock = tmp_path / "admin.sock"
    text = proxy_config_text(tmp_path, app_block("web", [s], [])).replace("listen: 127.0.0.1:0\n    token_env",
                                                                          f"listen: unix:{sock}\n    token_env")
    p = procs.proxy(tmp_path, text)
    assert p.admin_url == f"unix:{sock}"
    assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=5) as c:
        assert c.get("http://proxy/state").status_code == 401
        r = c.get("http://proxy/state", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "web" in r.json()["apps"]


def _parse(tmp_path, text: str):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(text))
    top = MappingReader(load_yaml(f), f, "", 1)
    return parse_proxy_section(top.mapping("proxy"), {"web": object()})


@pytest.mark.parametrize("snippet,needle", [
    ("admin: {listen: '0.0.0.0:9000', token_env: T}", "loopback or a unix socket only"),
    ("admin: {listen: '10.1.2.3:9000', token_env: T}", "loopback or a unix socket only"),
    ("admin: {listen: 127.0.0.1:0}", "needs a token"),
    # The token pasted where its variable's name goes: refused at load, and never echoed back.
    ("admin: {listen: 127.0.0.1:0, token_env: BWmY-pasted-token-value}", "must name an environment variable"),
])
def test_config_refuses_an_exposed_or_unguarded_admin_api(tmp_path, snippet, needle):
    with pytest.raises(SourceError) as exc:
        _parse(tmp_path, f"""\
            proxy:
              {snippet}
              apps:
                web: {{pools: {{stable: {{group: web}}}}}}
            """)
    assert needle in str(exc.value) and "p.yaml:" in str(exc.value)
    assert "pasted" not in str(exc.value)


@pytest.mark.parametrize("apps,needle", [
    ("web: {pools: {stable: {group: nope}}}", "no host group named 'nope'"),
    ("web: {pools: {stable: {group: web, weight: 101}}}", "at most 100"),
    ("web: {pools: {blue: {group: web}}}", "unknown pool"),
    ("web: {pools: {canary: {group: web}}}", "a `stable` pool is required"),
    ("web: {split: random, pools: {stable: {group: web}}}", "must be one of request, sticky"),
    ("web: {retry: {methods: [POST]}, pools: {stable: {group: web}}}", "only idempotent"),
    ("web: {helth: {}, pools: {stable: {group: web}}}", "unknown key"),
    ("web: {pools: {stable: {members: [{name: a, port: 70000}]}}}", "out of range"),
])
def test_config_errors_name_the_key(tmp_path, apps, needle):
    with pytest.raises(SourceError) as exc:
        _parse(tmp_path, f"""\
            proxy:
              admin: {{token_env: T}}
              apps:
                {apps}
            """)
    assert needle in str(exc.value), str(exc.value)
    assert "proxy.apps.web" in str(exc.value)


def test_example_block_parses(tmp_path):
    from opsconsole.proxy.config import EXAMPLE_YAML

    text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in EXAMPLE_YAML.splitlines()
                     if not line.startswith("# proxy: the"))
    f = tmp_path / "ex.yaml"
    f.write_text(text)
    top = MappingReader(load_yaml(f), f, "", 1)
    cfg = parse_proxy_section(top.mapping("proxy"), {"checkbox": object()})
    fe = cfg.frontends["checkbox"]
    assert fe.pools["stable"].group == "checkbox" and fe.pools["canary"].members[0].port == 9100
    assert cfg.haproxy.nbthread == 1 and fe.health.rise == 2


def test_cli_module_entry_reports_bad_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("groups: {web: {provider: static, hosts: [a]}}\nproxy: {admin: {token_env: T}, apps: {web: {pools: {stable: {group: nope}}}}}\n")
    r = subprocess.run([PY, "-m", "opsconsole.proxy", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no host group named 'nope'" in r.stderr


def test_the_proxy_process_imports_neither_the_engine_nor_textual(tmp_path):
    s = tmp_path / "x.py"
    s.write_text("import sys\nimport opsconsole.proxy.runtime, opsconsole.proxy.__main__, opsconsole.traffic.haproxy\n"
                 "bad = [m for m in sys.modules if m.startswith(('opsconsole.engine', 'opsconsole.ui', 'textual'))]\n"
                 "print(bad)\n")
    r = subprocess.run([PY, str(s)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _admin_port(p) -> int:
    return int(p.admin_url.rsplit(":", 1)[1])


@pytest.mark.parametrize("member, needle", [
    ("0.0.0.0:80", "unspecified"),
    ("169.254.169.254:80", "link-local"),  # cloud metadata
    ("[::ffff:169.254.169.254]:80", "link-local"),
    ("[fe80::1]:80", "link-local"),
    ("224.0.0.1:80", "multicast"),
    ("255.255.255.255:80", "broadcast"),
    ("ADMIN", "own listener"),  # the admin API itself: a frontend request with the token would read /state
    ("FRONTEND", "own listener"),  # its own frontend: a loop
    ("MAPPED_FRONTEND", "own listener"),  # the same, as an IPv4-mapped IPv6 address
])
def test_a_member_set_pointing_nowhere_a_backend_lives_is_refused_and_changes_nothing(proxy, member, needle):
    member = {"ADMIN": f"127.0.0.1:{_admin_port(proxy)}", "FRONTEND": f"127.0.0.1:{proxy.port('web')}",
              "MAPPED_FRONTEND": f"[::ffff:127.0.0.1]:{proxy.port('web')}"}.get(member, member)
    before = _snapshot(proxy)
    r = admin(proxy, "PUT", "/apps/web/pools/canary/members", json={"members": [member]})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"] and "members[0]" in r.json()["error"], r.text
    assert _snapshot(proxy) == before


def test_an_unnamed_ipv6_member_is_taken(proxy):
    """Its default name used to start with "[", which the name rule refused, and with it the whole set."""
    r = admin(proxy, "PUT", "/apps/web/pools/canary/members", json={"members": ["[2001:db8::1]:8080"]})
    assert r.status_code == 200, r.text
    (member,) = r.json()["pools"]["canary"]["members"]
    assert member["name"] == "2001:db8::1:8080"
