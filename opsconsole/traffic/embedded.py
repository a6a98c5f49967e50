"""The traffic driver for the embedded proxy: its admin API over loopback HTTP or a unix socket (httpx)."""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import httpx

from opsconsole.traffic.listener_owner import port_holder_problem, start_time
from opsconsole.traffic.base import (
    AppTraffic,
    Counters,
    Endpoint,
    LatencyHistogram,
    MemberTraffic,
    PoolTraffic,
    TrafficAlert,
    TrafficBadRequest,
    TrafficDriver,
    TrafficError,
    TrafficNotFound,
    TrafficState,
    TrafficUnavailable,
)


def refuse_remote_admin(url: str) -> None:
    """TrafficError unless `url` is http(s) to a loopback address (127.0.0.0/8, ::1, localhost)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise TrafficError(f"refusing the proxy admin URL {url!r}: the admin token is only sent to a loopback "
                           "address (http://127.0.0.1:PORT) or a unix: socket; reach a remote proxy through an "
                           "SSH-forwarded local port")


class EmbeddedDriver(TrafficDriver):
    name = "embedded"

    def __init__(self, admin: str, token: str, *, timeout: float = 5.0) -> None:
        """`admin` is `http://127.0.0.1:PORT` or `unix:/path/admin.sock` (as the proxy's runtime file says).

        Any other host is refused before a request is made: the token is a bearer credential and goes
        over plain HTTP, so it is only ever sent on this machine (a proxy elsewhere is reached through
        an SSH-forwarded loopback port)."""
        self.admin = admin
        if not admin.startswith("unix:"):
            refuse_remote_admin(admin)
        if admin.startswith("unix:"):
            transport = httpx.AsyncHTTPTransport(uds=admin[5:])
            base = "http://proxy"
        else:
            transport = httpx.AsyncHTTPTransport()
            base = admin.rstrip("/")
        self._client = httpx.AsyncClient(base_url=base, transport=transport, timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"})
        self._owner: tuple[int, str] | None = None  # (pid, start time) of the proxy a runtime file named

    @classmethod
    def from_runtime_file(cls, path: str | Path, token: str, **kw: Any) -> "EmbeddedDriver":
        """Find the admin API from the file the proxy writes once it listens.

        The file outlives a proxy that died, and its port may since belong to anyone: the token is only
        sent while the file's process is alive and (for TCP) holds that port's listening socket."""
        try:
            data = json.loads(Path(path).read_text())
            admin, pid = str(data["admin"]), int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrafficUnavailable(f"the proxy's runtime file {path} is missing or unreadable ({exc}); "
                                     "is `opsconsole proxy` running?") from None
        if not admin.startswith("unix:"):
            refuse_remote_admin(admin)  # said first: a remote address is refused whoever holds it
        port = None if admin.startswith("unix:") else urllib.parse.urlsplit(admin).port
        problem = (f"its process {pid} is not running" if start_time(pid) is None
                   else port_holder_problem(pid, port) if port is not None else None)
        if problem is not None:
            raise TrafficUnavailable(f"not sending the admin token to {admin}: the proxy's runtime file {path} "
                                     f"is stale ({problem}); is `opsconsole proxy` running?")
        driver = cls(admin, token, **kw)
        driver._owner = (pid, start_time(pid) or "")
        return driver

    def _check_owner(self) -> None:
        """The proxy we checked at open time still runs: else its port may be anyone's by now."""
        if self._owner is not None and start_time(self._owner[0]) != self._owner[1]:
            raise TrafficUnavailable(f"the proxy (process {self._owner[0]}) behind {self.admin} is gone; "
                                     "not sending the admin token to whatever listens there now")

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        self._check_owner()
        try:
            r = await self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TrafficUnavailable(f"cannot reach the proxy admin API at {self.admin}: {exc or type(exc).__name__}") from None
        if r.status_code == 200:
            return r.json()
        try:
            message = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = r.text.strip()
        if r.status_code == 404:
            raise TrafficNotFound(message)
        if r.status_code == 400:
            raise TrafficBadRequest(message)
        if r.status_code == 401:
            raise TrafficError(f"the proxy admin API refused our token ({message}); check the token source in proxy.admin")
        raise TrafficError(f"proxy admin API: {r.status_code} {message}")

    async def state(self) -> TrafficState:
        data = await self._call("GET", "/state")
        instance = f"{data['pid']}@{data['started']}" if "pid" in data and "started" in data else None
        return TrafficState("embedded", {name: app_from_json(a) for name, a in data["apps"].items()}, instance=instance)

    async def app(self, app: str) -> AppTraffic:
        return app_from_json(await self._call("GET", f"/apps/{app}"))

    async def set_weights(self, app: str, weights: Mapping[str, int]) -> AppTraffic:
        return app_from_json(await self._call("PUT", f"/apps/{app}/weights", dict(weights)))

    async def set_members(self, app: str, pool: str, members: Sequence[Endpoint]) -> AppTraffic:
        return app_from_json(await self._call("PUT", f"/apps/{app}/pools/{pool}/members",
                                              {"members": [asdict(m) for m in members]}))

    async def drain(self, app: str, member: str) -> None:
        await self._call("POST", f"/apps/{app}/members/{member}/drain")

    async def enable(self, app: str, member: str) -> None:
        await self._call("POST", f"/apps/{app}/members/{member}/enable")

    async def disable(self, app: str, member: str) -> None:
        await self._call("POST", f"/apps/{app}/members/{member}/disable")

    async def clear_alert(self, app: str) -> bool:
        return bool((await self._call("POST", f"/apps/{app}/alert/clear"))["cleared"])

    async def metrics(self) -> str:
        """The Prometheus text, for whoever wants to forward it."""
        self._check_owner()
        try:
            r = await self._client.get("/metrics")
        except httpx.HTTPError as exc:
            raise TrafficUnavailable(f"cannot reach the proxy admin API at {self.admin}: {exc}") from None
        return r.text


def _counters(d: Mapping[str, Any]) -> Counters:
    lat = d.get("latency")
    hist = LatencyHistogram(tuple(lat["bounds"]), tuple(lat["counts"]), lat["sum"]) if lat else None
    return Counters(requests=d["requests"], errors=d["errors"], retries=d["retries"],
                    responses_5xx=d["responses"]["5xx"], latency=hist, failed=d.get("failed", 0))


def app_from_json(a: Mapping[str, Any]) -> AppTraffic:
    pools = {}
    for pname, p in a["pools"].items():
        members = tuple(MemberTraffic(
            name=m["name"], pool=m["pool"], address=m["address"], port=m["port"], weight=m["weight"],
            healthy=m["healthy"], admin=m["admin"], inflight=m["inflight"], drained=m["drained"],
            counters=_counters(m), check=m.get("check", ""), ejected=m.get("ejected", False),
            tunnels=m.get("tunnels", 0), removed=m.get("removed", False),
        ) for m in p["members"])
        pools[pname] = PoolTraffic(pname, p["weight"], p["effective_weight"], members, _counters(p),
                                   panic=p.get("panic", False), queue=p.get("queue", 0), queued=p.get("queued", 0))
    alert = TrafficAlert(a["alert"]["reason"], a["alert"]["since"]) if a.get("alert") else None
    tunnels = a.get("tunnels") or {}
    return AppTraffic(app=a["app"], split=a["split"], canary_percent=a["canary_percent"], alert=alert,
                      pools=pools, client_errors=a.get("client_errors", 0), answers=dict(a.get("answers") or {}),
                      tunnels_open=tunnels.get("open", 0), tunnels_total=tunnels.get("total", 0))
