"""HTTP/1.1 message heads for the proxy: what crosses a hop and what does not (RFC 9110 §7.6.1)."""

from __future__ import annotations

# Hop-by-hop fields: they describe one connection, never the message, so each side sets its own.
# Transfer-Encoding is here because we re-frame bodies ourselves (chunked in, chunked out).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
_NO_BODY_STATUS = frozenset({204, 304})
CRLF = b"\r\n"


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Field names listed in Connection: they are hop-by-hop too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def request_head(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], client_ip: str, *, chunked: bool) -> bytes:
    """The head we send upstream: end-to-end fields, our forwarding fields, our framing."""
    drop = HOP_BY_HOP | connection_tokens(headers)
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    xff = b""
    for name, value in headers:
        low = name.lower()
        if low in drop:
            continue
        if low == b"x-forwarded-for":
            xff = value if not xff else xff + b", " + value
            continue
        if low == b"x-forwarded-proto":
            # We are the edge and speak plain HTTP; a client must not be able to claim https.
            continue
        parts += (name, b": ", value, CRLF)
    ip = client_ip.encode()
    parts += (b"X-Forwarded-For: ", (xff + b", " + ip) if xff else ip, CRLF, b"X-Forwarded-Proto: http\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(CRLF)
    return b"".join(parts)


def response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], *, chunked: bool,
                  close: bool, keep_alive_10: bool, extra: list[bytes] | None = None) -> bytes:
    drop = HOP_BY_HOP | connection_tokens(headers)
    parts = [b"HTTP/1.1 %d " % status, reason or b"-", CRLF]
    for name, value in headers:
        if name.lower() not in drop:
            parts += (name, b": ", value, CRLF)
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if close:
        parts.append(b"Connection: close\r\n")
    elif keep_alive_10:
        parts.append(b"Connection: keep-alive\r\n")
    if extra:
        parts.extend(extra)
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
