"""A real `moto_server` process on loopback for the EC2 tests (the HTTP API, not the in-process mock).

The server binds port 0 and we read the port it got from its log line, so no
port is guessed and two test runs never collide. AMI, instance-type and
key-pair validation are switched on so moto refuses what AWS would refuse,
and no default AMIs are loaded: an AMI exists only when a test registers it.

Tests get dummy credentials through the environment, with the shared config
and credential files pointed at /dev/null: a developer's real AWS profile can
never be picked up by a test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
SERVER_ENV = {
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    # Only AMIs a test registers exist: loading moto's ~1300 default images costs seconds after every reset.
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}
_RUNNING_ON = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


@dataclass
class MotoServer:
    proc: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget every resource (between tests) and switch authentication back off."""
        self.require_auth(False)
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def require_auth(self, on: bool) -> None:
        """With auth on, moto checks each request's signature against IAM: unknown keys are refused.

        (The server-side counterpart of INITIAL_NO_AUTH_ACTION_COUNT: 0 = from the next request on.)
        """
        httpx.post(f"{self.url}/moto-api/reset-auth", content=b"0" if on else b"inf", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_moto_server(timeout: float = 30.0) -> MotoServer:
    env = {**os.environ, **DUMMY_ENV, **SERVER_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    log: list[str] = []
    deadline = time.monotonic() + timeout
    port = None
    while port is None:
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            raise RuntimeError(f"moto_server exited ({proc.returncode}) before serving:\n{''.join(log)}")
        log.append(line)
        match = _RUNNING_ON.search(line)
        if match:
            port = int(match.group(1))
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"moto_server did not start within {timeout}s:\n{''.join(log)}")
    server = MotoServer(proc, port, log)
    # Keep draining its output so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: [log.append(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    for _ in range(100):
        try:
            httpx.get(f"{server.url}/moto-api/", timeout=2)
            return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("moto_server does not answer")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A clean moto server and dummy credentials in this process's environment."""
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in DUMMY_ENV.items():
        monkeypatch.setenv(key, value)
    moto_server.reset()
    yield moto_server
    moto_server.reset()


THROTTLED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                  b'<Message>Request limit exceeded.</Message></Error></Errors><RequestID>throttle</RequestID></Response>')


class ThrottlingProxy:
    """An HTTP proxy in front of moto_server that answers RequestLimitExceeded (HTTP 503, as EC2 does)
    to the first `throttle_first` requests, and records the Action of every request it sees."""

    def __init__(self, upstream: str, throttle_first: int) -> None:
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream = upstream
        self.throttle_first = throttle_first
        self.throttled: list[str] = []  # the actions answered with RequestLimitExceeded
        self.forwarded: list[tuple[str, bool]] = []  # (action, had a NextToken) of each forwarded request
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: the test reads the records above
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = urllib.parse.parse_qs(body.decode())
                action = form.get("Action", ["?"])[0]
                with proxy._lock:
                    throttle = len(proxy.throttled) < proxy.throttle_first
                    if throttle:
                        proxy.throttled.append(action)
                    else:
                        proxy.forwarded.append((action, "NextToken" in form))
                if throttle:
                    self._answer(503, {"Content-Type": "text/xml"}, THROTTLED_BODY)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=60)
                keep = {k: v for k, v in answer.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
                self._answer(answer.status_code, keep, answer.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "ThrottlingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
