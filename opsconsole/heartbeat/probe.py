"""One HTTP health probe of one host: status, latency, and the version it reports."""

from __future__ import annotations

import time

import httpx

from opsconsole.config.model import HealthConfig
from opsconsole.events import HealthSample
from opsconsole.hosts import Host


def health_url(host: Host, health: HealthConfig) -> str:
    return f"http://{host.address}:{host.port}{health.path}"


async def probe_http(client: httpx.AsyncClient, host: Host, health: HealthConfig) -> HealthSample:
    """GET the health path; ok when the status matches. Never raises for network trouble."""
    if host.port is None:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error="host has no app port")
    started = time.monotonic()
    try:
        response = await client.get(health_url(host, health), timeout=health.timeout)
    except httpx.TimeoutException:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error=f"timed out after {health.timeout:g}s")
    except httpx.HTTPError as exc:
        return HealthSample(host=host.name, ok=False, status=None, latency=None, error=_short_error(exc))
    latency = time.monotonic() - started
    version = None
    if health.version_field:
        try:
            body = response.json()
            if isinstance(body, dict) and body.get(health.version_field) is not None:
                version = str(body[health.version_field])
        except ValueError:
            pass
    ok = response.status_code == health.status
    return HealthSample(host=host.name, ok=ok, status=response.status_code, latency=latency, version=version,
                        error="" if ok else f"status {response.status_code}, expected {health.status}")


def _short_error(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "connect" in type(exc).__name__.lower():
        return "connection refused" if "refused" in text.lower() else f"cannot connect: {text}"
    return text
