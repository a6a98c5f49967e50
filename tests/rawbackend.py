"""Helpers for the hostile-traffic and tunnel tests of the proxy (no tests here).

- `RecordingBackend`: an HTTP/1.1 server in a thread of the test process that keeps every raw byte it
  receives, per connection, and answers each request it parses with a small keep-alive 200 (so a test
  can say exactly what reached the member: one request or two, which header lines, no bytes at all).
  A few paths misbehave on purpose, the way real members do (see `_RecProtocol`).
- `WsBackend`: a `websockets` echo server in a thread, that also answers `GET /health`.
- `read_responses`: a raw-socket client reader that parses responses until enough arrived or the
  proxy closed the connection, with a deadline.
- `rss_kib`: the resident memory of a process, from /proc.
- `make_ca` / `make_cert`: a throwaway CA and server certificates for 127.0.0.1 (the `cryptography`
  package, which asyncssh already needs).
- `app_yaml`: an app block for the proxy config with the knobs these tests need (health path, retry,
  TLS, extra keys), in the layout `proxy_config_text` expects.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httptools

# The path the proxy's active checks use against a RecordingBackend: requests to it are not "traffic".
HEALTH_PATH = "/__hc"
# What `/headbody` sends as the body of its answer to HEAD: a whole response, as if to the next request.
FORGED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nforged!"
# The half body `/eofrst` sends before its reset.
EOF_RST_BODY = b"first half of the file "


# -- the recording backend -------------------------------------------------------------------------------

@dataclass
class SeenRequest:
    method: str
    url: str
    version: str
    headers: list[tuple[str, str]]  # as received: (name, value), names in the case they came in
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class SeenConnection:
    raw: bytearray = field(default_factory=bytearray)
    requests: list[SeenRequest] = field(default_factory=list)
    parse_error: str | None = None
    closed: bool = False

    @property
    def is_health_check(self) -> bool:
        return bytes(self.raw).startswith(f"GET {HEALTH_PATH} ".encode())


class _RecProtocol(asyncio.Protocol):
    """One connection of a RecordingBackend. Besides the plain keep-alive 200, these paths misbehave:

    - `/slow?ms=N`: the 200 comes N ms late.
    - `/garbage`: not HTTP at all, then the connection ends.
    - `/cut`: promises 1000 bytes, sends 10, closes.
    - `/early`: the 200 (keep-alive) goes out as soon as the head is in, before any of the body; the body
      is still read (and parsed as this request's body) after it.
    - `/stall?ms=N`: once the head is in, nothing more is read (the upload stalls), and after N ms
      (default 500) the connection is reset.
    - `/headbody?ms=N`: answered with a body even to HEAD (an app doing HEAD as GET), N ms late; the body
      is itself an HTTP response (`FORGED`), so a proxy that reuses the connection relays it to the next.
    - `/eofrst?ms=N`: a 200 framed by the connection's end (no Content-Length, no chunking), half a body,
      then after N ms (default 100) a reset instead of the end: the member crashed mid-answer.
    - `/big?n=N`: a 200 with an N-byte body.
    - `/canned?as=NAME`: the bytes `backend.canned[NAME]`, as they are (a test writes the answer a proxy
      must not pass on); the connection stays open.
    """

    def __init__(self, backend: "RecordingBackend") -> None:
        self.backend = backend
        self.rec = SeenConnection()
        self.parser = httptools.HttpRequestParser(self)
        self.cur: SeenRequest | None = None
        self.header_name = b""
        self.slots: list[bytes | None] = []  # responses in request order; None = not ready yet (delayed)
        self.sent = 0
        self.close_after: int | None = None
        self.answered_early = False  # the current request was acted on at its head (/early, /stall)

    def connection_made(self, transport):
        self.transport = transport
        with self.backend.lock:
            self.backend.connections.append(self.rec)

    def data_received(self, data):
        with self.backend.lock:
            self.rec.raw += data
        if self.rec.parse_error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            with self.backend.lock:
                self.rec.parse_error = f"{type(exc).__name__}: {exc}"
            self.transport.close()

    def connection_lost(self, exc):
        with self.backend.lock:
            self.rec.closed = True

    # httptools callbacks
    def on_message_begin(self):
        self.cur = SeenRequest("", "", "", [])
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    def on_url(self, url):
        self._url += url

    def on_header(self, name, value):
        self._headers.append((name, value))

    def on_headers_complete(self):
        path, _, query = self._url.decode("latin-1").partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/early":
            # Answer at once, keep-alive, body or no body: what many apps do with a request they refuse.
            self.answered_early = True
            idx = len(self.slots)
            body = f"path={self._url.decode('latin-1')} n={idx}\n".encode()
            self.slots.append(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
                              % (len(body), body))
            self._flush()
        elif path == "/stall":
            # Stop reading the upload; then die with a reset (unread bytes, SO_LINGER 0).
            self.answered_early = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(float(params.get("ms", "500")) / 1000, self._reset)

    def on_body(self, body):
        self._body += body

    def on_message_complete(self):
        req = self.cur
        req.method = self.parser.get_method().decode()
        req.url = self._url.decode("latin-1")
        req.version = self.parser.get_http_version()
        req.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers]
        req.body = bytes(self._body)
        with self.backend.lock:
            self.rec.requests.append(req)
        if self.answered_early:
            self.answered_early = False
            return
        self._answer(req, self.parser.should_keep_alive())

    def _reset(self) -> None:
        """Close with a TCP reset, not a FIN: a member that crashed."""
        if self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _answer(self, req: SeenRequest, keep: bool) -> None:
        idx = len(self.slots)
        self.slots.append(None)
        query = dict(p.split("=", 1) for p in (req.url.split("?", 1) + [""])[1].split("&") if "=" in p)
        if req.path == "/garbage":
            # Not HTTP at all, then the connection ends.
            self.slots[idx] = b"\x00\x01 this is not HTTP \xff\xfe\r\n\r\n"
            self.close_after = idx
            self._flush()
            return
        if req.path == "/cut":
            # A response that promises 1000 bytes and sends 10: the member dies mid-body.
            self.slots[idx] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
            self.close_after = idx
            self._flush()
            return
        if req.path == "/eofrst":
            # No framing but the connection's end; half the body; then a reset where the end would be.
            self.slots[idx] = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
                               + EOF_RST_BODY)
            self._flush()
            asyncio.get_running_loop().call_later(float(query.get("ms", "100")) / 1000, self._reset)
            return
        if req.path == "/canned":
            self.slots[idx] = self.backend.canned[query["as"]]
            self._flush()
            return
        body = f"path={req.url} n={idx}\n".encode()
        if req.path == "/big":
            body = b"x" * int(query.get("n", "0"))
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
        if not keep:
            head += b"Connection: close\r\n"
            self.close_after = idx
        payload = head + b"\r\n" + (b"" if req.method == "HEAD" else body)
        if req.path == "/headbody":
            # HEAD done as GET: the body goes out anyway, and it looks like a response of its own.
            payload = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
                       % (len(FORGED), FORGED))
        delay = float(query.get("ms", "0")) / 1000 if req.path in ("/slow", "/headbody") else 0.0

        def ready():
            self.slots[idx] = payload
            self._flush()

        if delay:
            asyncio.get_running_loop().call_later(delay, ready)
        else:
            ready()

    def _flush(self) -> None:
        while self.sent < len(self.slots) and self.slots[self.sent] is not None:
            if not self.transport.is_closing():
                self.transport.write(self.slots[self.sent])
            if self.close_after == self.sent:
                self.transport.close()
            self.sent += 1


class RecordingBackend:
    """Start with `start()` (returns the port); `stop()` closes the listener and every connection.

    `rcvbuf`: the receive buffer of every accepted connection (set on the listener, so the TCP window is
    small from the start): a member that stops reading then stalls an upload after a few KiB, not MiBs.
    """

    def __init__(self, name: str = "rec", rcvbuf: int | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self.rcvbuf = rcvbuf
        self.host = host
        self.canned: dict[str, bytes] = {}  # what `/canned?as=NAME` answers
        self.lock = threading.Lock()
        self.connections: list[SeenConnection] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._protocols: list[_RecProtocol] = []

    def start(self, port: int = 0) -> int:
        started = threading.Event()
        error: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            def factory():
                p = _RecProtocol(self)
                self._protocols.append(p)
                return p

            try:
                if self.rcvbuf:
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                    sock.bind((self.host, port))
                    self._server = loop.run_until_complete(loop.create_server(factory, sock=sock))
                else:
                    self._server = loop.run_until_complete(
                        loop.create_server(factory, self.host, port, reuse_address=True))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                error.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            self._server.close()
            for p in self._protocols:
                if getattr(p, "transport", None) is not None:
                    p.transport.close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"recording-backend-{self.name}", daemon=True)
        self._thread.start()
        started.wait(10)
        if error:
            raise error[0]
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- what reached us (health checks left out) ----------------------------------------------------
    def traffic(self) -> list[SeenConnection]:
        with self.lock:
            return [c for c in self.connections if not c.is_health_check]

    def requests(self) -> list[SeenRequest]:
        with self.lock:
            return [r for c in self.connections if not c.is_health_check for r in c.requests]

    def raw_bytes(self) -> bytes:
        with self.lock:
            return b"".join(bytes(c.raw) for c in self.connections if not c.is_health_check)

    def health_checks(self) -> int:
        with self.lock:
            return sum(1 for c in self.connections if c.is_health_check)


# -- a raw-socket client ----------------------------------------------------------------------------------

@dataclass
class Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    headers_done: bool = False

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


class _RespCollector:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.cur: Response | None = None
        self.parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self):
        self.cur = Response()
        self.responses.append(self.cur)

    def on_header(self, name, value):
        self.cur.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self):
        self.cur.headers_done = True
        self.cur.status = self.parser.get_status_code()

    def on_body(self, body):
        self.cur.body += body

    def on_message_complete(self):
        self.cur.complete = True


@dataclass
class Received:
    responses: list[Response]  # complete responses, in order
    partial: Response | None  # a response begun and not finished when reading stopped
    closed: bool  # the proxy closed (EOF or reset) before the deadline
    closed_after: float | None  # seconds from the call's start to the close
    raw: bytes
    parse_error: str | None = None

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def parse_responses(raw: bytes, closed: bool) -> tuple[list[Response], Response | None, str | None]:
    """Split raw response bytes into complete responses, a response begun and not finished, a parse error."""
    collector = _RespCollector()
    parser = httptools.HttpResponseParser(collector)
    collector.parser = parser
    error = None
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError as exc:
        error = f"{type(exc).__name__}: {exc}"
    complete = [r for r in collector.responses if r.complete]
    partial = next((r for r in collector.responses if not r.complete), None)
    if closed and partial is not None and partial.headers_done:
        # Framed by the close only if it had neither Content-Length nor chunking.
        if partial.header("content-length") is None and partial.header("transfer-encoding") is None:
            partial.complete = True
            complete.append(partial)
            partial = None
    return complete, partial, error


def read_responses(sock: socket.socket, *, want: int | None = None, until_close: bool = False,
                   timeout: float = 5.0) -> Received:
    """Read from `sock` until `want` complete responses arrived (with `until_close`: until the peer closed),
    or the peer closed, or `timeout` passed. A response with no framing ends at the close."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    raw = bytearray()
    closed = False
    closed_after = None
    while True:
        if want is not None and not until_close and len(parse_responses(bytes(raw), False)[0]) >= want:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(left, 0.5))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            closed = True
            closed_after = time.monotonic() - t0
            break
        raw += data
    complete, partial, error = parse_responses(bytes(raw), closed)
    return Received(complete, partial, closed, closed_after, bytes(raw), error)


def exchange(port: int, data: bytes, *, want: int | None = None, until_close: bool = False,
             timeout: float = 5.0) -> Received:
    """Connect, send `data` whole, read as `read_responses` does, close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        return read_responses(sock, want=want, until_close=until_close, timeout=timeout)
    finally:
        sock.close()


# -- process memory ----------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- certificates ------------------------------------------------------------------------------------------

def make_ca(directory: Path):
    """A throwaway CA: returns (ca_cert_path, ca_key, ca_cert)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsconsole test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_cert(directory: Path, ca_key, ca_cert, *, stem: str = "server", serial: int | None = None) -> tuple[Path, Path, int]:
    """A server certificate for 127.0.0.1 signed by the CA: (cert_path, key_path, serial)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    serial = serial or x509.random_serial_number()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path, serial


# -- config ------------------------------------------------------------------------------------------------

def app_yaml(name: str, members: list[tuple[str, int]], *, health: str | None = None, retry: str | None = None,
             tls: tuple[Path, Path] | None = None, canary: list[tuple[str, int]] | None = None,
             canary_weight: int = 0, extra: str = "") -> str:
    """An app block for `proxy_config_text`: stable members (name, port) on 127.0.0.1.

    `canary_weight`: the canary pool's weight (the stable pool keeps 100); `extra`: more app keys, one per
    line (`"max_conns: 1\nsplit: sticky\n"`)."""
    def ms(items):
        return "[" + ", ".join(f"{{name: {n}, address: 127.0.0.1, port: {p}}}" for n, p in items) + "]"
    health = health or f"{{path: {HEALTH_PATH}, interval: 1s, timeout: 500ms, fall: 2, rise: 2}}"
    lines = [f"{name}:", "  listen: 127.0.0.1:0", f"  health: {health}"]
    if retry:
        lines.append(f"  retry: {retry}")
    lines += [f"  {line}" for line in extra.splitlines() if line.strip()]
    if tls:
        lines += ["  tls:", f"    cert: {tls[0]}", f"    key: {tls[1]}"]
    lines += ["  pools:", "    stable:", "      weight: 100", f"      members: {ms(members)}"]
    if canary:
        lines += ["    canary:", f"      weight: {canary_weight}", f"      members: {ms(canary)}"]
    return textwrap.dedent("\n".join(lines)) + "\n"


# -- a WebSocket echo backend ----------------------------------------------------------------------------

class WsBackend:
    """A `websockets` echo server in a thread. `GET /health` → 200 (plain HTTP, for the proxy's checks);
    an upgrade to `/refuse?status=N` is answered N instead of 101. Counts the tunnels it holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.open = 0
        self.total = 0
        self.paths: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        from http import HTTPStatus

        from websockets.asyncio.server import serve

        started = threading.Event()
        error: list[BaseException] = []
        stop_holder: list[asyncio.Future] = []

        def process_request(connection, request):
            if request.path == "/health":
                return connection.respond(HTTPStatus.OK, "ok\n")
            if request.path.startswith("/refuse"):
                status = int(request.path.partition("status=")[2] or 426)
                return connection.respond(HTTPStatus(status), f"{self.name} refuses the upgrade\n")
            return None

        async def handler(ws):
            self.open += 1
            self.total += 1
            self.paths.append(ws.request.path)
            try:
                async for message in ws:
                    if message == "__who__":
                        await ws.send(self.name)
                    else:
                        await ws.send(message)
            except Exception:  # noqa: BLE001 - a tunnel cut by the proxy ends here
                pass
            finally:
                self.open -= 1

        async def main():
            stop = asyncio.get_running_loop().create_future()
            stop_holder.append(stop)
            try:
                server = await serve(handler, "127.0.0.1", 0, process_request=process_request,
                                     ping_interval=None, compression=None)
            except BaseException as exc:  # noqa: BLE001
                error.append(exc)
                started.set()
                return
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            async with server:
                await stop
                server.close()

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"ws-backend-{self.name}", daemon=True)
        self._thread.start()
        started.wait(10)
        if error:
            raise error[0]
        self._stop = stop_holder[0]
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
            self._thread.join(10)
