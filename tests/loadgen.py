"""A bounded GET load generator for tests: a few keep-alive clients, counting every failure.

Bounded in count and time: it stops at `max_requests` or `max_seconds`, whichever
comes first, or when told to. Traffic goes only to the URL given (loopback or a
lab namespace the tests made).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


class Load:
    def __init__(self, url: str, *, clients: int = 4, max_requests: int = 200_000, max_seconds: float = 120.0,
                 pause: float = 0.002) -> None:
        self.url = url
        self.clients = clients
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self.result = LoadResult()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> "Load":
        self._tasks = [asyncio.ensure_future(self._client()) for _ in range(self.clients)]
        return self

    async def more(self, count: int = 50, timeout: float = 30.0) -> None:
        """Until `count` more requests have been answered (ok or not): traffic has flowed for a while."""
        target = self.result.total + count
        async with asyncio.timeout(timeout):
            while self.result.total < target:
                if all(task.done() for task in self._tasks):
                    raise AssertionError(f"the load stopped at {self.result.total} requests")
                await asyncio.sleep(0.01)

    async def stop(self) -> LoadResult:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.result

    async def _client(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        async with httpx.AsyncClient(timeout=10.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline \
                    and self.result.total < self.max_requests:
                try:
                    response = await client.get(self.url)
                    if response.status_code == 200:
                        self.result.ok += 1
                        try:
                            self.result.versions[json.loads(response.content)["version"]] += 1
                        except (ValueError, KeyError, TypeError):
                            pass
                    else:
                        self.result.failures.append(f"status {response.status_code}")
                except httpx.HTTPError as exc:
                    self.result.failures.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.pause)
