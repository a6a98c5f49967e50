"""The demo app's keep-alive responses: one write each, on a TCP_NODELAY socket.

Head and body written apart made every keep-alive request wait ~40 ms (Nagle's algorithm holding the
body for the client's delayed ACK of the head). These tests time nothing: they count the writes the
handler makes on a real TCP connection and read the socket option it set.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "opsconsole" / "demo" / "app" / "app.py"

pytestmark = pytest.mark.timeout(30)


def _load_app():
    spec = importlib.util.spec_from_file_location("opsconsole_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _RecordingSocket:
    """The accepted socket, with every sendall() kept: one entry per write the handler makes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data, *args):
        self.writes.append(bytes(data))
        return self._sock.sendall(data, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _serve_one_connection(requests: bytes):
    """Run the app's Handler on one accepted TCP connection; return (writes, TCP_NODELAY, bytes the client got)."""
    app = _load_app()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        conn, addr = listener.accept()
    recorder = _RecordingSocket(conn)
    seen = {}

    class Probe(app.Handler):
        def setup(self):
            super().setup()  # StreamRequestHandler.setup sets TCP_NODELAY when disable_nagle_algorithm is on
            seen["nodelay"] = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    t = threading.Thread(target=Probe, args=(recorder, addr, None), daemon=True)
    t.start()
    with client:
        client.sendall(requests)
        t.join(10)  # the last request says Connection: close, so the handler returns
        assert not t.is_alive()
        conn.close()  # what the server's shutdown_request() would do
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return recorder.writes, seen["nodelay"], received


def _split_response(data: bytes) -> tuple[bytes, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    assert len(body) == length, data
    return head, json.loads(body)


def test_each_keep_alive_response_is_one_write_on_a_nodelay_socket():
    requests = (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    writes, nodelay, received = _serve_one_connection(requests)
    assert nodelay != 0, "accepted connections must have TCP_NODELAY set"
    # Three requests, three writes, each a whole response: head and body together.
    assert len(writes) == 3, [w[:60] for w in writes]
    heads = []
    for w in writes:
        head, body = _split_response(w)
        heads.append(head)
        assert body["version"]
    assert all(h.startswith(b"HTTP/1.1 200 ") for h in heads)
    assert received == b"".join(writes)
