"""The admin API: state, weights, drain/enable/disable, alert, metrics. Loopback or unix socket, bearer token.

A bad request changes nothing: every input is validated before any state is
touched, and the answer says what was wrong.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
from typing import Any, Callable

import httptools

from opsconsole.proxy.balancer import DISABLED, DRAINING, ENABLED, AppState
from opsconsole.proxy.config import Listen, MemberConfig
from opsconsole.proxy.members import USAGE, member_configs

MAX_BODY = 64 * 1024
MAX_HEAD = 8 * 1024  # the admin API's requests are small; a larger head is refused before it is buffered
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 413: "Payload Too Large", 431: "Request Header Fields Too Large"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Parsed:
    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.complete = False
        self.too_big = False
        self.head_done = False
        self.head_bytes = 0  # the head's parsed size: a head that arrived whole in one read is counted too
        self.begun = 0  # messages begun in this parse: a second one is a pipelined request

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value
        self.head_bytes += len(name) + len(value) + 4

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_BODY:
            self.too_big = True
        else:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Answer `status` with `message` and end the connection: nothing of the request is acted on."""
    body = _json({"error": message})
    writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()


class AdminApi:
    def __init__(self, token: str, apps: Callable[[], dict[str, AppState]], *, metrics: Callable[[], str],
                 state: Callable[[], dict], reload: Callable[[], str], drain_timeout: Callable[[], float],
                 members_changed: Callable[[], None], frontends: Callable[[], dict[str, dict]]) -> None:
        self._token = token.encode()
        self._frontends = frontends  # app -> where its frontend listens (host, port; or unix)
        self._members_changed = members_changed  # the health checker starts/stops checks
        self._apps = apps
        self._metrics = metrics
        self._state = state
        self._reload = reload
        self._drain_timeout = drain_timeout
        self.server: asyncio.AbstractServer | None = None

    async def start(self, listen: Listen) -> str:
        """Listen and return the URL (`http://127.0.0.1:PORT` or `unix:/path`)."""
        if listen.unix:
            import os

            if os.path.exists(listen.unix):
                os.unlink(listen.unix)  # a stale socket from a killed proxy
            old = os.umask(0o077)  # only our user may talk to the socket, token or not
            try:
                self.server = await asyncio.start_unix_server(self._serve, listen.unix)
            finally:
                os.umask(old)
            return f"unix:{listen.unix}"
        self.server = await asyncio.start_server(self._serve, listen.host, listen.port)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                msg = _Parsed()
                parser = httptools.HttpRequestParser(msg)
                head = 0
                while not msg.complete:
                    async with asyncio.timeout(60):
                        data = await reader.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                    if not msg.head_done:
                        head += len(data)
                    if head > MAX_HEAD or msg.head_bytes > MAX_HEAD:
                        await _refuse(writer, 431, f"request head over {MAX_HEAD} bytes")
                        return
                    if msg.begun > 1:
                        # A second request in the same read would be parsed into this one's URL and fields
                        # (and ride on its token): the API's clients send one at a time, so refuse both.
                        await _refuse(writer, 400, "pipelined requests are not supported: send one at a time")
                        return
                method = parser.get_method().decode()
                keep = parser.should_keep_alive()
                if msg.too_big:
                    status, body, ctype = 413, _json({"error": f"request body over {MAX_BODY} bytes"}), "application/json"
                else:
                    status, body, ctype = self._handle(method, msg)
                head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\n")
                if status == 401:
                    head += 'WWW-Authenticate: Bearer realm="opsconsole-proxy"\r\n'
                head += "\r\n" if keep else "Connection: close\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
                if not keep:
                    return
        except (httptools.HttpParserError, TimeoutError, ConnectionError):
            return
        except asyncio.CancelledError:
            return  # the proxy is stopping: a console's open admin connection ends with it, quietly
        finally:
            writer.close()

    def _handle(self, method: str, msg: _Parsed) -> tuple[int, bytes, str]:
        try:
            self._authorize(msg.headers.get(b"authorization", b""))
            path = httptools.parse_url(msg.url).path.decode(errors="replace") if msg.url.startswith(b"/") else "/"
            if path == "/metrics" and method == "GET":
                return 200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
            result = self._route(method, [p for p in path.split("/") if p], msg.body)
            return 200, _json(result), "application/json"
        except ApiError as exc:
            return exc.status, _json({"error": str(exc)}), "application/json"

    def _authorize(self, header: bytes) -> None:
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        # Constant-time, so the token cannot be guessed byte by byte from response times.
        if not hmac.compare_digest(given.strip(), self._token):
            raise ApiError(401, "bad token")

    def _route(self, method: str, parts: list[str], body: bytes) -> Any:
        if parts == ["state"] and method == "GET":
            return self._state()
        if parts == ["reload"] and method == "POST":
            return {"reloaded": self._reload()}
        if len(parts) >= 2 and parts[0] == "apps":
            app = self._app(parts[1])
            rest = parts[2:]
            if rest == [] and method == "GET":
                return app.to_dict(self._drain_timeout())
            if rest == ["weights"] and method in ("PUT", "POST"):
                return self._set_weights(app, _body(body))
            if len(rest) == 3 and rest[0] == "pools" and rest[2] == "weight" and method in ("PUT", "POST"):
                self._pool(app, rest[1])
                data = _body(body)
                if set(data) != {"weight"}:
                    raise ApiError(400, 'send {"weight": N} with N from 0 to 100')
                return self._set_weights(app, {rest[1]: data["weight"]})
            if len(rest) == 3 and rest[0] == "pools" and rest[2] == "members" and method in ("PUT", "POST"):
                self._pool(app, rest[1])
                return self._set_members(app, rest[1], _body(body))
            if rest == ["alert", "clear"] and method == "POST":
                return {"cleared": app.clear_alert(), **app.to_dict(self._drain_timeout())}
            if len(rest) >= 2 and rest[0] == "members":
                member = app.members.get(rest[1])
                if member is None:
                    raise ApiError(404, f"app {app.name} has no member {rest[1]!r} (members: {', '.join(app.members)})")
                if len(rest) == 2 and method == "GET":
                    return member.to_dict(self._drain_timeout())
                actions = {"drain": DRAINING, "enable": ENABLED, "disable": DISABLED}
                if len(rest) == 3 and rest[2] in actions and method == "POST":
                    app.set_admin(member, actions[rest[2]])
                    return member.to_dict(self._drain_timeout())
        if parts and parts[0] in ("state", "reload", "apps", "metrics"):
            raise ApiError(405 if not (len(parts) >= 2 and parts[0] == "apps") else 404,
                           f"no {method} on /{'/'.join(parts)}")
        raise ApiError(404, f"no such endpoint: /{'/'.join(parts)} (see GET /state, /metrics, /apps/APP)")

    def _app(self, name: str) -> AppState:
        apps = self._apps()
        if name not in apps:
            raise ApiError(404, f"no app {name!r} (apps: {', '.join(apps)})")
        return apps[name]

    def _pool(self, app: AppState, name: str) -> None:
        if name not in app.pools:
            raise ApiError(404, f"app {app.name} has no pool {name!r} (pools: {', '.join(app.pools)})")

    def _set_weights(self, app: AppState, weights: dict) -> dict:
        if not weights:
            raise ApiError(400, 'send {"stable": N, "canary": M} with weights from 0 to 100')
        for pool, w in weights.items():
            self._pool(app, pool)
            if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
                raise ApiError(400, f"weight of pool {pool} must be a whole number from 0 to 100; got {w!r}")
        # All validated: apply together, so no request sees half of a change.
        app.set_weights(dict(weights))
        app.log(f"{app.name}: weights " + ", ".join(f"{p}={w}" for p, w in weights.items()))
        return app.to_dict(self._drain_timeout())


    def _own_listeners(self) -> list[tuple[str, int]]:
        """(address, port) of this proxy's admin API and frontends: no member may point back at them."""
        own = [tuple(sock.getsockname()[:2]) for sock in (self.server.sockets if self.server else ())
               if sock.family in (socket.AF_INET, socket.AF_INET6)]
        own += [(b["host"], b["port"]) for b in self._frontends().values() if "port" in b]
        return own  # type: ignore[return-value]

    def _set_members(self, app: AppState, pool: str, data: dict) -> dict:
        wanted = _member_list(app, pool, data, self._own_listeners())
        # All validated: one swap, so no request sees half of the new set.
        app.set_members(pool, wanted)
        self._members_changed()
        return app.to_dict(self._drain_timeout())


def _member_list(app: AppState, pool: str, data: dict, own: list[tuple[str, int]]) -> list[MemberConfig]:
    """The body's member list checked whole: ApiError(400) naming the entry at fault, before anything changes."""
    if set(data) != {"members"}:
        raise ApiError(400, USAGE)
    others = {m.name for m in app.members.values() if m.pool != pool and not m.removed}
    try:
        return member_configs(data["members"], taken=others, own=own)
    except ValueError as exc:
        raise ApiError(400, f"app {app.name} pool {pool}: {exc}") from None


def _body(body: bytes) -> dict:
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser's stack
        raise ApiError(400, "the body must be JSON (an object, not nested thousands deep)") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
