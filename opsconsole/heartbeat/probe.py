"""One health probe of one host: HTTP GET (status, body, version) or a TCP connect.

Probes never raise for network trouble: every outcome is a HealthSample, so a
monitor cycle cannot be broken by one bad host.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import httpx

from opsconsole.config.model import HealthConfig
from opsconsole.events import HealthSample
from opsconsole.hosts import Host

# Where to connect for (host, port): the host's own address, or a local end of an SSH forward
# when the host sits behind a jump host.
Endpoint = Callable[[Host, int], Awaitable[tuple[str, int]]]


async def direct_endpoint(host: Host, port: int) -> tuple[str, int]:
    return host.address, port


@dataclass(frozen=True)
class ProbeTarget:
    host: Host
    check: HealthConfig

    @property
    def port(self) -> int | None:
        return self.check.port or self.host.port


def health_url(host: Host, health: HealthConfig, address: str | None = None, port: int | None = None) -> str:
    return f"http://{address or host.address}:{port or health.port or host.port}{health.path}"


class Prober:
    """Probes targets with one shared httpx client (connection reuse across cycles)."""

    def __init__(self, client: httpx.AsyncClient | None = None, endpoint: Endpoint = direct_endpoint) -> None:
        self._client = client
        self._own_client = client is None
        self.endpoint = endpoint

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Keep-alive connections are the point: a probe every 2.5 s should not pay a handshake each time.
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=2000))
        return self._client

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def probe(self, target: ProbeTarget) -> HealthSample:
        host, check = target.host, target.check
        if target.port is None:
            return HealthSample(host=host.name, ok=False, status=None, latency=None, error="host has no port to probe")
        try:
            address, port = await self.endpoint(host, target.port)
        except Exception as exc:  # an SSH forward that cannot be opened is a failed probe, not a crash
            return HealthSample(host=host.name, ok=False, status=None, latency=None, error=f"no route to host: {exc}")
        if check.kind == "tcp":
            return await _probe_tcp(host, address, port, check)
        return await self.http_probe(host, check, health_url(host, check, address, port))

    async def http_probe(self, host: Host, check: HealthConfig, url: str) -> HealthSample:
        return await _probe_http(self.client, host, check, url)


async def _probe_tcp(host: Host, address: str, port: int, check: HealthConfig) -> HealthSample:
    started = time.monotonic()
    try:
        async with asyncio.timeout(check.timeout):
            _, writer = await asyncio.open_connection(address, port)
    except TimeoutError:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error=f"timed out after {check.timeout:g}s")
    except OSError as exc:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error=_os_error(exc))
    latency = time.monotonic() - started
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return HealthSample(host=host.name, ok=True, status=None, latency=latency)


async def _probe_http(client: httpx.AsyncClient, host: Host, check: HealthConfig, url: str) -> HealthSample:
    started = time.monotonic()
    try:
        response = await client.get(url, timeout=check.timeout)
    except httpx.TimeoutException:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error=f"timed out after {check.timeout:g}s")
    except httpx.HTTPError as exc:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error=_short_error(exc))
    return judge_answer(host, check, response.status_code, response.content, time.monotonic() - started)


def judge_answer(host: Host, check: HealthConfig, status: int, body: bytes, latency: float) -> HealthSample:
    """Turn an HTTP answer into a sample: expected status, body substring, reported version."""
    version = None
    if check.version_field:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get(check.version_field) is not None:
                version = str(data[check.version_field])
        except ValueError:
            pass
    error = ""
    if status != check.status:
        error = f"status {status}, expected {check.status}"
    elif check.body is not None and check.body not in body.decode(errors="replace"):
        error = f"answer lacks {check.body!r}"
    return HealthSample(host=host.name, ok=not error, status=status, latency=latency, version=version, error=error)


def _os_error(exc: OSError) -> str:
    """`connection refused`, `no route to host` …: the words operators know, not asyncio's wrapping."""
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _short_error(exc: BaseException) -> str:
    # httpx hides the socket error behind "All connection attempts failed"; the cause says what happened.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return _os_error(cause)
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"bad answer: {text}"
    return text
