"""The traffic driver for HAProxy: its runtime API (stats socket), locally or through a host's transport.

Runtime changes live in HAProxy's memory only and vanish when it reloads, so
the driver keeps the desired state (weights, member admin states, a latched
alert) and re-applies it whenever it sees a new HAProxy process (`show info`
Pid/Start_time changed). HAProxy 2.6 cannot wait for a drain, so "drained" is
a server's current sessions (`scur`) polled down to 0.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol

from opsconsole.fsio import write_atomic
from opsconsole.proxy.config import FrontendConfig, ProxyConfig
from opsconsole.traffic.base import (
    AppTraffic,
    Counters,
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
from opsconsole.traffic.haproxy_config import backend_name, server_weights

if TYPE_CHECKING:
    from opsconsole.transport.base import Transport

_CHECK_OK = ("L4OK", "L6OK", "L7OK", "L7OKC")
_ADMIN_TO_STATE = {"enabled": "ready", "draining": "drain", "disabled": "maint"}


class RuntimeChannel(Protocol):
    async def command(self, line: str) -> str:
        """Send one line (commands separated by ';') and return HAProxy's whole answer."""


class UnixSocketChannel:
    """The stats socket on this machine."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    async def command(self, line: str) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(self.path)
        except (OSError, TimeoutError) as exc:
            raise TrafficUnavailable(f"cannot open HAProxy's stats socket {self.path}: {exc}; is HAProxy running "
                                     "with `stats socket … level admin`?") from None
        try:
            writer.write(line.encode() + b"\n")
            # Non-interactive mode: HAProxy answers and closes, so EOF ends the answer.
            async with asyncio.timeout(self.timeout):
                answer = await reader.read()
            return answer.decode(errors="replace")
        except (OSError, TimeoutError) as exc:
            raise TrafficUnavailable(f"HAProxy's stats socket {self.path} did not answer: {exc}") from None
        finally:
            writer.close()


class TransportChannel:
    """The stats socket on another host, through its transport: `socat` there relays one exchange."""

    def __init__(self, transport: "Transport", path: str, timeout: float = 10.0) -> None:
        self.transport = transport
        self.path = path
        self.timeout = timeout

    async def command(self, line: str) -> str:
        result = await self.transport.run(f"socat -t {self.timeout:g} - UNIX-CONNECT:{shlex.quote(self.path)}",
                                          stdin=line.encode() + b"\n", timeout=self.timeout + 5, become=True)
        if not result.ok:
            raise TrafficUnavailable(f"HAProxy runtime API via {getattr(self.transport, 'name', 'transport')}: "
                                     f"socat {result.describe()}: {' '.join(result.tail)[-300:]}")
        return result.stdout


class HaproxyDriver(TrafficDriver):
    name = "haproxy"

    def __init__(self, config: ProxyConfig, channel: RuntimeChannel, *, state_file: Path | None = None) -> None:
        """`config` with group pools resolved; `state_file` keeps the desired state across console restarts."""
        self.config = config
        self.channel = channel
        self.state_file = state_file
        self._desired: dict[str, dict] = {
            app: {"weights": {p: pool.weight for p, pool in fe.pools.items()}, "admin": {}, "latched": False}
            for app, fe in config.frontends.items()
        }
        self._instance: tuple[str, str] | None = None
        self._lock = asyncio.Lock()
        self._alert_since: dict[str, float] = {}  # when we first saw each app's alert (HAProxy keeps no such time)
        self._known = False  # desired state came from somewhere (state file, our own changes, or adopted)
        self.reapplied = 0  # how many times we found a fresh HAProxy and restored the desired state
        if state_file and state_file.exists():
            saved = json.loads(state_file.read_text())
            for app, d in saved.items():
                if app in self._desired:
                    self._desired[app].update(d)
            self._known = True

    # -- the runtime API ------------------------------------------------------------
    async def _run(self, commands: list[str]) -> str:
        out = await self.channel.command("; ".join(commands))
        errors = [line for line in out.splitlines() if line.strip()]
        if errors:
            raise TrafficError(f"HAProxy refused `{'; '.join(commands)}`: {' '.join(errors)}")
        return out

    async def _stats(self) -> list[dict[str, str]]:
        out = await self.channel.command("show stat")
        if not out.startswith("# "):
            raise TrafficError(f"unexpected answer to `show stat`: {out[:200]!r}")
        return list(csv.DictReader(io.StringIO(out[2:])))

    async def _sync(self) -> None:
        """Re-apply the desired state if HAProxy restarted or reloaded since we last looked."""
        info = await self.channel.command("show info")
        fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
        instance = (fields.get("Pid", ""), fields.get("Start_time_sec", fields.get("Uptime_sec", "")))
        if instance != self._instance:
            first = self._instance is None
            self._instance = instance
            if first and not self._known:
                # A console that starts (or restarts after a crash) must not undo the weights HAProxy runs
                # now: take them as the desired state instead of pushing the config's.
                self._adopt(await self._stats())
            else:
                await self._apply_all()
                if not first:
                    self.reapplied += 1
            self._known = True

    def _adopt(self, rows: list[dict[str, str]]) -> None:
        for app, fe in self.config.frontends.items():
            by_name = {r["svname"]: r for r in rows if r["pxname"] == backend_name(app)}
            live = {n for n, r in by_name.items() if not r["status"].startswith(("MAINT", "DRAIN"))}
            sums = {p: sum(_int(by_name[m.name], "uweight") or _int(by_name[m.name], "weight")
                           for m in pool.members if m.name in live) for p, pool in fe.pools.items()}
            total = sum(sums.values())
            if total:
                self._desired[app]["weights"] = {p: round(100 * v / total) for p, v in sums.items()}
            admin = {}
            for name, r in by_name.items():
                if r["status"].startswith("MAINT"):
                    admin[name] = "disabled"
                elif r["status"].startswith("DRAIN"):
                    admin[name] = "draining"
            self._desired[app]["admin"] = admin

    async def _apply_all(self) -> None:
        cmds: list[str] = []
        for app, fe in self.config.frontends.items():
            cmds += self._weight_commands(fe, self._desired[app]["weights"])
            for member, admin in self._desired[app]["admin"].items():
                cmds.append(f"set server {backend_name(app)}/{member} state {_ADMIN_TO_STATE[admin]}")
            if self._desired[app]["latched"] and "canary" in fe.pools:
                # A fresh HAProxy starts every server up; the latch we saw must hold across the reload.
                cmds += [f"set server {backend_name(app)}/{m.name} health down" for m in fe.pools["canary"].members]
        if cmds:
            await self._run(cmds)

    def _weight_commands(self, fe: FrontendConfig, weights: Mapping[str, int]) -> list[str]:
        out = self._desired[fe.app]["admin"]
        return [f"set weight {backend_name(fe.app)}/{name} {w}"
                for name, w in server_weights(fe, weights, out).items() if name not in out]

    def _save(self) -> None:
        if self.state_file is not None:
            write_atomic(self.state_file, json.dumps(self._desired))

    # -- reading ---------------------------------------------------------------------
    async def state(self) -> TrafficState:
        async with self._lock:
            await self._sync()
            rows = await self._stats()
            apps = {}
            for app, fe in self.config.frontends.items():
                apps[app] = self._app_state(fe, rows)
            # The latch is ours to keep: HAProxy only knows servers up and down.
            for app, a in apps.items():
                if a.alert is not None and not self._desired[app]["latched"] and not self.config.frontends[app].auto_restore:
                    self._desired[app]["latched"] = True
                    self._save()
            return TrafficState("haproxy", apps)

    def _app_state(self, fe: FrontendConfig, rows: list[dict[str, str]]) -> AppTraffic:
        be = backend_name(fe.app)
        by_name = {r["svname"]: r for r in rows if r["pxname"] == be}
        desired = self._desired[fe.app]
        pools: dict[str, PoolTraffic] = {}
        canary_dead = False
        for pname, pool in fe.pools.items():
            members = []
            for m in pool.members:
                r = by_name.get(m.name)
                if r is None:
                    raise TrafficError(f"HAProxy has no server {be}/{m.name}; regenerate and reload its config")
                status = r["status"]
                admin = "disabled" if status.startswith("MAINT") else ("draining" if status.startswith("DRAIN") else desired["admin"].get(m.name, "enabled"))
                healthy = status.startswith(("UP", "DRAIN", "NOLB")) or status == "no check"
                scur = int(r["scur"] or 0)
                members.append(MemberTraffic(
                    name=m.name, pool=pname, address=m.address, port=m.port, weight=m.weight, healthy=healthy,
                    admin=admin, inflight=scur, drained=admin != "enabled" and scur == 0,
                    counters=_counters(r), check=r.get("check_desc") or r.get("check_status", ""),
                ))
            wanted = [mm for mm in members if mm.admin != "disabled"]
            if pname == "canary" and wanted and not any(mm.healthy for mm in wanted):
                canary_dead = True
            pools[pname] = PoolTraffic(pname, desired["weights"].get(pname, 0), 0, tuple(members), _sum(members))
        latched = canary_dead or (desired["latched"] and not fe.auto_restore)
        eff: dict[str, int] = {}
        for pname, p in pools.items():
            up = any(m.healthy and m.admin == "enabled" and m.weight > 0 for m in p.members)
            eff[pname] = 0 if (not up or (pname == "canary" and latched)) else p.weight
        pools = {n: PoolTraffic(p.name, p.weight, eff[n], p.members, p.counters) for n, p in pools.items()}
        total = sum(eff.values())
        if latched:
            since = self._alert_since.setdefault(fe.app, time.time())
            alert = TrafficAlert("no healthy canary member; HAProxy sends everything to stable", since)
        else:
            self._alert_since.pop(fe.app, None)
            alert = None
        return AppTraffic(app=fe.app, split=fe.split, canary_percent=(100.0 * eff.get("canary", 0) / total) if total else None,
                          alert=alert, pools=pools)

    # -- steering --------------------------------------------------------------------------
    def _frontend(self, app: str) -> FrontendConfig:
        if app not in self.config.frontends:
            raise TrafficNotFound(f"no app {app!r} behind HAProxy (apps: {', '.join(self.config.frontends)})")
        return self.config.frontends[app]

    def _check_member(self, fe: FrontendConfig, member: str) -> None:
        if not any(m.name == member for p in fe.pools.values() for m in p.members):
            raise TrafficNotFound(f"app {fe.app} has no member {member!r}")

    async def set_weights(self, app: str, weights: Mapping[str, int]) -> AppTraffic:
        fe = self._frontend(app)
        if not weights:
            raise TrafficBadRequest("no weights given")
        for pool, w in weights.items():
            if pool not in fe.pools:
                raise TrafficNotFound(f"app {app} has no pool {pool!r} (pools: {', '.join(fe.pools)})")
            if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
                raise TrafficBadRequest(f"weight of pool {pool} must be a whole number from 0 to 100; got {w!r}")
        async with self._lock:
            await self._sync()
            new = {**self._desired[app]["weights"], **weights}
            # One socket exchange for every server's weight: no request sees half of the change for long.
            await self._run(self._weight_commands(fe, new))
            self._desired[app]["weights"] = new
            self._save()
        return await self.app(app)

    async def _set_admin(self, app: str, member: str, admin: str) -> None:
        fe = self._frontend(app)
        self._check_member(fe, member)
        async with self._lock:
            await self._sync()
            states = self._desired[app]["admin"]
            before = dict(states)
            if admin == "enabled":
                states.pop(member, None)
            else:
                states[member] = admin
            # Weights first (the pool's share moves to its other members), then the state, in one exchange.
            cmds = self._weight_commands(fe, self._desired[app]["weights"])
            cmds.append(f"set server {backend_name(app)}/{member} state {_ADMIN_TO_STATE[admin]}")
            try:
                await self._run(cmds)
            except TrafficError:
                self._desired[app]["admin"] = before
                raise
            self._save()

    async def drain(self, app: str, member: str) -> None:
        await self._set_admin(app, member, "draining")

    async def enable(self, app: str, member: str) -> None:
        await self._set_admin(app, member, "enabled")

    async def disable(self, app: str, member: str) -> None:
        await self._set_admin(app, member, "disabled")

    async def clear_alert(self, app: str) -> bool:
        """Bring back canary servers whose last check passed; the others stay down (still latched)."""
        fe = self._frontend(app)
        if "canary" not in fe.pools:
            return True
        async with self._lock:
            await self._sync()
            rows = {r["svname"]: r for r in await self._stats() if r["pxname"] == backend_name(app)}
            passing = [m.name for m in fe.pools["canary"].members
                       if rows.get(m.name, {}).get("check_status", "").split(" ")[0] in _CHECK_OK]
            if passing:
                await self._run([f"set server {backend_name(app)}/{n} health up" for n in passing])
            self._desired[app]["latched"] = not passing
            self._save()
        return bool(passing)

    async def reapply(self) -> None:
        """Push the whole desired state now (e.g. right after the driver regenerated and reloaded HAProxy)."""
        async with self._lock:
            await self._apply_all()

    async def watch(self, interval: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Run in the background: notice a reloaded HAProxy within `interval` and restore the desired state."""
        while not (stop and stop.is_set()):
            try:
                async with self._lock:
                    await self._sync()
            except TrafficError:
                pass  # HAProxy restarting: try again next round
            await asyncio.sleep(interval)


def _int(row: Mapping[str, str], key: str) -> int:
    v = row.get(key) or "0"
    return int(v) if v.lstrip("-").isdigit() else 0


def _counters(r: Mapping[str, str]) -> Counters:
    rtime = _int(r, "rtime")
    return Counters(
        requests=_int(r, "req_tot") or _int(r, "stot"),
        errors=_int(r, "econ") + _int(r, "eresp") + _int(r, "hrsp_5xx"),
        retries=_int(r, "wretr") + _int(r, "wredis"),
        responses_5xx=_int(r, "hrsp_5xx"),
        avg_response_time=rtime / 1000 if rtime else None,
        failed=_int(r, "hrsp_5xx") + _int(r, "eresp"),
    )


def _sum(members: list[MemberTraffic]) -> Counters:
    rts = [m.counters.avg_response_time for m in members if m.counters.avg_response_time is not None]
    return Counters(
        requests=sum(m.counters.requests for m in members), errors=sum(m.counters.errors for m in members),
        retries=sum(m.counters.retries for m in members), responses_5xx=sum(m.counters.responses_5xx for m in members),
        avg_response_time=max(rts) if rts else None, failed=sum(m.counters.failed for m in members),
    )
