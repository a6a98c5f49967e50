"""HTTP/1.1 message heads for the proxy: what crosses a hop and what does not (RFC 9110 §7.6.1, RFC 9112).

Headers travel as (lowercased name, name, value) triples: each name is lowercased
once, when parsed, because every step after that compares names.
"""

from __future__ import annotations

import re

Header = tuple[bytes, bytes, bytes]

# Hop-by-hop fields: they describe one connection, never the message, so each side sets its own.
# Transfer-Encoding is here because we re-frame bodies ourselves (chunked in, chunked out).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# What a client could claim about where it came from: kept only from a trusted proxy, dropped from anyone else.
FORWARDING = frozenset({b"forwarded", b"x-real-ip", b"x-forwarded-host", b"x-forwarded-port"})
# A field that frames the message can never become hop-by-hop because `Connection` names it: dropping
# Content-Length while forwarding the body lets the body be read as a second request (smuggling).
FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})
# A CGI or WSGI app reads X_Forwarded_For as X-Forwarded-For (both become HTTP_X_FORWARDED_FOR): a client's
# underscore spelling of a field this hop sets, drops or frames by would slip past us to the app. Dropped
# from requests (nginx drops every name with an underscore by default; other names pass).
def _underscore_spellings(name: bytes) -> set[bytes]:
    """Every spelling of `name` with at least one of its dashes an underscore (x_forwarded-for, x-forwarded_for …)."""
    parts = name.split(b"-")
    spellings = {parts[0]}
    for part in parts[1:]:
        spellings = {s + sep + part for s in spellings for sep in (b"-", b"_")}
    return spellings - {name}


UNDERSCORED = frozenset(spelling for n in HOP_BY_HOP | FORWARDING | FRAMING | {b"x-forwarded-for", b"x-forwarded-proto"}
                        for spelling in _underscore_spellings(n))
_PLAIN_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade", b"te"})
# What an answer without a body (1xx, 204) must not carry (RFC 9110 §8.6); a member's is dropped.
NO_BODY_FIELDS = frozenset({b"content-length"})
# The only names Framing looks at: one set lookup skips every other field.
_FRAMING_NAMES = frozenset({b"host", b"transfer-encoding", b"content-length", b"connection"})
# A request head with none of these (and one Host) is the common case `plain_request_head` forwards as it is.
_NOT_PLAIN = HOP_BY_HOP | FORWARDING | UNDERSCORED | {b"content-length", b"x-forwarded-for", b"x-forwarded-proto"}
CRLF = b"\r\n"
# RFC 9110 §7.2: uri-host [":" port]; reg-name characters, an IPv6 literal, or an IPv4 address.
_HOST_VALUE = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?"
_HOST = re.compile(rb"^" + _HOST_VALUE + rb"$")

# Whole-read matchers for the commonest exchange, a GET and its answer each in one read, so those skip
# the field-by-field parse. Each accepts a strict subset of HTTP/1.1 — canonical `Name: value` lines (one
# space, visible ASCII, no padding, no underscore in a name), an RFC 3986 origin-form target — for which
# the parser path would send the very same bytes; anything else (a field that frames, hops or forwards,
# obs-text, odd spacing, a body split across reads) goes to the parser, which decides as before. Tested
# against the parser path byte for byte: tests/test_proxy_fast_path.py.
# Heads up to WHOLE_HEAD_MAX bytes only: a longer one (rare, a big Cookie) goes to the parser. The patterns
# are linear but cost ~80 ns a byte where llhttp costs ~1, and a head built to fail late (a tab at the end of
# a long value) would otherwise cost a match over all of max_head_bytes before the parser took it, on the
# loop every app shares; within this bound a failed match costs about what one small request does.
# One match does all of it: CPython's re costs about a thousand instructions a call, so every check is in
# the pattern (each line's name is looked at in a lookahead) rather than in calls after it. (No possessive
# `*+`: Python 3.11.2's re can end one in the middle of a line — `Host: a\r\nX-Empty: \r\n\r\n` matched.)
WHOLE_HEAD_MAX = 2048
_VALUE = rb"[\x21-\x7e]+(?: [\x21-\x7e]+)*"


def _lines_without(names: frozenset[bytes]) -> bytes:
    """A field line whose name (in any case) is none of `names`."""
    alternatives = b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return rb"(?:(?!(?i:" + alternatives + rb"):)[-!#$%&'*+.^`|~0-9A-Za-z]+: " + _VALUE + rb"\r\n)"


_GET_LINE = _lines_without(_NOT_PLAIN - UNDERSCORED | {b"host"})  # (no name with an underscore gets this far)
_PLAIN_GET = re.compile(rb"GET (/[A-Za-z0-9._~!$&'()*+,;=:@/?%-]*) HTTP/1\.1\r\n"
                        rb"(" + _GET_LINE + rb"*?(?i:host): " + _HOST_VALUE + rb"\r\n" + _GET_LINE + rb"*)\r\n")
_ANSWER_LINE = _lines_without(HOP_BY_HOP | {b"content-length"})
_PLAIN_ANSWER = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) " + _VALUE + rb"\r\n"
                           + _ANSWER_LINE + rb"*?(?i:content-length): ([0-9]{1,15})\r\n" + _ANSWER_LINE + rb"*\r\n")


def whole_plain_get(data: bytes, pos: int, limit: int) -> tuple[bytes, bytes, int] | None:
    """(target, field lines, end of head) when `data` has a plain GET's whole head of at most `limit` bytes
    at `pos`; None otherwise. (`limit`: WHOLE_HEAD_MAX, or max_head_bytes if that is less.)

    Plain is what `plain_request_head` forwards as it came: exactly one valid Host, and no field that frames
    a body, is hop-by-hop or claims something about forwarding. The lines are returned as they came, since
    `plain_request_head` would write each one back the same.
    """
    m = _PLAIN_GET.match(data, pos, pos + limit)
    if m is None:
        return None
    target, fields = m.groups()
    return target, fields, m.end()


def whole_plain_answer(data: bytes) -> int:
    """The status when `data` is exactly one plain answer, head and whole body; 0 otherwise.

    Plain: a final status with a body (not 1xx, 204 or 304), no hop-by-hop field, exactly one Content-Length
    and exactly that many bytes after the head. Relayed as it came, which is what the parser path would write.
    """
    m = _PLAIN_ANSWER.match(data, 0, WHOLE_HEAD_MAX)  # (well under the answer's own limit, MAX_RESPONSE_HEAD)
    if m is None:
        return 0
    end = m.end()
    status, length = m.groups()
    if int(length) != len(data) - end:
        return 0
    code = int(status)
    return 0 if code == 204 or code == 304 else code


REASONS = {
    400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
# What a client is told. Generic on purpose: pool, member, address and parser detail go to the log only.
MESSAGES = {
    400: "the request is malformed", 405: "this method is not allowed here",
    408: "the request did not arrive in time", 431: "the request head is too large",
    501: "what this request asks for is not supported here", 502: "the server's answer was invalid or cut short",
    503: "no server is available to handle this request", 504: "the server did not answer in time",
}


class Framing:
    """What a head says about its connection and body, found in one pass."""

    __slots__ = ("drop", "chunked", "length", "te", "upgrade", "hosts", "host", "codings", "chunked_twice")

    def __init__(self, headers: list[Header]) -> None:
        self.chunked = False
        self.length = False
        self.te = b""  # the Transfer-Encoding value(s), as sent
        self.upgrade = False  # Connection names `upgrade`
        self.hosts = 0  # Host fields, and the first one's value (a request must have exactly one)
        self.host = b""
        drop = HOP_BY_HOP
        for low, _, value in headers:
            if low not in _FRAMING_NAMES:
                continue
            if low == b"host":
                self.hosts += 1
                if self.hosts == 1:
                    self.host = value
            elif low == b"transfer-encoding":
                self.te = value if not self.te else self.te + b", " + value
            elif low == b"content-length":
                self.length = True
            elif low == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",") if t.strip()}
                self.upgrade = self.upgrade or b"upgrade" in tokens
                if not tokens <= _PLAIN_TOKENS:
                    drop = drop | (tokens - FRAMING)  # fields named in Connection are hop-by-hop too
        self.codings = b""  # the transfer codings besides a final chunked, as sent ("gzip" of "gzip, chunked")
        self.chunked_twice = False  # chunked anywhere but last (RFC 9112 §6.1: applied once, last)
        if self.te:
            *codings, last = (c.strip() for c in self.te.split(b","))
            self.chunked = last.lower() == b"chunked"
            others = [c for c in (codings if self.chunked else [*codings, last]) if c]
            self.chunked_twice = any(c.lower() == b"chunked" for c in others)
            self.codings = b", ".join(others)
        self.drop = drop


def request_problem(method: bytes, url: bytes, framing: Framing, *, http10: bool) -> tuple[int, str] | None:
    """Why a request head must be refused before anything is sent upstream, as (status, detail for the log)."""
    if url[:1] == b"/" and framing.hosts == 1 and not framing.te and method != b"CONNECT" and _HOST.match(framing.host):
        return None  # the common case, decided in one pass
    if framing.te and framing.length:
        return 400, "both Transfer-Encoding and Content-Length"
    if framing.te and http10:
        return 400, "Transfer-Encoding in an HTTP/1.0 request"  # faulty framing, RFC 9112 §6.1
    if framing.te and not framing.chunked:
        return 400, f"Transfer-Encoding {framing.te[:40]!r} does not end in chunked"
    if framing.codings:
        # Codings besides chunked (gzip, chunked): as nginx, refused. Passed on, a member that knows only
        # `chunked` misreads or refuses the body, and llhttp lets odd ones through ("x;q=1", "chunked\t").
        return 501, f"transfer coding {framing.codings[:40]!r} before chunked is not supported"
    if method == b"CONNECT":
        return 405, "CONNECT to a reverse proxy"
    if not url.startswith(b"/") and not (url == b"*" and method == b"OPTIONS"):
        # A reverse proxy is not a forward proxy: an absolute-form target could name another host than Host.
        return 400, f"request target {url[:60]!r} is not origin-form"
    if framing.hosts > 1:
        return 400, f"{framing.hosts} Host headers"
    if not framing.hosts and not http10:
        return 400, "no Host header in an HTTP/1.1 request"
    if framing.hosts and not _HOST.match(framing.host):
        return 400, f"invalid Host {framing.host[:60]!r}"
    return None


def upgrade_token(headers: list[Header]) -> bytes:
    for low, _, value in headers:
        if low == b"upgrade":
            return value.split(b",")[0].split(b"/")[0].strip().lower()
    return b""


def plain_request_head(method: bytes, url: bytes, headers: list[Header], client_ip: bytes, proto: bytes) -> bytes | None:
    """The head to send upstream for the common request, checked and built in one pass; None for any other.

    Common: an origin-form target, exactly one valid Host, and no field that frames a body, is hop-by-hop
    or claims something about forwarding. Such a request has no body, nothing to refuse and nothing to
    drop, and `request_head` would give the same bytes; every other request takes the full path
    (Framing, request_problem, request_head).
    """
    if url[:1] != b"/" or method == b"CONNECT":
        return None
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    host = None
    for low, name, value in headers:
        if low in _NOT_PLAIN:
            return None
        if low == b"host":
            if host is not None:
                return None
            host = value
        parts += (name, b": ", value, CRLF)
    if host is None or not _HOST.match(host):
        return None
    parts += (b"X-Forwarded-For: ", client_ip, b"\r\nX-Forwarded-Proto: ", proto, b"\r\n\r\n")
    return b"".join(parts)


def request_head(method: bytes, url: bytes, headers: list[Header], drop: frozenset[bytes], client_ip: bytes,
                 *, chunked: bool, trusted: bool, proto: bytes, upgrade: bytes = b"") -> bytes:
    """The head we send upstream: end-to-end fields, our forwarding fields, our framing.

    The client's own X-Forwarded-For is kept (and extended) only when it comes from a trusted proxy;
    from anyone else it is a claim we cannot check, so we replace it.
    """
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    xff = b""
    xproto = b""
    upgrade_value = b""
    for low, name, value in headers:
        if low == b"upgrade":
            upgrade_value = value
        if low in drop or low in UNDERSCORED:
            continue
        if low == b"x-forwarded-for":
            if trusted:
                xff = value if not xff else xff + b", " + value
            continue
        if low == b"x-forwarded-proto":
            if trusted and not xproto:
                xproto = value  # a trusted proxy in front terminated the client's connection: its word stands
            continue  # from anyone else: ours says how the client reached us; nobody may claim https
        if low in FORWARDING and not trusted:
            continue
        parts += (name, b": ", value, CRLF)
    parts += (b"X-Forwarded-For: ", (xff + b", " + client_ip) if xff else client_ip,
              b"\r\nX-Forwarded-Proto: ", xproto or proto, CRLF)
    if upgrade:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value, CRLF)
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(CRLF)
    return b"".join(parts)


def end_to_end_fields(headers: list[Header], drop: frozenset[bytes]) -> bytes:
    """The response fields that cross our hop, as lines ready for a head."""
    parts = []
    for low, name, value in headers:
        if low not in drop:
            parts += (name, b": ", value, CRLF)
    return b"".join(parts)


def plain_response_fields(headers: list[Header]) -> tuple[bytes, bool] | None:
    """(fields as lines, has Content-Length) for a response head with no hop-by-hop field; None otherwise.

    The common case, scanned once: with no hop-by-hop field, nothing is dropped, `Framing` would find
    neither chunking nor a `Connection` list, and every field crosses as it came.
    """
    parts = []
    length = False
    for low, name, value in headers:
        if low in HOP_BY_HOP:
            return None
        if low == b"content-length":
            length = True
        parts += (name, b": ", value, CRLF)
    return b"".join(parts), length


def upgrade_fields(headers: list[Header]) -> bytes:
    """What a 101 answer says about the switch: Connection and Upgrade are what the client waits for."""
    return b"Connection: Upgrade\r\n" + b"".join(b"Upgrade: %b\r\n" % v for low, _, v in headers if low == b"upgrade")


def response_head(status: int, reason: bytes, fields: bytes, *, chunked: bool, close: bool, keep_alive_10: bool,
                  extra: bytes | None = None) -> bytes:
    """A response head from its status line and the `fields` (lines) that cross, with our framing added."""
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason or b"-"), fields]
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if close:
        parts.append(b"Connection: close\r\n")
    elif keep_alive_10:
        parts.append(b"Connection: keep-alive\r\n")
    if extra:
        parts.append(extra)
    parts.append(CRLF)
    return b"".join(parts)


def simple_response(status: int, *, close: bool, retry_after: int | None = None) -> bytes:
    """A response the proxy makes itself (502, 503 …): a generic message; the details are logged, not sent."""
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}: {MESSAGES.get(status, 'the request failed')}\n".encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            + (f"Retry-After: {retry_after}\r\n" if retry_after is not None else "")
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()
    return head + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
