"""The whole-read path (a plain GET, a plain answer, each taken in one match) against the parser path.

For every request and answer below, the proxy is run twice on in-memory transports: once as shipped, once
with the whole-read matchers switched off, so every byte goes through httptools. What the member receives,
what the client receives and whether the member connection is kept must be the same, byte for byte. Each
case also says whether the matcher must take it, so a matcher that silently stopped matching (the benchmark
figure gone) or started taking a hostile head fails here. The hostile heads are also sent over real sockets in
test_proxy_hostile.py.
"""

from __future__ import annotations

import asyncio

import pytest

from opsconsole.proxy import http1
from proxy_memory import memory_proxy

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n"

# (name, bytes a client sends, taken by the whole-read matcher)
REQUESTS = [
    ("wrk's GET", b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", True),
    ("a browser's GET", b"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: app.example\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
     b"Accept: text/html,*/*;q=0.8\r\nCookie: a=b; c=d\r\nAccept-Language: en-GB,en;q=0.5\r\n\r\n", True),
    ("an IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", True),
    ("a field named with an underscore (any: left to the parser)", b"GET / HTTP/1.1\r\nHost: a\r\nMy_Field: 1\r\n\r\n", False),
    ("Host not first, odd case", b"GET / HTTP/1.1\r\nAccept: */*\r\nhOsT: a\r\n\r\n", True),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", False),
    ("two Hosts, the second upper-case", b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nHOST: b\r\n\r\n", False),
    ("a space in Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", False),
    ("an empty Host (RFC 9112 §3.2 allows it; forwarded alike)", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", True),
    ("no Host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", False),
    ("an invalid Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", False),
    ("absolute-form", b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("a client's X-Forwarded-For", b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", False),
    ("its underscore spelling", b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n", False),
    ("a client's X-Forwarded-Proto", b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n", False),
    ("Forwarded", b"GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=1.2.3.4\r\n\r\n", False),
    ("Content-Length on a GET", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", False),
    ("a smuggled request in a GET body",
     b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("Transfer-Encoding on a GET", b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("Connection naming Content-Length", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n", False),
    ("Connection: close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
    ("an upgrade", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", False),
    ("HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", False),
    ("a POST", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", False),
    ("a HEAD", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("no space after the colon", b"GET / HTTP/1.1\r\nHost:a\r\n\r\n", False),
    ("padding around a value", b"GET / HTTP/1.1\r\nHost: a \r\nAccept:  */*\r\n\r\n", False),
    ("a tab in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc\r\n\r\n", False),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", False),
    ("obs-text", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", False),
    ("a bare LF", b"GET / HTTP/1.1\nHost: a\n\n", False),
    ("a space before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", False),
    ("an empty value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty: \r\n\r\n", False),
    ("a fragment in the target", b"GET /#x HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("a quote in the target", b"GET /\"x HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("leading CRLF", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", False),
    ("a head cut short", b"GET / HTTP/1.1\r\nHost: a\r\n", False),
]
# (name, bytes the member answers, taken by the whole-read matcher)
ANSWERS = [
    ("a plain 200", ANSWER, True),
    ("a 404 with more fields", b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nServer: x\r\nSet-Cookie: a=b; Path=/\r\n"
     b"\r\nno!", True),
    ("a 503", b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", True),
    ("Content-Length with leading zeros", b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok", True),
    ("a 204", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", False),
    ("a 304", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n", False),
    ("a 100 then a 200 in one read", b"HTTP/1.1 100 Continue\r\n\r\n" + ANSWER, False),
    ("an empty value", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Empty: \r\n\r\nok", False),
    ("two Content-Lengths, one upper-case", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\nCONTENT-LENGTH: 2\r\n\r\nok",
     False),
    ("Transfer-Encoding after Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", False),
    ("two Content-Lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", False),
    ("Content-Length with a sign", b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", False),
    ("more bytes than declared", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", False),
    ("fewer bytes than declared (the rest comes later)", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok", False),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
    ("Connection: close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
    ("Keep-Alive", b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok", False),
    ("no Content-Length (ends at close)", b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nok", False),
    ("HTTP/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ("no reason", b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", False),
    ("a status out of range", b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", False),
    ("padding around a value", b"HTTP/1.1 200 OK\r\nContent-Length:  2\r\n\r\nok", False),
    ("obs-text", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: caf\xc3\xa9\r\n\r\nok", False),
]


async def exchange(requests: list[bytes], answers: list[list[bytes]], **proxy_options: object) -> list[object]:
    """Send the client's reads, answer each request that reaches the member with the next answer's reads."""
    p = memory_proxy(**proxy_options)
    seen: list[object] = []
    todo = list(answers)
    for data in requests:
        p.client.data_received(data)
        await asyncio.sleep(0)  # a loop pass: the proxy writes its answers at the end of one
        while True:
            upstream = p.upstream_transport.take()
            if upstream:
                seen.append(("member got", upstream))
            if not upstream or not todo:
                break
            for piece in todo.pop(0):
                if not p.upstream.closed:
                    p.upstream.data_received(piece)
            await asyncio.sleep(0)
            seen.append(("client got", p.client_transport.take()))
        seen.append(("client got", p.client_transport.take()))
    seen.append(("kept", not p.upstream.closed and p.upstream in p.upstream.member.idle,
                 "client closed", p.client_transport.closing))
    stats = p.upstream.member.stats
    seen.append(("counted", stats.requests, stats.errors, dict(p.fe.app.answers)))
    return seen


async def both_ways(requests: list[bytes], answers: list[list[bytes]], **proxy_options: object) -> list[object]:
    """The exchange with the whole-read path and with the parser alone; they must be the same."""
    results = {}
    for mode in ("whole-read", "parser"):
        with pytest.MonkeyPatch.context() as mp:
            if mode == "parser":
                mp.setattr(http1, "whole_plain_get", lambda data, pos, limit: None)
                mp.setattr(http1, "whole_plain_answer", lambda data: 0)
            results[mode] = await exchange(requests, answers, **proxy_options)
    assert results["whole-read"] == results["parser"]
    return results["parser"]


@pytest.mark.parametrize("name,data,fast", REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_requests_are_forwarded_the_same_by_either_path(name: str, data: bytes, fast: bool) -> None:
    assert (http1.whole_plain_get(data, 0, 32768) is not None) == fast, "the matcher's verdict changed"
    # The request in one read, then a plain GET: the connection is still in step (or was closed alike).
    seen = await both_ways([data, GET], [[ANSWER], [ANSWER]])
    if fast:
        assert seen[0][0] == "member got"
        assert b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n" in seen[0][1]


@pytest.mark.parametrize("name,data,fast", ANSWERS, ids=[a[0] for a in ANSWERS])
async def test_answers_are_relayed_the_same_by_either_path(name: str, data: bytes, fast: bool) -> None:
    assert bool(http1.whole_plain_answer(data)) == fast, "the matcher's verdict changed"
    # The answer in one read; then, if the connection was kept, a second exchange on it.
    seen = await both_ways([GET, GET], [[data], [ANSWER]])
    if fast:
        assert ("client got", data) in seen, "a plain answer crosses as it came"


async def test_pipelined_plain_and_other_requests_keep_their_order() -> None:
    """Plain GETs taken whole, then one that needs the parser, then plain ones again, in one read."""
    post = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
    pipeline = GET + GET.replace(b"/", b"/2", 1) + post + GET.replace(b"/", b"/3", 1)
    seen = await both_ways([pipeline], [[ANSWER]] * 4)
    sent = [item[1] for item in seen if item[0] == "member got"]
    assert [s.split(b" ")[:2] for s in sent] == [[b"GET", b"/"], [b"GET", b"/2"], [b"POST", b"/p"], [b"GET", b"/3"]]


async def test_a_plain_answer_to_a_closing_client_still_says_close() -> None:
    """An HTTP/1.0 client (or one that asked to close) needs our Connection: close, so its answer is parsed."""
    for request in (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"):
        seen = await exchange([request], [[ANSWER]])
        answered = b"".join(item[1] for item in seen if item[0] == "client got")
        assert answered.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in answered, answered


async def test_a_body_that_looks_like_an_answer_after_an_interim_one_is_body() -> None:
    """103 Early Hints and the final head in one read, then a read of body that is itself a whole answer.

    The parser is mid-body then: taken for a whole answer, the member connection would go back to the pool
    with 74 body bytes still due, and they would reach the next client as its answer (found by review).
    """
    fake = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    rest = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nSet-Cookie: session=attacker\r\n\r\npwned!"
    first = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (
        len(fake) + len(rest))
    assert http1.whole_plain_answer(fake), "the middle read must look like a whole answer for this test to mean anything"
    seen = await both_ways([GET, GET.replace(b"/", b"/account", 1)], [[first, fake, rest], [ANSWER]])
    answers = [item[1] for item in seen if item[0] == "client got" and item[1]]
    assert answers[0].endswith(fake + rest) and answers[1] == ANSWER, answers


async def test_connection_close_in_trailers_ends_the_connection_for_every_path() -> None:
    """llhttp reads Connection: close in chunked trailers too, and refuses what follows; so must we."""
    post = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\nConnection: close\r\n\r\n")
    seen = await both_ways([post, GET], [[ANSWER], [ANSWER]])
    assert sum(1 for item in seen if item[0] == "member got") == 1, seen


async def test_heads_past_the_whole_read_bound_are_left_to_the_parser() -> None:
    """The matcher looks at WHOLE_HEAD_MAX bytes at most; a longer plain head is the parser's, forwarded alike,
    and a head over a smaller max_head_bytes gets its 431 either way."""
    big = GET.replace(b"\r\n\r\n", b"\r\nCookie: " + b"c" * http1.WHOLE_HEAD_MAX + b"\r\n\r\n")
    assert http1.whole_plain_get(big, 0, 1 << 20) is not None  # plain: only its size keeps it from the matcher
    assert http1.whole_plain_get(big, 0, http1.WHOLE_HEAD_MAX) is None
    seen = await both_ways([big], [[ANSWER]])
    assert seen[0][0] == "member got" and big.split(b"\r\n")[2] in seen[0][1]
    mid = GET.replace(b"\r\n\r\n", b"\r\nCookie: " + b"c" * 1100 + b"\r\n\r\n")
    seen = await both_ways([mid], [[ANSWER]], max_head_bytes=1024)
    assert ("client got", b"") != seen[0] and b"431" in b"".join(item[1] for item in seen if item[0] == "client got")


async def test_a_reload_to_a_sticky_split_reaches_connections_already_open() -> None:
    """After `split: sticky` is loaded, a plain GET on a kept-alive connection gets its pool cookie."""
    import dataclasses

    from opsconsole.proxy.config import ProxyConfig

    p = memory_proxy()
    p.client.data_received(GET)
    await asyncio.sleep(0)
    p.upstream.data_received(ANSWER)
    await asyncio.sleep(0)
    assert b"Set-Cookie" not in p.client_transport.take()
    sticky = dataclasses.replace(p.fe.cfg, split="sticky")
    p.fe.configure(sticky, ProxyConfig(frontends={"bench": sticky}, upstream_idle=30.0))
    p.client.data_received(GET)
    await asyncio.sleep(0)
    p.upstream.data_received(ANSWER)
    await asyncio.sleep(0)
    assert b"Set-Cookie: " in p.client_transport.take()
