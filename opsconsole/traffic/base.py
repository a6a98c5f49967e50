"""One traffic interface, two drivers (the embedded proxy's admin API, HAProxy's runtime API).

Rollouts and the canary control only ever see `TrafficDriver` and the frozen
snapshots below, so a canary step reads the same whichever proxy is in front.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
import abc
import asyncio
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from opsconsole.proxy.config import MemberConfig

# One member a runtime member set names: an IP address and port (e.g. a ready EndpointSlice endpoint) — the
# proxy config's own member type, so the traffic interface and the proxy speak of members the same way.
Endpoint = MemberConfig

POOLS = ("stable", "canary")


class TrafficError(OperatorError):
    """The proxy refused or could not do what was asked; the message says which and why."""


class TrafficNotFound(TrafficError):
    """No such app, pool or member."""


class TrafficBadRequest(TrafficError):
    """A value out of range (e.g. a weight outside 0-100); nothing was changed."""


class TrafficUnavailable(TrafficError):
    """The proxy cannot be reached (not running, wrong address, socket missing)."""


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative-free bucket counts: counts[i] requests took at most bounds[i]; the last count is above every bound."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float = 0.0  # sum of all latencies, seconds

    def minus(self, older: "LatencyHistogram") -> "LatencyHistogram":
        """The requests between two snapshots (for a canary step's window)."""
        return LatencyHistogram(self.bounds, tuple(a - b for a, b in zip(self.counts, older.counts)), self.total - older.total)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The bucket bound that `q` of requests stayed under (an upper estimate); None with no requests."""
        n = self.count
        if n == 0:
            return None
        rank = q * n
        seen = 0
        for bound, c in zip(self.bounds + (float("inf"),), self.counts):
            seen += c
            if seen >= rank:
                return bound
        return float("inf")


@dataclass(frozen=True)
class Counters:
    requests: int = 0
    errors: int = 0  # upstream failures and 5xx answers (some were retried and never reached a client)
    retries: int = 0
    responses_5xx: int = 0
    failed: int = 0  # client-visible failures: 5xx relayed or answered by the proxy, responses cut short
    latency: LatencyHistogram | None = None  # embedded proxy: full histogram
    avg_response_time: float | None = None  # HAProxy: average over its last 1024 requests (no percentiles there)

    def minus(self, older: "Counters") -> "Counters":
        lat = self.latency.minus(older.latency) if self.latency and older.latency else self.latency
        return Counters(self.requests - older.requests, self.errors - older.errors, self.retries - older.retries,
                        self.responses_5xx - older.responses_5xx, lat, self.avg_response_time,
                        self.failed - older.failed)

    @property
    def error_rate(self) -> float | None:
        return None if self.requests == 0 else self.errors / self.requests

    def p95(self) -> float | None:
        return self.latency.quantile(0.95) if self.latency else self.avg_response_time


@dataclass(frozen=True)
class MemberTraffic:
    name: str
    pool: str
    address: str
    port: int
    weight: int
    healthy: bool
    admin: str  # enabled | draining | disabled
    inflight: int
    drained: bool  # not enabled and nothing in flight (or the drain timed out)
    counters: Counters = field(default_factory=Counters)
    check: str = ""  # what the last health check said
    ejected: bool = False  # out because live traffic failed on it (outlier detection), not by its checks
    tunnels: int = 0  # WebSocket tunnels open to it
    removed: bool = False  # taken out of its pool's member set: draining until it is gone


@dataclass(frozen=True)
class PoolTraffic:
    name: str
    weight: int  # what the operator set (0-100)
    effective_weight: int  # what is in use: 0 when no member is healthy or the canary alert holds it
    members: tuple[MemberTraffic, ...]
    counters: Counters = field(default_factory=Counters)
    panic: bool = False  # no healthy member: the proxy balances across all of them rather than refuse everyone
    queue: int = 0  # requests waiting now for a free member slot
    queued: int = 0  # requests that ever waited


@dataclass(frozen=True)
class TrafficAlert:
    reason: str
    since: float


@dataclass(frozen=True)
class AppTraffic:
    app: str
    split: str  # request | sticky
    canary_percent: float | None  # the canary's share now; None when no pool can take traffic
    alert: TrafficAlert | None
    pools: Mapping[str, PoolTraffic]
    client_errors: int = 0  # client-visible failures the proxy answered itself or cut (5xx, cut)
    answers: Mapping[str, int] = field(default_factory=dict)  # status the proxy answered itself ("503", "cut") → count
    tunnels_open: int = 0
    tunnels_total: int = 0

    @property
    def panic_pools(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pools.values() if p.panic)

    def member(self, name: str) -> MemberTraffic:
        for pool in self.pools.values():
            for m in pool.members:
                if m.name == name:
                    return m
        raise TrafficNotFound(f"app {self.app} has no member {name!r}")


@dataclass(frozen=True)
class TrafficState:
    driver: str  # embedded | haproxy
    apps: Mapping[str, AppTraffic]
    at: float = field(default_factory=time.time)
    # Which proxy process answered (embedded: "PID@START-TIME"): another value means it restarted since.
    instance: str | None = None


class TrafficDriver(abc.ABC):
    """Read and steer the proxy. Every method raises TrafficError subclasses with a message for the operator."""

    name: str = "?"

    @abc.abstractmethod
    async def state(self) -> TrafficState:
        """Every app's pools, members, weights, counters and alert."""

    async def app(self, app: str) -> AppTraffic:
        st = await self.state()
        if app not in st.apps:
            raise TrafficNotFound(f"the proxy has no app {app!r} (apps: {', '.join(st.apps)})")
        return st.apps[app]

    @abc.abstractmethod
    async def set_weights(self, app: str, weights: Mapping[str, int]) -> AppTraffic:
        """Set pool weights (0-100) together; all are checked before any is applied."""

    async def set_pool_weight(self, app: str, pool: str, weight: int) -> AppTraffic:
        return await self.set_weights(app, {pool: weight})

    async def set_canary_percent(self, app: str, percent: int) -> AppTraffic:
        """The canary gets `percent` of traffic, stable the rest (`canary APP weight N`)."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise TrafficBadRequest(f"canary weight must be a whole number from 0 to 100; got {percent!r}")
        return await self.set_weights(app, {"stable": 100 - percent, "canary": percent})

    @abc.abstractmethod
    async def drain(self, app: str, member: str) -> None:
        """No new requests to `member`; requests in flight finish."""

    @abc.abstractmethod
    async def enable(self, app: str, member: str) -> None:
        """Back in rotation (after drain or disable)."""

    @abc.abstractmethod
    async def disable(self, app: str, member: str) -> None:
        """Out of rotation and out of health checks (maintenance)."""

    async def set_members(self, app: str, pool: str, members: Sequence[Endpoint]) -> AppTraffic:
        """Make `members` the pool's members at once: new ones take traffic, removed ones drain (in-flight
        requests finish, no new ones). All are checked before any change."""
        raise TrafficError(f"the {self.name} driver cannot change a pool's members at runtime")

    @abc.abstractmethod
    async def clear_alert(self, app: str) -> bool:
        """Clear the latched canary alert; False if the canary is still down (it latches again)."""

    async def wait_drained(self, app: str, member: str, timeout: float, poll: float = 0.1) -> bool:
        """True once `member` has nothing in flight; False if `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            m = (await self.app(app)).member(member)
            if m.drained:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)

    async def close(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> "TrafficDriver":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
