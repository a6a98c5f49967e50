"""The client side: check requests, choose a member, queue for a free slot, relay, retry what is safe to retry.

A request is checked whole before any byte of it goes upstream: framing, Host,
target form, head size and the upgrade it asks for. What is refused is answered
in order (after the responses to requests pipelined before it) and never reaches
a member. Answers the proxy makes itself are generic; the details go to the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Callable

import httptools

from opsconsole.proxy import http1
from opsconsole.proxy.balancer import ENABLED, AppState, Member, Pool
from opsconsole.proxy.config import FrontendConfig, ProxyConfig
from opsconsole.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from opsconsole.proxy.health import HealthChecker

MAX_IDLE_PER_MEMBER = 256
MAX_REPLAY_BYTES = 64 * 1024  # a GET/HEAD body larger than this is not kept for a retry
MAX_QUEUED = 16  # pipelined requests parsed ahead before we stop reading
MAX_PIPELINE = 64  # … and a read already in hand may hold more, up to this; past it the client is refused
LINGER_SECONDS = 2.0  # after refusing a client mid-request, read and drop its input this long …
LINGER_BYTES = 1024 * 1024  # … or this much, so the answer is not lost to a reset, then close
MAX_HELD = 64 * 1024  # request bytes held while no member has them yet, before we stop reading the client
RETRY_AFTER = 1  # seconds, on a 503 the proxy answers itself
LOG_BURST = 20  # detail lines logged per frontend per second; the rest are counted
# The method names a request carries most, decoded once (the per-request path compares them as str).
_METHOD_NAMES = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class Request:
    __slots__ = ("client", "method", "url", "headers", "keep_alive", "http10", "chunked", "wire", "replayable",
                 "body_done", "conn", "member", "last", "pool", "attempts", "sent", "responded", "t_send",
                 "bucket", "set_cookie", "status", "body_kind", "done", "refusal", "upgrade", "queued_at", "held",
                 "wire_bytes", "plain")

    def __init__(self, client: "ClientConnection") -> None:
        self.client = client
        self.method = "GET"
        self.url = b""
        self.headers: list[http1.Header] = []
        self.keep_alive = True
        self.http10 = False
        self.chunked = False
        self.wire: list[bytes] = []  # head + body as we send them upstream; kept for a replay
        self.replayable = True
        self.body_done = False
        self.conn: UpstreamConnection | None = None
        self.member: Member | None = None  # holds a connection slot of this member
        self.last: Member | None = None  # the member tried last (who a failure is counted against)
        self.pool: Pool | None = None
        self.attempts = 0
        self.sent = False  # some byte went upstream
        self.responded = False  # some byte went to the client
        self.t_send = 0.0
        self.bucket: int | None = None
        self.set_cookie: bytes | None = None
        self.status = 0
        self.body_kind = "none"
        self.done = False
        self.refusal: tuple[int, str] | None = None  # answered by the proxy, never sent upstream
        self.upgrade = b""  # the protocol a tunnel is asked for (b"websocket")
        self.queued_at = 0.0
        self.held = 0  # bytes in `wire` not yet sent (counted against the client's MAX_HELD)
        self.wire_bytes = 0  # bytes in `wire`, while it is kept for a replay
        self.plain = False  # a kept-alive GET with no body, no cookie of ours to add: its answer may be relayed whole

    def add_body(self, data: bytes) -> None:
        if self.refusal is not None:
            return
        piece = http1.chunk(data) if self.chunked else data
        self._push(piece)

    def end_body(self) -> None:
        if self.chunked and self.refusal is None:
            self._push(http1.LAST_CHUNK)
        self.body_done = True
        if self.conn is not None and self.sent and not self.done:
            self.conn.body_sent(self.client.fe.now)

    def _push(self, piece: bytes) -> None:
        if self.done:
            return  # answered already (early by the member, or by us): the rest of the body goes nowhere
        if self.conn is not None and self.sent:
            self.conn.write_body(piece)
            if self.replayable:
                self.wire.append(piece)
        else:
            self.wire.append(piece)
            self.held += len(piece)
            self.client.hold(len(piece))
        if self.replayable:
            self.wire_bytes += len(piece)
            if self.wire_bytes > MAX_REPLAY_BYTES:
                self.replayable = False


class ClientConnection(asyncio.Protocol):
    def __init__(self, fe: "Frontend") -> None:
        self.fe = fe
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.cur: Request | None = None
        self.client_ip = b""
        self.trusted = False  # the peer is a trusted proxy: its X-Forwarded-For is extended, not replaced
        self.out: list[bytes] = []  # response bytes not yet written (see flush_soon)
        self.flush_queued = False  # in the frontend's to_flush list
        self.last_active = 0.0
        self.closing = False
        self.gone = False
        self.pauses: set[str] = set()  # why reading from the client is paused; resumed when empty
        self.held = 0
        self.stopped = False  # a refusal is queued: nothing more is read from this client
        self.in_head = False
        self.head_deadline = 0.0
        self.head_bytes = 0  # parsed bytes of the head so far (URL and fields)
        self.head_unparsed = 0  # bytes of chunks in which no head field completed (a field still arriving)
        self.head_raw = 0  # bytes of reads that were head from end to end, as they came
        self._callback = False
        self.upgrading: Request | None = None  # sent an upgrade request; waiting for 101
        self.pending: list[bytes] = []  # client bytes that arrived after the upgrade request
        self.tunnel: UpstreamConnection | None = None
        self.tunnel_member: Member | None = None
        self.write_paused = 0.0  # since when the client has not been reading what we write (0 = it reads)
        self.lingering = 0.0  # refusing mid-request: drop the client's input until then, then close
        self.linger_bytes = 0
        self.proto = fe.proto
        # Plain GETs may skip the parser (see _whole_gets) until a request says it is the last (in its head
        # or its trailers): the parser then refuses whatever follows it, and so must every later read.
        self.whole_gets = True
        self.client_eof = False  # the client shut its sending side: answer what it sent, then close

    # -- asyncio -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.client_ip = ip.encode()
        self.trusted = self.fe.is_trusted(ip)
        # Per connection: after a reload that turns TLS on or off, older connections are still what they were.
        self.proto = b"https" if transport.get_extra_info("sslcontext") is not None else b"http"
        now = self.fe.loop_time()
        self.last_active = now
        self.head_deadline = now + self.fe.head_timeout  # the first request's head, from accept (slowloris)
        self.fe.clients.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.fe.now
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            return
        if self.lingering:
            self.linger_bytes += len(data)
            if self.linger_bytes > LINGER_BYTES:
                self.transport.abort()
            return
        if self.upgrading is not None:
            self.pending.append(data)  # for the tunnel, once the member agrees to switch
            self.pause("upgrade")
            return
        if self.stopped:
            return
        if self.cur is None and self.whole_gets and self.fe.whole_gets:
            data = self._whole_gets(data)
            if not data:
                return
        self._callback = False
        was_in_head, before = self.in_head, self.cur
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0]:] if exc.args else b"")
            return
        except httptools.HttpParserCallbackError:
            self.fe.log_exception("client callback")  # a bug of ours: this client is dropped, nobody is blamed
            self.transport.abort()
            return
        except httptools.HttpParserError as exc:
            self._parse_error(f"unparsable request: {exc}")
            return
        if self.cur is not None and not self.stopped:
            # A field still arriving (a head's, or a trailer's) is buffered inside the parser: count whole
            # chunks in which nothing completed, so it cannot grow past the limit unseen.
            self.head_unparsed = 0 if self._callback else self.head_unparsed + len(data)
            if was_in_head and self.in_head and self.cur is before:  # (no message began in this read)
                # The whole read was head, blanks included: the parser drops the blanks around a value, and
                # a head padded with them would otherwise be read without limit (one read at most).
                self.head_raw += len(data)
            if max(self.head_bytes + self.head_unparsed, self.head_raw) > self.fe.max_head:
                if self.in_head:
                    self._refuse(self.cur, 431, f"request head over {self.fe.max_head} bytes")
                else:
                    self._parse_error(f"request trailers over {self.fe.max_head} bytes", 431)

    def _whole_gets(self, data: bytes) -> bytes:
        """Take the plain GETs at the start of `data` without the parser; what is left goes to the parser.

        Only at a message boundary (no request begun), so the parser, given nothing, stays in step. A plain
        GET is the parser path's common case (`plain_request_head`), recognised whole in one match.
        """
        queue = self.queue
        pos = 0
        while len(queue) < MAX_QUEUED:
            hit = http1.whole_plain_get(data, pos, self.fe.whole_head_max)
            if hit is None:
                break
            target, fields, pos = hit
            req = Request(self)
            req.url = target
            req.body_done = req.plain = True
            self.head_deadline = 0.0  # (the first request's deadline ran from accept; the next begins unset)
            # What plain_request_head makes of it: the lines came as it would write them.
            self._enqueue(req, b"GET %b HTTP/1.1\r\n%bX-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\n\r\n" % (
                target, fields, self.client_ip, self.proto))
            if pos == len(data):
                return b""
        return data[pos:] if pos else data

    def eof_received(self) -> bool:
        """The client shut its sending side (a half-close). Requests it sent whole are still answered, as
        HAProxy does without `abortonclose`; one cut short never can be, nor a tunnel go on: close."""
        if self.queue and self.cur is None and self.tunnel is None and self.upgrading is None and not self.lingering:
            self.client_eof = True
            return True  # keep the connection open for the answers (ignored on TLS, which cannot half-close)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.fe.clients.discard(self)
        if self.tunnel is not None:
            self.fe.tunnel_closed(self)
        for req in self.queue:
            if not req.done:
                self.fe.abort(req)
        self.queue.clear()

    def _answering(self) -> UpstreamConnection | None:
        """The member connection whose answer is being relayed to this client now, if any."""
        if self.tunnel is not None:
            return self.tunnel
        req = self.queue[0] if self.queue else None
        conn = req.conn if req is not None and not req.done else None
        return conn if conn is not None and not conn.closed and conn.req is req else None

    def pause_writing(self) -> None:
        # The client reads slower than we write: stop reading its answer (and its next requests) until it
        # catches up, so what we buffer for it stays bounded. `sweep` drops a client stuck here too long.
        # The loop's own clock, not the sweeper's: that one may be a sweep period old, and the client would
        # then be dropped that much before client_idle. (This runs once per stall, not per request.)
        self.write_paused = self.fe.loop_time()
        self.pause("writing")
        conn = self._answering()
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = 0.0
        conn = self._answering()
        if conn is not None:
            conn.resume_reading()
        self.resume("writing")
        if self.queue and not self.closing and not self.gone and self.queue[0].member is None \
                and not self.queue[0].done and self.queue[0].pool is None:
            self.fe.dispatch(self.queue[0])  # `_next` held it back while the client was not reading

    @property
    def busy(self) -> bool:
        return bool(self.queue) or self.cur is not None or self.tunnel is not None

    # -- reading: pauses for several reasons at once ---------------------------------
    def pause(self, why: str) -> None:
        if not self.pauses and not self.gone and not self.transport.is_closing():
            self.transport.pause_reading()
        self.pauses.add(why)

    def resume(self, why: str) -> None:
        if why not in self.pauses:
            return
        self.pauses.discard(why)
        if not self.pauses and not self.gone and not self.transport.is_closing():
            self.transport.resume_reading()

    def hold(self, n: int) -> None:
        """`n` more request bytes wait for a member; past MAX_HELD we stop reading (backpressure)."""
        self.held += n
        if self.held > MAX_HELD:
            self.pause("held")

    def unhold(self, req: Request) -> None:
        self.held -= req.held
        req.held = 0
        if self.pauses and self.held <= MAX_HELD:
            self.resume("held")

    # -- refusing ----------------------------------------------------------------------
    def _refuse(self, req: Request, status: int, detail: str) -> None:
        """Answer `status` in turn, after the requests before it; read nothing more; close after."""
        self.fe.note(f"{self.fe.app.name}: refused {status} to {self.client_ip.decode()}: {detail}")
        req.refusal = (status, detail)
        req.keep_alive = False
        self.stopped = True
        self.in_head = False
        self.head_deadline = 0.0
        self.pause("stopped")
        if req not in self.queue:
            self.queue.append(req)
        if self.queue[0] is req:
            self.fe.dispatch(req)  # its turn now (a request withdrawn mid-body is already at the head)

    def _parse_error(self, detail: str, status: int = 400) -> None:
        req = self.cur
        if req is not None and req in self.queue and not req.done:
            # The head was good and went upstream; its body is broken. The member must not get the rest.
            self.fe.withdraw(req)
            if req.responded:
                self.cut(req)
                return
            req.wire = []
        self._refuse(req or Request(self), status, detail)

    def body_timed_out(self) -> None:
        """The client stopped sending its body: the member waits for nothing, the client gets 408."""
        req = self.cur
        if req is not None and req in self.queue and not req.done:
            self.fe.withdraw(req)  # a client's stall is never counted against the member
            if req.responded:
                self.cut(req)
                return
            req.wire = []
        self._refuse(req or Request(self), 408, f"request body stalled for {self.fe.client_idle:g}s")

    def linger(self) -> None:
        """Close without losing the answer just written: unread input at close() would reset it away."""
        self.flush()
        self.lingering = self.fe.now + LINGER_SECONDS
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.pauses.clear()
        self.transport.resume_reading()

    def head_timed_out(self) -> None:
        self._refuse(self.cur or Request(self), 408, f"no complete request head within {self.fe.head_timeout:g}s")

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        self._callback = True
        self.cur = Request(self)
        self.in_head = True
        self.head_bytes = self.head_unparsed = self.head_raw = 0
        if not self.head_deadline:
            self.head_deadline = self.fe.now + self.fe.head_timeout

    def on_url(self, url: bytes) -> None:
        self._callback = True
        self.cur.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._callback = True
        self.head_bytes += len(name) + len(value) + 4
        if self.in_head:  # after the head these are chunked trailers: counted, never forwarded
            self.cur.headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        req = self.cur
        if self.stopped:
            return
        fe = self.fe
        self.in_head = False
        self.head_deadline = 0.0
        p = self.parser
        method = p.get_method()
        req.method = _METHOD_NAMES.get(method) or method.decode()
        req.keep_alive = keep_alive = p.should_keep_alive()
        head = None
        if keep_alive and self.head_bytes <= fe.max_head and len(self.queue) < MAX_PIPELINE:
            # Kept alive with no Connection field (plain has none) means HTTP/1.1 or later: http10 stays False.
            head = http1.plain_request_head(method, req.url, req.headers, self.client_ip, self.proto)
        if head is None:  # not the common case: every check, and the head built field by field
            req.http10 = p.get_http_version() == "1.0"
            head = self._checked_head(req, method)
            if head is None:
                return  # refused
        else:
            req.body_done = True  # no Content-Length, no Transfer-Encoding: a request without a body
            req.plain = req.method == "GET" and not fe.sticky
        if fe.sticky:
            req.bucket = self._bucket(req)
        self._enqueue(req, head)

    def _enqueue(self, req: Request, head: bytes) -> None:
        """A request checked and ready: in line for its answer, sent now if it is the first in line."""
        if req.method not in self.fe.retry_methods:
            req.replayable = False
        req.wire.append(head)
        req.held = n = len(head)
        self.held += n  # a head is at most max_head: no need to check MAX_HELD here
        queue = self.queue
        queue.append(req)
        if len(queue) == 1:
            self.fe.dispatch(req)
        elif len(queue) >= MAX_QUEUED:
            self.pause("pipeline")

    def _checked_head(self, req: Request, method: bytes) -> bytes | None:
        """The head to send upstream for any request; None when it is refused (answered in turn)."""
        fe = self.fe
        p = self.parser
        framing = http1.Framing(req.headers)
        if self.head_bytes > fe.max_head:
            problem: tuple[int, str] | None = (431, f"request head over {fe.max_head} bytes")
        else:
            problem = http1.request_problem(method, req.url, framing, http10=req.http10)
        if problem is None and len(self.queue) >= MAX_PIPELINE:
            problem = (400, f"more than {MAX_PIPELINE} requests pipelined ahead")
        if problem is None and framing.upgrade and p.should_upgrade():
            token = http1.upgrade_token(req.headers)
            offers = [v for low, _, v in req.headers if low == b"upgrade"]
            if len(offers) != 1 or b"," in offers[0]:
                # One protocol, named once: what we check must be exactly what the member is asked for.
                problem = (400, "an upgrade must name exactly one protocol")
            elif token.decode(errors="replace") not in fe.cfg.upgrades:
                problem = (501, f"upgrade to {token[:30]!r} is not enabled (upgrades: {list(self.fe.cfg.upgrades)})")
            elif method != b"GET" or req.http10 or framing.length or framing.te:
                problem = (400, "a WebSocket upgrade is an HTTP/1.1 GET without a body")
            else:
                req.upgrade = token
                req.replayable = False
        if problem is not None:
            self._refuse(req, *problem)
            return None
        req.chunked = framing.chunked
        return http1.request_head(method, req.url, req.headers, framing.drop, self.client_ip, chunked=req.chunked,
                                  trusted=self.trusted, proto=self.proto, upgrade=req.upgrade)

    def on_body(self, body: bytes) -> None:
        self._callback = True
        if not self.stopped:
            self.cur.add_body(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.whole_gets = False  # the last request (Connection: close in its head or trailers, HTTP/1.0)
        cur = self.cur
        if cur is not None and not cur.body_done:
            cur.end_body()
        self.cur = None

    def _bucket(self, req: Request) -> int:
        name = self.fe.cookie_name
        for low, _, value in req.headers:
            if low == b"cookie":
                for part in value.split(b";"):
                    k, _, v = part.strip().partition(b"=")
                    if k == name and v.isdigit() and int(v) < 100:
                        return int(v)
        bucket = random.randrange(100)
        req.set_cookie = b"Set-Cookie: %b=%d; Path=/; HttpOnly; SameSite=Lax\r\n" % (name, bucket)
        return bucket

    # -- upgrades (WebSocket) -----------------------------------------------------
    def _upgrade_requested(self, rest: bytes) -> None:
        """The parser stopped after an upgrade request: what follows belongs to the tunnel, if there is one."""
        req = self.queue[-1] if self.queue else None
        if self.stopped:
            return  # refused: answered in turn, then closed
        if req is None or not req.upgrade:
            # The parser saw an upgrade where we saw none (`Proxy-Connection: upgrade`): it reads nothing
            # more, so whatever follows could only be dropped. Answer this one, read no more, close.
            self.stopped = True
            self.pause("stopped")
            if req is not None:
                req.keep_alive = False
            elif not self.closing:
                self.closing = True
                self.flush()
                self.transport.close()
            return
        self.upgrading = req
        if rest:
            self.pending.append(rest)
        self.pause("upgrade")

    def on_switch(self, req: Request, conn: UpstreamConnection, rest: bytes) -> None:
        """The member answered 101: from now on bytes flow both ways untouched."""
        self.tunnel = conn
        self.tunnel_member = req.last
        conn.tunnel = self
        self.fe.tunnel_opened(req, conn, self)
        if rest:
            self.out.append(rest)
        self.flush()
        self.queue.clear()
        self.upgrading = None
        pending, self.pending = self.pending, []
        if pending:
            conn.transport.write(b"".join(pending))
        self.resume("upgrade")

    def tunnel_lost(self) -> None:
        self.flush()
        if not self.gone:
            self.transport.close()

    # -- from the upstream side -------------------------------------------------
    def flush(self) -> None:
        if self.out and not self.gone:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def flush_soon(self) -> None:
        """Write `out` once this pass of the event loop has handled every ready socket (Frontend.flush_all)."""
        if not self.flush_queued:
            self.flush_queued = True
            self.fe.queue_flush(self)

    def on_interim(self, req: Request, status: int, reason: bytes, fields: bytes) -> None:
        if req.http10:
            return  # an HTTP/1.0 client knows no 1xx (RFC 9110 §15.2): it waits for the final answer
        self.out.append(http1.response_head(status, reason, fields, chunked=False, close=False, keep_alive_10=False))

    def on_response_head(self, req: Request, status: int, reason: bytes, fields: bytes, body: str) -> None:
        """The member's answer begins: `fields` are the lines that cross, `body` how its body is framed."""
        req.status = status
        req.responded = True
        close = (not req.keep_alive or self.fe.shutting_down or self.closing or (bool(req.upgrade) and status != 101)
                 or not req.body_done)  # answered early: the rest of the body cannot be told from a next request
        if status == 101:
            close = False
        rechunk = body in ("chunked", "eof")
        if rechunk and req.http10:
            # An HTTP/1.0 client knows no chunks: the end of the body is the end of the connection.
            rechunk = False
            close = True
        # Not re-chunked for an HTTP/1.0 client: its body goes as it comes (dechunked), ended by the close.
        req.body_kind = "chunked" if rechunk else ("eof" if body == "chunked" else body)
        if close:
            self.closing = True
        elif not rechunk and not req.http10 and req.set_cookie is None:
            # The common answer: status line and the member's fields, nothing of ours to add.
            self.out.append(b"HTTP/1.1 %d %b\r\n%b\r\n" % (status, reason or b"-", fields))
            return
        self.out.append(http1.response_head(status, reason, fields, chunked=rechunk, close=close,
                                            keep_alive_10=req.http10 and not close, extra=req.set_cookie))

    def on_response_body(self, req: Request, data: bytes) -> None:
        self.out.append(http1.chunk(data) if req.body_kind == "chunked" else data)

    def on_response_end(self, req: Request, conn: UpstreamConnection, *, reusable: bool) -> None:
        if req.body_kind == "chunked":
            self.out.append(http1.LAST_CHUNK)
        self.fe.finished(req, conn, reusable)
        self._next()

    def on_upstream_error(self, req: Request, conn: UpstreamConnection | None, kind: str, detail: str) -> None:
        self.fe.failed(req, conn, kind, detail)

    def answer(self, req: Request, status: int) -> None:
        """The proxy answers itself (a refusal, or no member could)."""
        req.done = True
        self.fe.count_answer(req, status)
        self.unhold(req)
        close = (not req.keep_alive or self.fe.shutting_down or self.closing or req.refusal is not None
                 or bool(req.upgrade) or not req.body_done)  # a body still coming cannot be told from a next request
        if close:
            self.closing = True
        self.out.append(http1.simple_response(status, close=close, retry_after=RETRY_AFTER if status == 503 else None))
        self._next()

    def cut(self, req: Request) -> None:
        """A response already begun cannot be finished: close so the client sees it is incomplete."""
        req.done = True
        self.fe.count_answer(req, 0)
        self.closing = True
        self.queue.clear()
        self.out.clear()
        if not self.gone:
            self.transport.abort()

    def _next(self) -> None:
        if self.queue:
            self.queue.popleft()
        if self.client_eof and not self.queue:
            self.closing = True  # the last answer a half-closed client waits for: the connection ends with it
        self.last_active = self.fe.now
        if self.closing or self.gone:
            self.flush()  # now: what follows closes the connection
            if not self.gone and not self.lingering:
                if self.stopped or self.cur is not None:
                    self.linger()  # the client may still be sending: keep reading (and dropping) a while
                else:
                    self.transport.close()
            return
        if self.out and not self.flush_queued:
            self.flush_soon()
        if self.pauses and len(self.queue) < MAX_QUEUED:
            self.resume("pipeline")
        if self.queue and not self.write_paused:  # else resume_writing dispatches it
            self.fe.dispatch(self.queue[0])


class Frontend:
    """One app's listener: clients in, members out."""

    def __init__(self, app: AppState, proxy_cfg: ProxyConfig, log: Callable[[str], None],
                 health: "HealthChecker", tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.log = log
        self.health = health
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.loop_time = self.loop.time
        # A clock the sweeper sets a few times a second: idle and head deadlines need no finer time, and
        # reading it costs nothing on the per-request path.
        self.now = self.loop_time()
        self.clients: set[ClientConnection] = set()
        self.busy: set[UpstreamConnection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.server: asyncio.AbstractServer | None = None
        self.shutting_down = False
        self.to_flush: list[ClientConnection] = []  # clients with answers to write after this loop pass
        self._log_second = 0
        self._log_count = 0
        self._log_dropped = 0
        self.configure(app.cfg, proxy_cfg)
        app.on_change = self.rebalance

    def configure(self, cfg: FrontendConfig, proxy_cfg: ProxyConfig) -> None:
        self.cfg = cfg
        self.cookie_name = cfg.cookie.encode()
        self.sticky = cfg.split == "sticky"
        self.whole_gets = not self.sticky  # plain GETs skip the parser (a sticky split reads each one's Cookie)
        self.retry_methods = frozenset(cfg.retry.methods)
        self.cfg_response_timeout = proxy_cfg.response_timeout
        self.connect_timeout = proxy_cfg.connect_timeout
        self.upstream_idle = proxy_cfg.upstream_idle
        self.client_idle = proxy_cfg.client_idle
        self.queue_timeout = proxy_cfg.queue_timeout
        self.head_timeout = proxy_cfg.head_timeout
        self.max_head = proxy_cfg.max_head_bytes
        self.whole_head_max = min(http1.WHOLE_HEAD_MAX, self.max_head)
        self.max_tunnels = cfg.max_tunnels
        self.tunnel_idle = proxy_cfg.tunnel_idle
        self.drain_timeout = proxy_cfg.drain_timeout
        self.trusted_nets = [ipaddress.ip_network(c, strict=False) for c in proxy_cfg.trusted_proxies]
        self.proto = b"https" if cfg.tls is not None else b"http"

    def queue_flush(self, client: ClientConnection) -> None:
        self.to_flush.append(client)
        if len(self.to_flush) == 1:
            self.loop.call_soon(self.flush_all)

    def flush_all(self) -> None:
        """Write every answer gathered during one pass of the event loop, one after another.

        As HAProxy does (strace: all recvfrom of an epoll batch, then all sendto): written as each
        answer completes, the writes are spread over the whole pass, and a client on another core may
        go idle between two of them and need waking again. An answer waits at most one pass; what
        closes a connection flushes first (_next, sweep, shutdown).
        """
        batch, self.to_flush = self.to_flush, []
        for c in batch:
            c.flush_queued = False
            c.flush()

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted_nets:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_nets)

    def log_exception(self, where: str) -> None:
        import traceback

        self.log(f"{self.app.name}: INTERNAL ERROR in {where} (please report):\n{traceback.format_exc()}")

    def note(self, message: str) -> None:
        """Log a detail line, at most LOG_BURST a second: under a flood the log must not become the bottleneck."""
        second = int(time.monotonic())
        if second != self._log_second:
            if self._log_dropped:
                self.log(f"{self.app.name}: ({self._log_dropped} more such lines not logged)")
            self._log_second, self._log_count, self._log_dropped = second, 0, 0
        if self._log_count < LOG_BURST:
            self._log_count += 1
            self.log(message)
        else:
            self._log_dropped += 1

    def count_answer(self, req: Request, status: int) -> None:
        """Every answer the proxy makes (status 0 = a response cut short) counts, per app, pool and member."""
        self.app.answers["cut" if status == 0 else str(status)] += 1
        if status >= 500 or status == 0:
            if req.last is not None:
                req.last.stats.failed += 1
            elif req.pool is not None:
                req.pool.failed += 1

    # -- sending ------------------------------------------------------------------
    def dispatch(self, req: Request, retry_of: Member | None = None) -> None:
        if req.refusal is not None:
            req.client.answer(req, req.refusal[0])
            return
        app = self.app
        if retry_of is not None:
            pool = app.retry_pool(retry_of)
        else:
            pool = app.pick_pool(req.bucket)
        if pool is None:
            self.note(f"{app.name}: 503: no pool can take traffic (no healthy, enabled member)")
            req.client.answer(req, 503)
            return
        if retry_of is None and not req.upgrade:
            m = pool.pick()
            if m is not None:  # the common case: a member has a free slot
                self._send_to(req, pool, m)
                return
        self._assign(req, pool, exclude=retry_of)

    def _pick(self, req: Request, pool: Pool, exclude: Member | None = None) -> Member | None:
        """A member with a free slot for `req`; an upgrade also needs one with room for another tunnel."""
        m = pool.pick(exclude)
        if m is None or not req.upgrade or len(m.tunnels) < self.max_tunnels:
            return m
        for _ in range(len(pool.live) - 1):  # smooth WRR moves on each call: each other member once
            m = pool.pick(exclude)
            if m is None or len(m.tunnels) < self.max_tunnels:
                return m
        return None

    def _assign(self, req: Request, pool: Pool, exclude: Member | None = None) -> None:
        m = self._pick(req, pool, exclude)
        if m is None and exclude is not None and exclude in pool.live and exclude.free and exclude.available \
                and not (req.upgrade and len(exclude.tunnels) >= self.max_tunnels):
            m = exclude  # a kept-alive connection died, the member is fine: the same member on a fresh connection
        if m is None:
            if not pool.live:
                self.note(f"{self.app.name}/{pool.name}: 503: no member can take traffic")
                req.pool = pool
                req.client.answer(req, 503)
                return
            if req.upgrade and all(len(x.tunnels) >= self.max_tunnels for x in pool.live):
                # Waiting would not help: a tunnel closes when its users leave, not within queue_timeout.
                self.note(f"{self.app.name}/{pool.name}: 503: every member has max_tunnels "
                          f"({self.max_tunnels}) tunnels open")
                req.pool = pool
                req.client.answer(req, 503)
                return
            # Every member is at max_conns: wait in line (HAProxy's server queue) rather than pile on connects.
            req.pool = pool
            req.queued_at = self.loop_time()
            pool.queue.append(req)
            pool.queued += 1
            return
        self._send_to(req, pool, m)

    def _send_to(self, req: Request, pool: Pool, member: Member) -> None:
        req.pool = pool
        req.member = req.last = member
        member.inflight += 1
        req.attempts += 1
        req.t_send = self.loop_time()
        idle = member.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and req.t_send - conn.idle_since < self.upstream_idle:
                conn.reused = True
                self.busy.add(conn)
                conn.send(req)
                return
            conn.close()
        task = self.loop.create_task(self._connect(req, member))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, req: Request, member: Member) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(lambda: UpstreamConnection(member), member.address,
                                                            member.port)
        except ConnectionRefusedError:
            self.failed(req, None, "refused", "connection refused")
            return
        except (OSError, TimeoutError) as exc:
            why = (f"connect timed out after {self.connect_timeout:g}s" if isinstance(exc, TimeoutError)
                   else f"connect failed: {exc.strerror or exc}")
            self.failed(req, None, "connect", why)
            return
        if req.done or req.client.gone or req.member is not member:
            self._pool(conn)
            return
        self.busy.add(conn)
        conn.send(req)

    def _release(self, req: Request) -> Member | None:
        """Give back the request's connection slot; the next request waiting for that pool takes it."""
        m, req.member = req.member, None
        if m is not None:
            m.inflight -= 1
            if m.pool_ref.queue:
                self._drain_queue(m.pool_ref)
        return m

    def _drain_queue(self, pool: Pool) -> None:
        q = pool.queue
        while q:
            req = q[0]
            if req.done or req.client.gone:
                q.popleft()
                continue
            if not pool.live:
                q.popleft()  # the pool lost its last member while this waited: choose afresh
                self.dispatch(req)
                continue
            m = self._pick(req, pool)
            if m is None:
                return  # (an upgrade at the head that fits nowhere yet waits like any request: FIFO)
            q.popleft()
            self._send_to(req, pool, m)

    def rebalance(self) -> None:
        """Health, admin state or weights changed: waiting requests may now have a member (or need another pool)."""
        for pool in list(self.app.pools.values()):
            if pool.queue:
                self._drain_queue(pool)

    def _pool(self, conn: UpstreamConnection, now: float | None = None) -> None:
        m = conn.member
        in_use = m.healthy or m.pool_ref.panic  # in panic, unhealthy members still serve
        if (conn.closed or m.admin != ENABLED or not in_use or self.shutting_down or len(m.idle) >= MAX_IDLE_PER_MEMBER
                or self.app.members.get(m.name) is not m):  # a member a reload removed keeps no idle connections
            conn.close()
            return
        conn.idle_since = self.loop_time() if now is None else now
        if conn.read_paused:
            conn.resume_reading()  # it was paused for a client that read slowly
        m.idle.append(conn)

    def withdraw(self, req: Request) -> None:
        """Take a request back from wherever it is (a member's connection or a queue): it will not be sent on."""
        req.client.resume("upstream")
        if req.conn is not None:
            self.busy.discard(req.conn)
            req.conn.req = None
            req.conn.close()
            req.conn = None
        self._release(req)
        if req.pool is not None and req in req.pool.queue:
            req.pool.queue.remove(req)

    # -- outcomes -------------------------------------------------------------------
    def finished(self, req: Request, conn: UpstreamConnection, reusable: bool) -> None:
        req.done = True
        req.conn = None
        self.busy.discard(conn)
        client = req.client
        if client.pauses:
            client.resume("upstream")
        # A member that answered before the whole body arrived has that body's rest still coming on this
        # connection's request stream: it can never carry another client's request.
        now = self.loop_time()
        if reusable and req.body_done:
            self._pool(conn, now)  # first, so a request waiting for this member's slot reuses the connection
        else:
            conn.close()
        m = self._release(req)
        if m is not None:
            m.stats.observe(req.status, now - req.t_send)
            if req.status >= 500:
                m.stats.errors += 1
                m.stats.failed += 1
                h = self.cfg.health
                if h.on_5xx and h.passive:
                    m.failures += 1
                    if m.failures >= h.passive_failures:
                        self.app.eject(m, f"passive: {m.failures} consecutive {req.status} answers")
            else:
                m.failures = m.refused = 0

    def failed(self, req: Request, conn: UpstreamConnection | None, kind: str, detail: str) -> None:
        if conn is not None:
            self.busy.discard(conn)
        req.conn = None
        req.client.resume("upstream")
        m = self._release(req)
        if req.done or req.client.gone:
            return
        if m is not None:
            m.stats.errors += 1
            self.note(f"{self.app.name}/{m.pool}/{m.name}: {detail}")
            self._judge(m, req, conn, kind, detail)
        if req.responded:
            req.client.cut(req)
            return
        limit = self.cfg.retry.connect_attempts if not req.sent else self.cfg.retry.attempts
        safe = not req.sent or (req.replayable and req.body_done)
        if safe and m is not None and req.attempts <= limit:
            m.stats.retries += 1
            req.sent = False
            req.conn = None
            self.dispatch(req, retry_of=m)
            return
        status = 504 if kind == "timeout" else (503 if not req.sent else 502)
        req.client.answer(req, status)

    def _judge(self, m: Member, req: Request, conn: UpstreamConnection | None, kind: str, detail: str) -> None:
        """Outlier detection: what one failure on live traffic says about the member."""
        h = self.cfg.health
        if not h.passive or kind == "internal":
            return
        if kind in ("timeout", "reset") and not req.body_done:
            return  # the client had not finished sending: the stall or the close may well be its doing
        if kind == "refused":
            m.refused += 1
            if m.refused >= h.passive_refused:
                self.app.eject(m, f"passive: {m.refused} refused connect(s): nothing listens")
            return
        if conn is not None and conn.reused and kind == "reset" and not conn.got_bytes:
            # A kept-alive connection may die of old age with no fault of the member: ask a check, not a verdict.
            self.health.check_now(self.app, m)
            return
        m.failures += 1
        if m.failures >= h.passive_failures:
            self.app.eject(m, f"passive: {m.failures} consecutive failures (last: {detail})")

    def abort(self, req: Request) -> None:
        """The client went away: the upstream connection is mid-exchange and cannot be reused."""
        req.done = True
        self.withdraw(req)

    # -- tunnels --------------------------------------------------------------------
    def tunnel_opened(self, req: Request, conn: UpstreamConnection, client: ClientConnection) -> None:
        req.done = True
        self.busy.discard(conn)
        m = self._release(req)  # a tunnel does not hold a request slot; drains still wait for it
        if m is not None:
            m.stats.observe(101, self.loop_time() - req.t_send)
            m.tunnels.add(client)
        self.app.tunnels_total += 1

    def tunnel_closed(self, client: ClientConnection) -> None:
        m, client.tunnel_member = client.tunnel_member, None
        if m is not None:
            m.tunnels.discard(client)
        conn, client.tunnel = client.tunnel, None
        if conn is not None:
            conn.tunnel = None
            conn.close()

    # -- housekeeping -------------------------------------------------------------
    def sweep(self) -> None:
        self.flush_all()  # before anything here closes a client with an answer still to write
        self.now = now = self.loop_time()
        for conn in [c for c in self.busy if c.deadline and now > c.deadline]:
            if conn.req is not None and conn.req.client.write_paused:
                conn.deadline = now + self.cfg_response_timeout  # waiting on the client, not on the member
                continue
            self.busy.discard(conn)
            conn.timed_out()
        for pool in self.app.pools.values():
            q = pool.queue
            while q and (q[0].done or q[0].client.gone or now - q[0].queued_at >= self.queue_timeout):
                req = q.popleft()
                if req.done or req.client.gone:
                    continue
                pool.queue_timeouts += 1
                self.note(f"{self.app.name}/{pool.name}: 503: waited {self.queue_timeout:g}s for a free member "
                          f"(all at max_conns {self.cfg.max_conns})")
                req.client.answer(req, 503)
        wall = time.time()
        for m in self.app.members.values():
            if m.idle and now - m.idle[0].idle_since >= self.upstream_idle:
                keep = []
                for conn in m.idle:
                    if now - conn.idle_since >= self.upstream_idle:
                        conn.close()
                    else:
                        keep.append(conn)
                m.idle = keep
            if m.tunnels and m.admin != ENABLED and wall - m.admin_since >= self.drain_timeout:
                self.log(f"{self.app.name}/{m.pool}/{m.name}: drain timeout; closing {len(m.tunnels)} tunnel(s)")
                for c in list(m.tunnels):
                    m.tunnels.discard(c)
                    c.transport.abort()  # a peer that stopped reading would hold a graceful close forever
        limit = 0.0 if self.shutting_down else self.client_idle
        for c in list(self.clients):
            if c.lingering:
                if now > c.lingering:
                    c.transport.abort() if c.linger_bytes else c.transport.close()
            elif c.write_paused and now - c.write_paused >= self.client_idle:
                self.note(f"{self.app.name}: client {c.client_ip.decode()} read nothing for {self.client_idle:g}s; "
                          "dropped")
                c.transport.abort()  # HAProxy's `timeout client`: it holds a member slot and our buffers
            elif c.tunnel is not None:
                if now - c.last_active >= self.tunnel_idle:
                    c.transport.abort()
            elif c.pauses - {"stopped"}:
                continue  # we stopped reading it: neither a slow head nor a stalled body is its doing
            elif c.head_deadline and now > c.head_deadline and not c.stopped:
                c.head_timed_out()
            elif c.cur is not None and not c.in_head and not c.stopped and now - c.last_active >= self.client_idle:
                c.body_timed_out()
            elif not c.busy and now - c.last_active >= limit:
                c.transport.close()
                self.clients.discard(c)
