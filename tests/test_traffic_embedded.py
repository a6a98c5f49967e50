"""The embedded driver's own edges: unix socket, refused token, proxy gone, runtime file; histogram maths."""

from __future__ import annotations

import asyncio
import os

import pytest

from opsconsole.traffic.base import LatencyHistogram, TrafficError, TrafficNotFound, TrafficUnavailable
from opsconsole.traffic.drivers import open_driver
from opsconsole.traffic.embedded import EmbeddedDriver
from opsconsole.proxy.__main__ import load_proxy_config
from opsconsole.yamlsource import SourceError
from test_proxy import procs  # noqa: F401  (fixture)
from test_proxy_support import TOKEN, app_block, load, proxy_config_text
from conftest import write_secret


def test_histogram_window_and_quantile():
    bounds = (0.001, 0.01, 0.1)
    old = LatencyHistogram(bounds, (10, 0, 0, 0), 0.005)
    new = LatencyHistogram(bounds, (10, 90, 8, 2), 1.0)
    window = new.minus(old)
    assert window.counts == (0, 90, 8, 2) and window.count == 100
    assert window.quantile(0.5) == 0.01
    assert window.quantile(0.95) == 0.1
    assert window.quantile(0.99) == float("inf")
    assert LatencyHistogram(bounds, (0, 0, 0, 0)).quantile(0.95) is None


def test_driver_over_a_unix_socket_reads_counters_per_pool(procs, tmp_path):
    s, c = procs.backend("s1"), procs.backend("c1")
    sock = tmp_path / "admin.sock"
    text = proxy_config_text(tmp_path, app_block("web", [s], [c], stable_weight=50, canary_weight=50)).replace(
        "listen: 127.0.0.1:0\n    token_env", f"listen: unix:{sock}\n    token_env")
    p = procs.proxy(tmp_path, text)
    cfg, _ = load_proxy_config(p.config)

    async def scenario():
        async with open_driver(cfg, runtime_file=tmp_path / "proxy-runtime.json", token=TOKEN) as d:
            before = await d.app("web")
            r = await load(p.port("web"), total=200, concurrency=2)
            after = await d.app("web")
            return before, r, after

    before, r, after = asyncio.run(scenario())
    assert r.failed == 0
    window = after.pools["canary"].counters.minus(before.pools["canary"].counters)
    assert window.requests == r.members["c1"] == 100
    assert window.error_rate == 0.0
    assert window.p95() is not None and window.p95() < 1.0
    assert after.split == "request" and after.canary_percent == 50.0


def test_refused_token_and_unknown_names_raise_with_a_message(procs, tmp_path):
    s = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))

    async def scenario():
        async with EmbeddedDriver(p.admin_url, "not-the-token") as d:
            with pytest.raises(TrafficError, match="refused our token"):
                await d.state()
        async with EmbeddedDriver(p.admin_url, TOKEN) as d:
            with pytest.raises(TrafficNotFound, match="no app 'nope'"):
                await d.app("nope")
            with pytest.raises(TrafficNotFound, match="no member 'ghost'"):
                await d.drain("web", "ghost")

    asyncio.run(scenario())


def test_proxy_gone_is_unavailable_not_a_crash(procs, tmp_path):
    s = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))
    url = p.admin_url
    p.stop()

    async def scenario():
        async with EmbeddedDriver(url, TOKEN, timeout=2) as d:
            with pytest.raises(TrafficUnavailable, match="cannot reach the proxy admin API"):
                await d.state()

    asyncio.run(scenario())
    # The proxy removes its runtime file on a clean stop: the next console is told it is not running.
    with pytest.raises(TrafficUnavailable, match="is `opsconsole proxy` running"):
        EmbeddedDriver.from_runtime_file(tmp_path / "proxy-runtime.json", TOKEN)


def test_token_from_a_file(procs, tmp_path):
    s = procs.backend("s1")
    token_file = tmp_path / "proxy.token"
    write_secret(token_file, "file-token-42\n")
    text = proxy_config_text(tmp_path, app_block("web", [s], [])).replace(
        "token_env: OPSC_TEST_PROXY_TOKEN", f"token_file: {token_file}")
    p = procs.proxy(tmp_path, text, token=None)
    cfg, _ = load_proxy_config(p.config)

    async def scenario():
        async with open_driver(cfg, runtime_file=tmp_path / "proxy-runtime.json") as d:
            return await d.app("web")

    assert asyncio.run(scenario()).pools["stable"].members[0].name == "s1"


def test_a_token_file_open_to_others_is_refused_by_the_proxy_and_the_console(procs, tmp_path):
    """Anyone who can read the token can steer the traffic: the file must be private, as a `secrets:` file."""
    import subprocess
    import sys
    s = procs.backend("s1")
    token_file = tmp_path / "proxy.token"
    token_file.write_text("file-token-42\n")
    token_file.chmod(0o644)
    text = proxy_config_text(tmp_path, app_block("web", [s], [])).replace(
        "token_env: OPSC_TEST_PROXY_TOKEN", f"token_file: {token_file}")
    config = tmp_path / "proxy.yaml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "OPSC_TEST_PROXY_TOKEN"}
    run = subprocess.run([sys.executable, "-m", "opsconsole", "proxy", "--config", str(config)],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode != 0
    assert f"{token_file} is open to others (mode 0644)" in run.stderr and "chmod 600" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "proxy-runtime.json").exists()  # it never started
    with pytest.raises(SourceError, match=r"admin\.token_file: .* is open to others"):  # as the config is read
        load_proxy_config(config)
    token_file.chmod(0o600)
    cfg, _ = load_proxy_config(config)
    token_file.chmod(0o640)  # opened up after the config was read: refused where the token is read
    with pytest.raises(ValueError, match="open to others"):
        cfg.read_token()


class RogueListener:
    """Another program on the loopback port a stale runtime file names: it records what reaches it."""

    def __init__(self) -> None:
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.received += conn.recv(65536)
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}')
                except OSError:
                    pass


@pytest.mark.parametrize("runner", ["dead", "alive"])
def test_a_stale_runtime_file_never_sends_the_token_to_whoever_holds_its_port(tmp_path, runner):
    # The proxy died (or its pid now names another process) and another program listens on its admin port.
    import json
    import subprocess
    import sys
    rogue = RogueListener()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        if runner == "dead":
            proc.kill()
            proc.wait()
        runtime = tmp_path / "proxy-runtime.json"
        runtime.write_text(json.dumps({"pid": proc.pid, "admin": f"http://127.0.0.1:{rogue.port}", "frontends": {}}))
        want = "is not running" if runner == "dead" else f"port {rogue.port} is held by another process"
        with pytest.raises(TrafficUnavailable, match=f"not sending the admin token.*stale.*{want}"):

            async def scenario():
                async with EmbeddedDriver.from_runtime_file(runtime, TOKEN, timeout=2) as d:
                    await d.state()

            asyncio.run(scenario())
        assert TOKEN.encode() not in rogue.received and rogue.received == b""
    finally:
        proc.kill()
        proc.wait()
        rogue.sock.close()


def test_the_token_stops_when_the_checked_proxy_dies(procs, tmp_path):
    s = procs.backend("s1")
    p = procs.proxy(tmp_path, proxy_config_text(tmp_path, app_block("web", [s], [])))
    cfg, _ = load_proxy_config(p.config)

    async def scenario():
        async with open_driver(cfg, runtime_file=tmp_path / "proxy-runtime.json", token=TOKEN) as d:
            assert (await d.app("web")).pools["stable"].members[0].name == "s1"
            import os
            import signal
            import json
            os.kill(json.loads((tmp_path / "proxy-runtime.json").read_text())["pid"], signal.SIGKILL)
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    await d.app("web")
                except TrafficUnavailable as exc:
                    if "not sending the admin token" in str(exc):
                        return str(exc)
                    # "cannot reach": the kill landed between the owner check and the request; the next
                    # call's check must see it.
                assert asyncio.get_running_loop().time() < deadline, "still talking to a killed proxy"
                await asyncio.sleep(0.05)

    said = asyncio.run(scenario())
    assert "is gone" in said or "nothing listens" in said, said
