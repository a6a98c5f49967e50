"""HTTP/1.1 message heads for the proxy: what crosses a hop and what does not (RFC 9110 §7.6.1).

Headers travel as (lowercased name, name, value) triples: each name is lowercased
once, when parsed, because every step after that compares names.
"""

from __future__ import annotations

Header = tuple[bytes, bytes, bytes]

# Hop-by-hop fields: they describe one connection, never the message, so each side sets its own.
# Transfer-Encoding is here because we re-frame bodies ourselves (chunked in, chunked out).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
_PLAIN_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade", b"te"})
_NO_BODY_STATUS = frozenset({204, 304})
CRLF = b"\r\n"


class Framing:
    """What a head says about its connection and body, found in one pass."""

    __slots__ = ("drop", "chunked", "length")

    def __init__(self, headers: list[Header]) -> None:
        self.chunked = False
        self.length = False
        drop = HOP_BY_HOP
        for low, _, value in headers:
            if low == b"transfer-encoding":
                self.chunked = self.chunked or b"chunked" in value.lower()
            elif low == b"content-length":
                self.length = True
            elif low == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",") if t.strip()}
                if not tokens <= _PLAIN_TOKENS:
                    drop = drop | tokens  # fields named in Connection are hop-by-hop too
        self.drop = drop


def request_head(method: bytes, url: bytes, headers: list[Header], drop: frozenset[bytes], client_ip: bytes,
                 *, chunked: bool) -> bytes:
    """The head we send upstream: end-to-end fields, our forwarding fields, our framing."""
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    xff = b""
    for low, name, value in headers:
        if low in drop:
            continue
        if low == b"x-forwarded-for":
            xff = value if not xff else xff + b", " + value
            continue
        if low == b"x-forwarded-proto":
            # We are the edge and speak plain HTTP; a client must not be able to claim https.
            continue
        parts += (name, b": ", value, CRLF)
    parts += (b"X-Forwarded-For: ", (xff + b", " + client_ip) if xff else client_ip,
              b"\r\nX-Forwarded-Proto: http\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(CRLF)
    return b"".join(parts)


def response_head(status: int, reason: bytes, headers: list[Header], drop: frozenset[bytes], *, chunked: bool,
                  close: bool, keep_alive_10: bool, extra: bytes | None = None) -> bytes:
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason or b"-")]
    for low, name, value in headers:
        if low not in drop:
            parts += (name, b": ", value, CRLF)
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


def has_no_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200


def simple_response(status: int, reason: str, message: str, *, close: bool) -> bytes:
    """A response the proxy makes itself (502, 503 …), with a message that says what happened."""
    body = (message.rstrip("\n") + "\n").encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()
    return head + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
