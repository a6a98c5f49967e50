"""The client side: parse requests, choose a member, relay, retry what is safe to retry."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Callable

import httptools

from opsconsole.proxy import http1
from opsconsole.proxy.balancer import ENABLED, AppState, Member
from opsconsole.proxy.config import FrontendConfig, ProxyConfig
from opsconsole.proxy.upstream import UpstreamConnection

MAX_IDLE_PER_MEMBER = 256
MAX_REPLAY_BYTES = 64 * 1024  # a GET/HEAD body larger than this is not kept for a retry
MAX_QUEUED = 16  # pipelined requests parsed ahead before we stop reading


class Request:
    __slots__ = ("client", "method", "url", "headers", "keep_alive", "http10", "chunked", "wire", "replayable",
                 "body_done", "conn", "member", "attempts", "sent", "responded", "t_send", "bucket",
                 "set_cookie", "status", "body_kind", "done")

    def __init__(self, client: "ClientConnection") -> None:
        self.client = client
        self.method = "GET"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.http10 = False
        self.chunked = False
        self.wire: list[bytes] = []  # head + body as we send them upstream; kept for a replay
        self.replayable = True
        self.body_done = False
        self.conn: UpstreamConnection | None = None
        self.member: Member | None = None
        self.attempts = 0
        self.sent = False  # some byte went upstream
        self.responded = False  # some byte went to the client
        self.t_send = 0.0
        self.bucket: int | None = None
        self.set_cookie: bytes | None = None
        self.status = 0
        self.body_kind = "none"
        self.done = False

    def add_body(self, data: bytes) -> None:
        piece = http1.chunk(data) if self.chunked else data
        self._push(piece)

    def end_body(self) -> None:
        if self.chunked:
            self._push(http1.LAST_CHUNK)
        self.body_done = True

    def _push(self, piece: bytes) -> None:
        if self.conn is not None and self.sent:
            self.conn.write_body(piece)
            if self.replayable:
                self.wire.append(piece)
        else:
            self.wire.append(piece)
        if self.replayable and sum(len(w) for w in self.wire) > MAX_REPLAY_BYTES:
            self.replayable = False


class ClientConnection(asyncio.Protocol):
    def __init__(self, fe: "Frontend") -> None:
        self.fe = fe
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.cur: Request | None = None
        self.client_ip = b""
        self.out: list[bytes] = []  # response bytes gathered during one upstream read, written at once
        self.last_active = 0.0
        self.closing = False
        self.gone = False

    # -- asyncio -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if isinstance(peer, tuple) else "127.0.0.1").encode()
        self.last_active = self.fe.loop_time()
        self.fe.clients.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.fe.loop_time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, "Not Implemented", "protocol upgrades (WebSocket, h2c) are not supported by this proxy")
        except httptools.HttpParserError as exc:
            self._refuse(400, "Bad Request", f"the request could not be parsed: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.fe.clients.discard(self)
        for req in self.queue:
            if not req.done:
                self.fe.abort(req)
        self.queue.clear()

    def pause_writing(self) -> None:
        if self.queue and self.queue[0].conn is not None and self.queue[0].conn.transport is not None:
            self.queue[0].conn.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.queue and self.queue[0].conn is not None and self.queue[0].conn.transport is not None:
            self.queue[0].conn.transport.resume_reading()

    @property
    def busy(self) -> bool:
        return bool(self.queue) or self.cur is not None

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if not self.queue:
            self.transport.write(http1.simple_response(status, reason, message, close=True))
        self.closing = True
        self.transport.close()

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        self.cur = Request(self)

    def on_url(self, url: bytes) -> None:
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.cur.headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        req = self.cur
        p = self.parser
        req.method = p.get_method().decode()
        req.keep_alive = p.should_keep_alive()
        req.http10 = p.get_http_version() == "1.0"
        framing = http1.Framing(req.headers)
        req.chunked = framing.chunked
        if req.method not in self.fe.retry_methods:
            req.replayable = False
        if self.fe.sticky:
            req.bucket = self._bucket(req)
        req.wire.append(http1.request_head(p.get_method(), req.url, req.headers, framing.drop, self.client_ip,
                                           chunked=req.chunked))
        self.queue.append(req)
        if len(self.queue) == 1:
            self.fe.dispatch(req)
        elif len(self.queue) >= MAX_QUEUED:
            self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        self.cur.add_body(body)

    def on_message_complete(self) -> None:
        self.cur.end_body()
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

    # -- from the upstream side -------------------------------------------------
    def flush(self) -> None:
        if self.out and not self.gone:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def on_interim(self, req: Request, status: int, reason: bytes, headers: list) -> None:
        self.out.append(http1.response_head(status, reason, headers, http1.Framing(headers).drop, chunked=False,
                                            close=False, keep_alive_10=False))

    def on_response_head(self, req: Request, status: int, reason: bytes, headers: list, drop: frozenset, body: str) -> None:
        req.status = status
        req.responded = True
        close = not req.keep_alive or self.fe.shutting_down or self.closing
        rechunk = body in ("chunked", "eof")
        if rechunk and req.http10:
            # An HTTP/1.0 client knows no chunks: the end of the body is the end of the connection.
            rechunk = False
            close = True
        req.body_kind = "chunked" if rechunk else body
        if close:
            self.closing = True
        self.out.append(http1.response_head(status, reason, headers, drop, chunked=rechunk, close=close,
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

    def answer(self, req: Request, status: int, reason: str, message: str) -> None:
        """The proxy answers itself (no member could)."""
        req.done = True
        close = not req.keep_alive or self.fe.shutting_down or self.closing
        if close:
            self.closing = True
        self.out.append(http1.simple_response(status, reason, message, close=close))
        self._next()

    def cut(self, req: Request) -> None:
        """A response already begun cannot be finished: close so the client sees it is incomplete."""
        req.done = True
        self.closing = True
        self.queue.clear()
        self.out.clear()
        if not self.gone:
            self.transport.abort()

    def _next(self) -> None:
        self.flush()
        if self.queue:
            self.queue.popleft()
        self.last_active = self.fe.loop_time()
        if self.closing or self.gone:
            if not self.gone:
                self.transport.close()
            return
        if len(self.queue) == MAX_QUEUED - 1:
            self.transport.resume_reading()
        if self.queue:
            self.fe.dispatch(self.queue[0])


class Frontend:
    """One app's listener: clients in, members out."""

    def __init__(self, app: AppState, proxy_cfg: ProxyConfig, log: Callable[[str], None],
                 check_now: Callable[[AppState, Member], None]) -> None:
        self.app = app
        self.log = log
        self.check_now = check_now
        self.loop = asyncio.get_running_loop()
        self.loop_time = self.loop.time
        self.clients: set[ClientConnection] = set()
        self.busy: set[UpstreamConnection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.shutting_down = False
        self.configure(app.cfg, proxy_cfg)

    def configure(self, cfg: FrontendConfig, proxy_cfg: ProxyConfig) -> None:
        self.cfg = cfg
        self.cookie_name = cfg.cookie.encode()
        self.sticky = cfg.split == "sticky"
        self.retry_methods = frozenset(cfg.retry.methods)
        self.cfg_response_timeout = proxy_cfg.response_timeout
        self.connect_timeout = proxy_cfg.connect_timeout
        self.upstream_idle = proxy_cfg.upstream_idle
        self.client_idle = proxy_cfg.client_idle

    # -- sending ------------------------------------------------------------------
    def dispatch(self, req: Request, retry_of: Member | None = None) -> None:
        app = self.app
        member = app.pick(req.bucket) if retry_of is None else app.pick_retry(retry_of)
        if member is None:
            app.client_errors += 1
            req.client.answer(req, 503, "Service Unavailable", f"no healthy member of app {app.name} can take this request")
            return
        req.member = member
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
        self.loop.create_task(self._connect(req, member))

    async def _connect(self, req: Request, member: Member) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(member), member.address, member.port),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            why = "connect timed out" if isinstance(exc, asyncio.TimeoutError) else f"connect failed: {exc.strerror or exc}"
            self.failed(req, None, "connect", why)
            return
        if req.done or req.client.gone:
            self._release(req)
            self._pool(conn)
            return
        self.busy.add(conn)
        conn.send(req)

    def _release(self, req: Request) -> Member | None:
        m, req.member = req.member, None
        if m is not None:
            m.inflight -= 1
        return m

    def _pool(self, conn: UpstreamConnection) -> None:
        m = conn.member
        if (conn.closed or m.admin != ENABLED or not m.healthy or self.shutting_down or len(m.idle) >= MAX_IDLE_PER_MEMBER
                or self.app.members.get(m.name) is not m):  # a member a reload removed keeps no idle connections
            conn.close()
            return
        conn.idle_since = self.loop_time()
        m.idle.append(conn)

    # -- outcomes -------------------------------------------------------------------
    def finished(self, req: Request, conn: UpstreamConnection, reusable: bool) -> None:
        req.done = True
        self.busy.discard(conn)
        m = self._release(req)
        if m is not None:
            m.stats.observe(req.status, self.loop_time() - req.t_send)
            if req.status >= 500:
                m.stats.errors += 1
                if self.cfg.health.on_5xx and self.cfg.health.passive:
                    self.app.mark(m, False, f"passive: answered {req.status}")
        if reusable:
            self._pool(conn)
        else:
            conn.close()

    def failed(self, req: Request, conn: UpstreamConnection | None, kind: str, detail: str) -> None:
        if conn is not None:
            self.busy.discard(conn)
        m = self._release(req)
        if req.done or req.client.gone:
            return
        if m is not None:
            m.stats.errors += 1
            fresh = conn is None or kind == "timeout" or not conn.reused
            if self.cfg.health.passive:
                if fresh:
                    self.app.mark(m, False, f"passive: {detail}")
                else:
                    # A kept-alive connection may die of old age with no fault of the member; ask a check, not a verdict.
                    self.check_now(self.app, m)
        if req.responded:
            self.app.client_errors += 1
            req.client.cut(req)
            return
        safe = not req.sent or (req.replayable and req.body_done)
        if safe and m is not None and req.attempts <= self.cfg.retry.attempts:
            m.stats.retries += 1
            req.sent = False
            req.conn = None
            self.dispatch(req, retry_of=m)
            return
        self.app.client_errors += 1
        status, reason = (504, "Gateway Timeout") if kind == "timeout" else (502, "Bad Gateway")
        where = f"{m.pool}/{m.name}" if m else "upstream"
        req.client.answer(req, status, reason, f"{where}: {detail}")

    def abort(self, req: Request) -> None:
        """The client went away: the upstream connection is mid-exchange and cannot be reused."""
        req.done = True
        self._release(req)
        if req.conn is not None:
            self.busy.discard(req.conn)
            req.conn.req = None
            req.conn.close()

    # -- housekeeping -------------------------------------------------------------
    def sweep(self) -> None:
        now = self.loop_time()
        for conn in [c for c in self.busy if c.deadline and now > c.deadline]:
            self.busy.discard(conn)
            conn.timed_out()
        for m in self.app.members.values():
            if m.idle and now - m.idle[0].idle_since >= self.upstream_idle:
                keep = []
                for conn in m.idle:
                    if now - conn.idle_since >= self.upstream_idle:
                        conn.closed = True
                        conn.transport.close()
                    else:
                        keep.append(conn)
                m.idle = keep
        limit = 0.0 if self.shutting_down else self.client_idle
        for c in [c for c in self.clients if not c.busy and now - c.last_active >= limit]:
            c.transport.close()
            self.clients.discard(c)

