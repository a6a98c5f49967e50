"""A real HTTP server on loopback whose behaviour a test can switch: ok, error status, hang, closed."""

from __future__ import annotations

import asyncio
import json


class SwitchableServer:
    """mode: "ok" (200 JSON with version), "error" (500), "hang" (accept, never answer), "closed" (not listening)."""

    def __init__(self, version: str = "v1") -> None:
        self.mode = "ok"
        self.version = version
        self.port = 0
        self.requests = 0
        self.connections = 0
        self.fail_next = 0  # answer this many requests with 500, then back to mode
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "SwitchableServer":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening (the port stays ours to reopen with start())."""
        if self._server is not None:
            self._server.close()
            # Python 3.11's Server.close() leaves open connections alone; a stopped server drops them.
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def set_mode(self, mode: str) -> None:
        if mode == "closed":
            await self.close()
        elif self._server is None:
            await self.start()
        self.mode = mode

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                self.requests += 1
                if self.mode == "hang":
                    await asyncio.sleep(3600)
                status = 200
                if self.fail_next > 0:
                    self.fail_next -= 1
                    status = 500
                elif self.mode == "error":
                    status = 500
                body = json.dumps({"status": "ok" if status == 200 else "bad", "version": self.version}).encode()
                reason = b"OK" if status == 200 else b"Internal Server Error"
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, reason, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
