"""Helpers for the proxy and traffic tests (no tests here): real backends, a real proxy process, a bounded load generator.

Run as a script it is a backend: `python tests/test_proxy_support.py NAME [KEEPALIVE_SECONDS]`
prints its port and answers every request with its name in `X-Member`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httptools

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
PY = sys.executable


# -- the backend (runs in a subprocess so a test can SIGKILL it) --------------------------------------

class _BackendProtocol(asyncio.Protocol):
    def __init__(self, name: bytes, keepalive: float) -> None:
        self.name = name
        self.keepalive = keepalive
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = 0
        self.timer: asyncio.TimerHandle | None = None
        self.pending = 0

    def connection_made(self, transport):
        self.transport = transport
        self._arm()

    def _arm(self):
        if self.timer:
            self.timer.cancel()
        # Backends close idle keep-alive connections; the proxy must close its own first.
        self.timer = asyncio.get_running_loop().call_later(self.keepalive, self.transport.close)

    def data_received(self, data):
        self._arm()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self):
        self.url = b""
        self.body = 0

    def on_url(self, url):
        self.url += url

    def on_body(self, body):
        self.body += len(body)

    def on_message_complete(self):
        url = httptools.parse_url(self.url)
        path = url.path
        query = dict(p.split(b"=", 1) for p in (url.query or b"").split(b"&") if b"=" in p)
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        delay = float(query.get(b"ms", b"0")) / 1000
        if b"slow" in query and query[b"slow"] != self.name:
            delay = 0.0  # /x?ms=N&slow=NAME: only that member is slow
        if path == b"/die" and query.get(b"who") == self.name:
            os._exit(0)  # a member dying with a request on the wire: no answer, connection gone
        if path == b"/health":
            body = b"ok\n"
        else:
            body = json.dumps({"member": self.name.decode(), "method": method.decode(), "body": self.body,
                               "path": self.url.decode()}).encode()
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Member: %b\r\nContent-Length: %d\r\n%b\r\n"
                % (self.name, len(body), b"" if keep else b"Connection: close\r\n"))
        payload = head + (b"" if method == b"HEAD" else body)
        if path == b"/chunked":
            payload = (b"HTTP/1.1 200 OK\r\nX-Member: %b\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" % self.name)

        def send():
            if not self.transport.is_closing():
                self.transport.write(payload)
                if not keep:
                    self.transport.close()
        if delay:
            asyncio.get_running_loop().call_later(delay, send)
        else:
            send()

    def connection_lost(self, exc):
        if self.timer:
            self.timer.cancel()


async def _serve_backend(name: str, keepalive: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _BackendProtocol(name.encode(), keepalive), "127.0.0.1", port,
                                      reuse_address=True, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


@dataclass
class Backend:
    name: str
    proc: subprocess.Popen
    port: int

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


def start_backend(name: str, keepalive: float = 5.0, port: int = 0) -> Backend:
    proc = subprocess.Popen([PY, str(HERE), name, str(keepalive), str(port)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"backend {name} did not start")
    return Backend(name, proc, int(line))


# -- the proxy process ----------------------------------------------------------------------------------

TOKEN = "test-token-0123456789"


def proxy_config_text(tmp: Path, apps: str, *, extra: str = "", tuned: bool = True) -> str:
    """A full opsconsole config: the proxy reads its section from the same file the console reads.

    Every app the proxy serves is also declared under `apps:` (the config loader insists).
    With `tuned=False` no timeout is set: the proxy's defaults are what is judged.
    """
    import re

    names = re.findall(r"^([A-Za-z][\w.-]*):", textwrap.dedent(apps), re.M)
    playbook = tmp / "deploy.yml"  # our own: the proxy tests must not depend on the shipped playbooks
    playbook.write_text("- hosts: web\n  tasks: []\n")
    app_lines = "".join(f"  {n}: {{group: web, repo: {tmp / 'repo'}, deploy: {{playbook: {playbook}}}}}\n" for n in names)
    return textwrap.dedent(f"""\
        project: proxytest
        state_dir: {tmp / 'state'}
        groups:
          web:
            provider: static
            hosts: [{{name: web-1, address: 127.0.0.1, port: 1}}]
        """) + "apps:\n" + app_lines + textwrap.dedent("""\
        proxy:
          admin:
            listen: 127.0.0.1:0
            token_env: OPSC_TEST_PROXY_TOKEN
        """) + (textwrap.indent(TUNED, "  ") if tuned else "") + textwrap.indent(extra, "  ") \
        + "  apps:\n" + textwrap.indent(textwrap.dedent(apps), "    ")


# Short timeouts so failures show within a test's time; `tuned=False` keeps every proxy default instead.
TUNED = "upstream_idle: 1s\nconnect_timeout: 500ms\nresponse_timeout: 5s\ndrain_timeout: 10s\n"


def app_block(name: str, stable: list[Backend], canary: list[Backend], *, stable_weight: int = 100,
              canary_weight: int = 0, split: str = "request", auto_restore: bool = False, interval: str = "200ms") -> str:
    # Checks every `interval`, but a check may take up to 1 s: on a busy CI worker a backend (or the proxy's
    # own loop) can stall a few hundred ms, and two such stalls must not mark a live member down and move the
    # split under a test that counts requests. A dead member is still seen at once: its connect is refused.
    def members(bs: list[Backend]) -> str:
        return "[" + ", ".join(f"{{name: {b.name}, address: 127.0.0.1, port: {b.port}}}" for b in bs) + "]"
    canary_part = f"""
    canary:
      weight: {canary_weight}
      members: {members(canary)}""" if canary else ""
    return textwrap.dedent(f"""\
        {name}:
          listen: 127.0.0.1:0
          split: {split}
          auto_restore: {str(auto_restore).lower()}
          health: {{interval: {interval}, timeout: 1s, fall: 2, rise: 2}}
          pools:
            stable:
              weight: {stable_weight}
              members: {members(stable)}""") + textwrap.indent(textwrap.dedent(canary_part), "    ") + "\n"


@dataclass
class ProxyProc:
    proc: subprocess.Popen
    runtime: dict
    config: Path
    log: Path

    @property
    def admin_url(self) -> str:
        return self.runtime["admin"]

    def port(self, app: str) -> int:
        return self.runtime["frontends"][app]["port"]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def start_proxy(tmp: Path, config_text: str, *, token: str | None = TOKEN, wait: bool = True) -> ProxyProc:
    cfg = tmp / "opsconsole.yaml"
    cfg.write_text(config_text)
    runtime = tmp / "proxy-runtime.json"
    if runtime.exists():
        runtime.unlink()
    env = {k: v for k, v in os.environ.items() if k != "OPSC_TEST_PROXY_TOKEN"}
    if token is not None:
        env["OPSC_TEST_PROXY_TOKEN"] = token
    log = tmp / "proxy.log"
    proc = subprocess.Popen([PY, "-m", "opsconsole.proxy", "--config", str(cfg), "--runtime-file", str(runtime)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    pp = ProxyProc(proc, {}, cfg, log)
    if not wait:
        return pp
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if runtime.exists():
            pp.runtime = json.loads(runtime.read_text())
            return pp
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}: {pp.log_text()}")
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("proxy did not start in 15s: " + pp.log_text())


# -- a real HAProxy ---------------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HaproxyProc:
    proc: subprocess.Popen
    cfg: Path
    socket: str
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_haproxy(cfg: Path, sock: str, port: int, log: Path, *, replace: "HaproxyProc | None" = None) -> HaproxyProc:
    """HAProxy in the foreground; with `replace`, a reload the way systemd does it (-sf: old one finishes and goes)."""
    args = ["haproxy", "-db", "-f", str(cfg)]
    if replace is not None:
        args += ["-sf", str(replace.proc.pid)]
    if replace is None and os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "a"))
    hp = HaproxyProc(proc, cfg, sock, port, log)
    deadline = time.monotonic() + 10
    import socket as _s

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited {proc.returncode}: {log.read_text()}")
        try:
            c = _s.socket(_s.AF_UNIX)
            c.connect(sock)
            c.sendall(b"show info\n")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            c.close()
            if f"Pid: {proc.pid}".encode() in data:
                return hp
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("haproxy did not come up: " + log.read_text())


# -- a bounded load generator (keep-alive, real sockets) ------------------------------------------------

@dataclass
class LoadResult:
    members: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    # (time the request was sent, member) per ok response. The send time, not the arrival: a response already
    # on its way when a member was drained or killed may be read late by a busy client, which is no fault.
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(v for k, v in self.statuses.items() if k != 200)


class _Resp:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.done = False
        self.body = b""

    def on_header(self, n, v):
        self.headers[n.lower()] = v

    def on_body(self, b):
        self.body += b

    def on_message_complete(self):
        self.done = True


async def load(port: int, *, total: int, concurrency: int = 8, seconds: float = 30.0, path: str = "/",
               method: str = "GET", cookie: bool = False, stop: asyncio.Event | None = None,
               into: LoadResult | None = None) -> LoadResult:
    """Send up to `total` requests over `concurrency` keep-alive connections, for at most `seconds`.
    With `into`, the result fills that object as answers come (a test can watch it while the load runs)."""
    result = into if into is not None else LoadResult()
    left = [total]
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()

    async def worker() -> None:
        reader = writer = None
        jar = b""
        while left[0] > 0 and time.monotonic() < deadline and not (stop and stop.is_set()):
            left[0] -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                body = b"x" * 10 if method == "POST" else b""
                req = (f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n".encode()
                       + (b"Cookie: " + jar + b"\r\n" if jar else b"") + b"\r\n" + body)
                sent = time.monotonic() - t0
                writer.write(req)
                resp = _Resp()
                parser = httptools.HttpResponseParser(resp)
                while not resp.done:
                    data = await asyncio.wait_for(reader.read(65536), 10)
                    if not data:
                        raise ConnectionError("connection closed mid-response")
                    parser.feed_data(data)
                status = parser.get_status_code()
                result.statuses[status] += 1
                if status == 200:
                    member = resp.headers.get(b"x-member", b"?").decode()
                    result.members[member] += 1
                    result.timeline.append((sent, member))
                if cookie and b"set-cookie" in resp.headers:
                    jar = resp.headers[b"set-cookie"].split(b";")[0]
                if not parser.should_keep_alive():
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.TimeoutError, httptools.HttpParserError) as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


if __name__ == "__main__":
    asyncio.run(_serve_backend(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 5.0,
                               int(sys.argv[3]) if len(sys.argv) > 3 else 0))
