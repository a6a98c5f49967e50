"""One keep-alive connection to a member: sends a request, relays the response as it arrives.

Protocol callbacks, not coroutines: the per-request path is a few method
calls with no task or future, which is what keeps a Python proxy within reach of
HAProxy's cost per request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from opsconsole.proxy import http1

# The largest response head relayed (HAProxy's buffer is 16 KiB, nginx's proxy_buffer_size 4-8 KiB): larger
# is a 502. Not the request limit (max_head_bytes): a member's Set-Cookie lines are ours to bound, not a client's.
MAX_RESPONSE_HEAD = 64 * 1024

if TYPE_CHECKING:
    from opsconsole.proxy.balancer import Member
    from opsconsole.proxy.server import ClientConnection, Request


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("member", "transport", "parser", "req", "idle_since", "closed", "deadline", "reused", "got_bytes",
                 "tunnel", "read_paused", "_status", "_reason", "_headers", "_eof_body", "_interim", "_switching", "_complete", "_head_done",
                 "_head_seen", "_fresh")

    def __init__(self, member: "Member") -> None:
        self.member = member
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.req: "Request | None" = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False  # taken from the idle pool (vs freshly connected for this request)
        self.deadline = 0.0  # response-header deadline, checked by the frontend's sweeper
        self.got_bytes = False  # some byte of the current request's response arrived
        self.tunnel: "ClientConnection | None" = None  # after a 101: the client this connection is spliced to
        self.read_paused = False  # we paused reading its answer for a client that reads slowly
        self._reset_response()

    def _reset_response(self) -> None:
        self._status = 0
        self._reason = b""
        self._headers: list[http1.Header] = []
        self._eof_body = False  # body ends when the connection does
        self._interim = False
        self._switching = False
        self._complete: bool | None = None  # the answer ended in this read: reusable? (decided after the read)
        self._head_done = False  # the head of the answer (or of its last interim 1xx) is parsed
        self._head_seen = 0  # bytes read while that head was still coming (its size, within one read)
        self._fresh = True  # no byte of this answer has reached the parser: it is between two messages

    # -- asyncio -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, req: "Request") -> None:
        self.req = req
        req.conn = self
        # The member owes an answer once it has the whole request; while the client is still sending its
        # body, a stall is the client's (judged by the client-side body timeout, never against the member).
        self.deadline = (req.t_send + req.client.fe.cfg_response_timeout) if req.body_done else 0.0
        self.got_bytes = False
        if req.client.write_paused:
            self.pause_reading()  # the client is not reading: do not read its answer faster
        self.transport.write(b"".join(req.wire))
        req.sent = True
        if req.held:
            req.client.unhold(req)
        if not req.replayable:
            req.wire = []

    def pause_reading(self) -> None:
        self.read_paused = True
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.read_paused = False
        self.transport.resume_reading()

    def write_body(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def body_sent(self, now: float) -> None:
        """The request's last body byte is written: its response is due within response_timeout."""
        self.deadline = now + self.req.client.fe.cfg_response_timeout if self.req is not None else 0.0

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.last_active = self.tunnel.fe.now
            self.tunnel.transport.write(data)
            return
        if self.req is None:
            # Bytes nobody asked for (an idle connection): whatever they are, this connection is out of step.
            self.close()
            return
        req = self.req
        client = req.client
        self.got_bytes = True
        if self._fresh and req.plain and not client.closing and not client.fe.shutting_down:
            # The whole answer in this first read, plain (see http1): it crosses as it came, no parse needed,
            # and the parser, given nothing, stays between two messages. (Only in a first read: once the
            # parser has a byte of this answer — an interim 1xx, a head in part — it must have every byte,
            # or a body that looks like an answer would be taken for one.) Closing, the client's answer
            # needs our Connection: close.
            status = http1.whole_plain_answer(data)
            if status:
                self._relay_whole(req, client, data, status)
                return
        self._fresh = False
        if self.deadline:  # a member sending its answer is alive: the timeout is one of inactivity
            self.deadline = client.fe.now + client.fe.cfg_response_timeout
        if not self._head_done:
            self._head_seen += len(data)
        try:
            self.parser.feed_data(data)
            if not self._head_done and self._head_seen > MAX_RESPONSE_HEAD and self.req is not None:
                # The parser keeps a field still arriving in one growing buffer (and copies it as it grows):
                # a member sending an endless head would hold the loop every app shares. HAProxy answers
                # 502 past its buffer size; so do we (and on_headers_complete for a head that came whole).
                self._fail("bad-response", f"response head over {MAX_RESPONSE_HEAD} bytes")
                return
            if self._complete is not None:
                # The answer ended, and nothing followed it in this read: only now may the connection serve
                # another request. (Bytes past the end — a member that sent more than it declared — would
                # otherwise be read as the next client's answer.)
                self._finish(self._complete)
        except httptools.HttpParserUpgrade as exc:
            if self.req is not None and self._switching:
                req, self.req = self.req, None
                req.client.on_switch(req, self, data[exc.args[0]:] if exc.args else b"")
                return
            self._fail("bad-response", "unexpected protocol switch")
        except httptools.HttpParserCallbackError:
            # A bug of ours, not a bad answer: log it, drop this exchange, blame nobody.
            client.fe.log_exception("upstream callback")
            self._fail("internal", "internal error while relaying")
        except httptools.HttpParserError as exc:
            if self._complete is not None:
                self._finish(False)  # the answer was whole; what came after it was garbage
            else:
                self._fail("bad-response", f"unparsable response: {exc}")
        if client is not None and client.out and not client.flush_queued:
            client.flush_soon()  # head and body of one read leave in one write, after the loop's pass

    def _relay_whole(self, req: "Request", client: "ClientConnection", data: bytes, status: int) -> None:
        """What the parser path does for a plain answer (on_response_head, on_response_body, _finish), at once."""
        req.status = status
        req.responded = True
        req.body_kind = "length"
        client.out.append(data)
        self.req = None
        client.on_response_end(req, self, reusable=not self.closed)
        if not client.flush_queued:
            client.flush_soon()

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def pause_writing(self) -> None:
        client = self.tunnel or (self.req.client if self.req is not None else None)
        if client is not None:
            client.pause("upstream")

    def resume_writing(self) -> None:
        client = self.tunnel or (self.req.client if self.req is not None else None)
        if client is not None:
            client.resume("upstream")

    def _lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.member.idle.remove(self)
        except ValueError:
            pass
        if self.tunnel is not None:
            self.tunnel.tunnel_lost()
        if self.req is not None and self.req.done:
            self.req = None
        if self.req is not None:
            client = self.req.client
            if self._eof_body and self._status and exc is None:
                req, self.req = self.req, None
                req.client.on_response_end(req, self, reusable=False)
            else:
                self._fail("reset", f"connection closed before the response ended ({exc or 'EOF'})")
            client.flush()
        if self.transport is not None:
            self.transport.close()

    def _fail(self, kind: str, detail: str) -> None:
        req, self.req = self.req, None
        self.close()
        if req is not None:
            req.client.on_upstream_error(req, self, kind, detail)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.member.idle.remove(self)
            except ValueError:
                pass
            if self.transport is not None:
                self.transport.close()

    def timed_out(self) -> None:
        self._fail("timeout", "no response in time")

    # -- httptools callbacks ---------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_message_begin(self) -> None:
        if self._complete is not None:
            self._complete = False  # a second message in the same read, nobody asked for it: never reuse

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete is None:
            self._headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        req = self.req
        if req is None or self._complete is not None:
            return
        self._head_done = True
        # A head that came whole in one read big enough to hold more than the limit is measured as parsed (the
        # read may be mostly body); most reads are smaller than the limit, and this costs them one comparison.
        if self._head_seen > MAX_RESPONSE_HEAD and len(self._reason) + sum(
                len(n) + len(v) + 4 for _, n, v in self._headers) > MAX_RESPONSE_HEAD:
            self._fail("bad-response", f"response head over {MAX_RESPONSE_HEAD} bytes")
            return
        status = self.parser.get_status_code()
        self._status = status
        if not 100 <= status <= 599:
            # Three digits, but no status (RFC 9110 §15): relayed, "000" would even lose its digits.
            self._fail("bad-response", f"invalid status code {status}")
            return
        if status == 101 and not req.upgrade:
            # A switch the client never asked for (RFC 9110 §7.8): relayed, the client (or a proxy in front)
            # would take the connection for a tunnel while we go on speaking HTTP on it.
            self._fail("bad-response", "101 Switching Protocols to a request that asked for no upgrade")
            return
        if status == 101 and req.upgrade:
            if http1.upgrade_token(self._headers) != req.upgrade:
                # Only the protocol the client asked for (and we allowed) may be tunnelled.
                self._fail("bad-response", f"101 switched to {http1.upgrade_token(self._headers)[:30]!r}, "
                                           f"not {req.upgrade!r}")
                return
            # The member agreed to switch: relay its 101, then splice the two connections (see data_received).
            self._switching = True
            self.deadline = 0.0
            headers = self._headers
            fields = http1.end_to_end_fields(headers, http1.Framing(headers).drop) + http1.upgrade_fields(headers)
            req.client.on_response_head(req, status, self._reason, fields, "none")
            return
        if 100 <= status < 200:
            # An interim answer (100 Continue): pass it on, the final response follows on the same parser.
            # It has no body, so no Content-Length either (RFC 9110 §8.6).
            self._interim = True
            headers = self._headers
            fields = http1.end_to_end_fields(headers, http1.Framing(headers).drop | http1.NO_BODY_FIELDS)
            req.client.on_interim(req, status, self._reason, fields)
            self._reason, self._headers = b"", []
            self._head_done, self._head_seen = False, 0  # the final answer's head comes next
            return
        plain = http1.plain_response_fields(self._headers) if status != 204 else None
        if plain is not None:  # the common case: no hop-by-hop field, so no Framing to work out
            fields, length = plain
            chunked = False
        else:
            framing = http1.Framing(self._headers)
            drop = framing.drop | http1.NO_BODY_FIELDS if status == 204 else framing.drop
            fields = http1.end_to_end_fields(self._headers, drop)
            chunked, length = framing.chunked, framing.length
            if framing.chunked_twice:
                self._fail("bad-response", f"Transfer-Encoding {framing.te[:40]!r} applies chunked twice")
                return
            if framing.codings and status != 204 and status != 304 and req.method != "HEAD" and not req.http10:
                # A coding besides chunked ("gzip, chunked", or "gzip" to the close): the body we relay (and
                # re-chunk) stays coded, so the client must be told that coding, ahead of our chunked
                # (two field lines read as one list, RFC 9112 §6.1).
                fields += b"Transfer-Encoding: %b\r\n" % framing.codings
        if status == 204 or status == 304 or req.method == "HEAD":  # no body (RFC 9112 §6.3); 1xx went above
            body = "none"
        elif chunked:
            body = "chunked"
        elif length:
            body = "length"
        else:
            body = "eof"
            self._eof_body = True
        req.client.on_response_head(req, status, self._reason, fields, body)
        if req.method == "HEAD" and status >= 200:
            # llhttp cannot be told a HEAD answer has no body, and a member may send one anyway (HEAD done as
            # GET): this connection cannot be trusted to be in step, so it serves nobody after this answer.
            self._finish(False)

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req is not None and self._complete is None:
            req.client.on_response_body(req, body)

    def on_message_complete(self) -> None:
        if self._switching:
            return
        if self._interim:
            self._interim = False
            return
        if self.req is not None and self._complete is None:
            self._complete = self.parser.should_keep_alive()  # finished once this read is parsed

    def _finish(self, keep_alive: bool) -> None:
        req, self.req = self.req, None
        self._reset_response()
        if req is not None:
            req.client.on_response_end(req, self, reusable=keep_alive and not self.closed)
