"""The health wait over HTTP and HTTPS: an http:// URL builds no CA bundle (it speaks no TLS), and an
https:// one still verifies the server's certificate, so an untrusted one fails the wait, naming why."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from opsconsole.inventory import Host
from opsconsole.playbook.modules import HEALTH, ModuleContext, run_module
from opsconsole.playbook.templating import Templar
from opsconsole.transport.local import LocalTransport
from rawbackend import make_ca, make_cert


class Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[int]:
    yield from _serve(None)


@pytest.fixture
def untrusted(tmp_path: Path) -> Iterator[int]:
    """HTTPS with a certificate from a CA nobody trusts."""
    _, ca_key, ca_cert = make_ca(tmp_path)
    cert, key, _ = make_cert(tmp_path, ca_key, ca_cert)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    yield from _serve(tls)


def _ctx(tmp_path: Path) -> ModuleContext:
    host = Host(name="web-1", group="web", address="127.0.0.1", root=str(tmp_path / "root"), transport="local")
    return ModuleContext(host=host, transport=LocalTransport(host), templar=Templar([]), playbook_dir=tmp_path,
                         on_line=lambda line, stream: None)


async def test_http_health_answers(tmp_path: Path, plain: int) -> None:
    outcome = await run_module(HEALTH, {"url": f"http://127.0.0.1:{plain}/health", "status": 200, "timeout": 5},
                               _ctx(tmp_path))
    assert not outcome.failed, outcome.message


async def test_https_health_still_verifies_the_certificate(tmp_path: Path, untrusted: int) -> None:
    outcome = await run_module(HEALTH, {"url": f"https://127.0.0.1:{untrusted}/health", "status": 200,
                                        "timeout": 0.5}, _ctx(tmp_path))
    assert outcome.failed and "CERTIFICATE_VERIFY_FAILED" in outcome.message, outcome.message
