"""EndpointSlices → the traffic proxy's pools: each track's ready pods become that pool's members.

The stable Service's ready endpoints are the `stable` pool, the canary Service's the `canary` pool.
Pool weights are not touched, so the canary's share stays what the operator set; only who serves
each share changes. A member that leaves drains in the proxy (its requests in flight finish).

The follower works like a client-go reflector: list (remembering the resourceVersion), then watch
from there; a dropped watch is reopened from the last resourceVersion seen after a backoff that
grows to `MAX_BACKOFF` and resets once a watch delivers again; a 410 Gone (history too old) lists
afresh. It also re-sends the member set when the proxy's differs (a restarted proxy forgets it).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opsconsole.errors import OperatorError
from opsconsole.proxy.members import address_problem
from opsconsole.traffic.base import Endpoint, TrafficDriver, TrafficError

from opsconsole.kube.client import SERVICE_NAME_LABEL, KubeWatchGone

if TYPE_CHECKING:
    from opsconsole.kube.client import KubeClient

FIRST_BACKOFF = 0.2  # seconds before reopening a dropped watch; doubles per failure in a row
MAX_BACKOFF = 10.0
RESYNC = 2.0  # seconds between checks that the proxy still has the members we set
# Seconds a slice watch runs before the slices are listed afresh. A watch a load balancer dropped without a
# word delivers nothing, and the pools would keep pods that are gone (the kube-proxy's informers relist too).
RELIST = 30.0


def ready_endpoints(slices: Iterable[dict[str, Any]], port_name: str = "http",
                    refused: list[str] | None = None) -> list[Endpoint]:
    """The ready endpoints of a Service's slices, named after their pods, sorted by name.

    `ready` unset counts as ready (the API's rule); a terminating endpoint is not ready. The port is
    the slice's port named `port_name` (our Services name theirs `http`), else its only port. An address
    no backend can have (not an IP; link-local like the cloud metadata address, multicast, unspecified:
    members.address_problem) is left out, and why is added to `refused`: one such endpoint must not keep
    the pool from following the others.
    """
    found: dict[str, Endpoint] = {}
    for s in slices:
        ports = s.get("ports") or []
        named = [p for p in ports if p.get("name") == port_name] or (ports if len(ports) == 1 else [])
        if not named or not named[0].get("port"):
            continue
        port = int(named[0]["port"])
        for e in s.get("endpoints") or []:
            conditions = e.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating"):
                continue
            target = (e.get("targetRef") or {}).get("name")
            addresses = e.get("addresses") or []
            for i, address in enumerate(addresses):
                try:
                    problem = address_problem(ipaddress.ip_address(address))
                except ValueError:
                    problem = "not an IP address"
                if problem is not None:
                    if refused is not None:
                        refused.append(f"{target or '?'} {address}: {problem}")
                    continue
                name = target if target and len(addresses) == 1 else (f"{target}-{i}" if target else f"{address}:{port}")
                found[name] = Endpoint(name=name, address=address, port=port)
    return sorted(found.values(), key=lambda e: e.name)


def _service_of(slice_: dict[str, Any]) -> str | None:
    """The Service an EndpointSlice belongs to, from the label its controller sets."""
    return ((slice_.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)


class EndpointFollower:
    """Keep `app`'s proxy pools equal to its Services' ready endpoints until cancelled."""

    def __init__(self, client: "KubeClient", app: str, services: dict[str, str],
                 driver: Callable[[], TrafficDriver], say: Callable[[str, str], None]) -> None:
        """`services`: pool → Service name (stable → checkbox, canary → checkbox-canary)."""
        self.client = client
        self.app = app
        self.services = services
        self.driver = driver
        self.say = say
        self._refused_said: set[str] = set()
        self.slices: dict[str, dict[str, Any]] = {}  # slice name → slice
        self.version: str | None = None
        self.listed = False  # a first list arrived: until then an empty set means "not known yet", not "none"
        self.reopened = 0  # watches reopened after a drop (for the operator and the tests)
        self._changed = asyncio.Event()

    def wanted(self) -> dict[str, list[Endpoint]]:
        by_service: dict[str, list[dict[str, Any]]] = {name: [] for name in self.services.values()}
        for s in self.slices.values():
            service = _service_of(s)
            if service in by_service:
                by_service[service].append(s)
        refused: list[str] = []
        wanted = {pool: ready_endpoints(by_service[service], refused=refused) for pool, service in self.services.items()}
        for reason in sorted(set(refused) - self._refused_said):
            self.say(f"endpoints of {self.app}: left out {reason}", "warning")
        self._refused_said = set(refused)  # said once while it lasts, not at every resync
        return wanted

    async def run(self) -> None:
        pusher = asyncio.ensure_future(self._push_loop())
        try:
            await self._watch_loop()
        finally:
            pusher.cancel()
            await asyncio.gather(pusher, return_exceptions=True)

    # -- the API side: list, then watch from the resourceVersion; reopen after a drop -------------
    async def _list(self) -> None:
        items, version = await self.client.list_endpoint_slices(list(self.services.values()))
        self.slices = {s["metadata"]["name"]: s for s in items if self._ours(s)}
        self.version = version
        self.listed = True
        self._changed.set()

    def _ours(self, s: dict[str, Any]) -> bool:
        # Filtered here too: not every server honours a label selector (kmock does not).
        return _service_of(s) in self.services.values()

    async def _watch_loop(self) -> None:
        backoff = FIRST_BACKOFF
        listed = False
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                async with asyncio.timeout(RELIST):
                    async for kind, s in self.client.watch_endpoint_slices(list(self.services.values()), self.version):
                        backoff = FIRST_BACKOFF  # delivering again: the next drop starts the backoff afresh
                        version = (s.get("metadata") or {}).get("resourceVersion")
                        if version:
                            self.version = version
                        if not self._ours(s):
                            continue
                        name = s["metadata"]["name"]
                        if kind == "DELETED":
                            self.slices.pop(name, None)
                        elif kind in ("ADDED", "MODIFIED"):
                            self.slices[name] = s
                        self._changed.set()
                reason = "the server ended the watch"
            except TimeoutError:
                listed = False  # routine, said nowhere: list afresh and watch from there
                continue
            except KubeWatchGone as exc:
                listed = False  # the history is gone: list afresh (deletions we missed included)
                reason = str(exc)
            except OperatorError as exc:
                reason = str(exc)
            self.reopened += 1
            self.say(f"endpoints of {self.app}: {reason}; watching again in {backoff:g}s "
                     f"from resourceVersion {self.version or '(a fresh list)'}", "warning")
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    # -- the proxy side: set a pool's members when they differ ---------------------------------------
    async def _push_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(RESYNC):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.push()
            except TrafficError as exc:
                self.say(f"endpoints of {self.app}: the proxy refused the member set: {exc}", "warning")
                self._changed.set()  # try again after the next wait
                await asyncio.sleep(RESYNC)

    async def push(self) -> None:
        """Send each pool's ready endpoints to the proxy where its members differ (or it forgot them)."""
        if not self.listed:
            return  # an empty set now would take every member out on no evidence
        driver = self.driver()
        state = await driver.app(self.app)
        for pool, endpoints in self.wanted().items():
            if pool not in state.pools:
                continue
            have = sorted((m.name, m.address, m.port) for m in state.pools[pool].members if not m.removed)
            if have != sorted((e.name, e.address, e.port) for e in endpoints):
                await driver.set_members(self.app, pool, endpoints)
                self.say(f"{self.app}/{pool}: members now " + (", ".join(
                    f"{e.name} {e.address}:{e.port}" for e in endpoints) or "none"), "info")
