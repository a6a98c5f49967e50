"""A lean HTTP/1.1 GET prober on bare asyncio streams, behind the same probe interface.

Why it exists: httpx's connection pool costs a lot of CPU per request at high
concurrency (httpx issue #3215). A health probe needs only GET, a status line,
a Content-Length body and one kept-alive connection per endpoint, which this
does in a few dozen lines. `bench/bench_heartbeat.py` measures both.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse

from opsconsole.config.model import HealthConfig
from opsconsole.events import HealthSample
from opsconsole.heartbeat.probe import Prober, _os_error, judge_answer
from opsconsole.hosts import Host

MAX_HEAD = 16 * 1024
MAX_BODY = 256 * 1024


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class BadAnswer(Exception):
    pass


class RawProber(Prober):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._idle: dict[tuple[str, int], _Conn] = {}

    async def aclose(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()
        await super().aclose()

    async def http_probe(self, host: Host, check: HealthConfig, url: str) -> HealthSample:
        if not url.startswith("http://"):
            return await super().http_probe(host, check, url)  # https: httpx does TLS properly
        parts = urllib.parse.urlsplit(url)
        address, port = parts.hostname or host.address, parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        started = time.monotonic()
        try:
            async with asyncio.timeout(check.timeout):
                status, body = await self._get(address, port, target or "/")
        except TimeoutError:
            return HealthSample(host=host.name, ok=False, status=None, latency=None,
                                error=f"timed out after {check.timeout:g}s")
        except OSError as exc:
            return HealthSample(host=host.name, ok=False, status=None, latency=None, error=_os_error(exc))
        except (BadAnswer, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            return HealthSample(host=host.name, ok=False, status=None, latency=None, error=f"bad answer: {exc}")
        return judge_answer(host, check, status, body, time.monotonic() - started)

    async def _get(self, address: str, port: int, target: str) -> tuple[int, bytes]:
        key = (address, port)
        conn = self._idle.pop(key, None)
        if conn is not None:
            try:
                return await self._exchange(key, conn, target)
            except (OSError, asyncio.IncompleteReadError):
                conn.close()  # the server closed the idle connection: one fresh try below
        reader, writer = await asyncio.open_connection(address, port)
        return await self._exchange(key, _Conn(reader, writer), target)

    async def _exchange(self, key: tuple[str, int], conn: _Conn, target: str) -> tuple[int, bytes]:
        host_header = f"{key[0]}:{key[1]}"
        conn.writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: opsconsole-heartbeat\r\n"
                          f"Accept: */*\r\n\r\n".encode())
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            conn.close()
            raise BadAnswer("response head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            conn.close()
            raise BadAnswer(f"not HTTP: {lines[0][:60]!r}")
        status = int(rest[:3])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY:
                conn.close()
                raise BadAnswer(f"body of {length} bytes is too large for a health check")
            body = await conn.reader.readexactly(length)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(conn.reader)
        else:
            body = await conn.reader.read(MAX_BODY)
            keep = False
        if keep:
            self._idle[key] = conn
        else:
            conn.close()
        return status, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise BadAnswer("chunked body too large for a health check")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
