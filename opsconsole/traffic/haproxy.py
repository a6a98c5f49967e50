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
import re
import shlex
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from opsconsole.fsio import write_atomic
from opsconsole.proxy.config import FrontendConfig, MemberConfig, ProxyConfig
from opsconsole.proxy.members import member_configs
from opsconsole.traffic.base import (
    AppTraffic,
    Counters,
    Endpoint,
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
from opsconsole.traffic.haproxy_config import backend_name, server_weights, slot_names

if TYPE_CHECKING:
    from opsconsole.transport.base import Transport

_CHECK_OK = ("L4OK", "L6OK", "L7OK", "L7OKC")
_ADMIN_TO_STATE = {"enabled": "ready", "draining": "drain", "disabled": "maint"}
# The state file's record of the HAProxy process (`show info` Pid, Start_time_sec) that runs what the file
# says; null while a change is on its way (see _run), so a console that crashed mid-change is re-applied.
_INSTANCE_KEY = "_haproxy_instance"
# What `set server … addr` answers when it worked: information, not an error.
_INFO = re.compile(r"^(IP changed from|no need to change the addr|port changed from|IP and port changed)")


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
            # members: pool → entries, for pools whose members were set at runtime (each entry a config
            # server or a `server-template` slot, and the name its setter gave it: see set_members)
            app: {"weights": {p: pool.weight for p, pool in fe.pools.items()}, "admin": {}, "latched": False,
                  "members": {}}
            for app, fe in config.frontends.items()
        }
        self._instance: tuple[str, str] | None = None
        # The HAProxy process the state file's desired state was last applied to (None: not known, as in a
        # file written before it was kept). The same process already runs that state, drains included.
        self._saved_instance: tuple[str, str] | None = None
        self._lock = asyncio.Lock()
        self._alert_since: dict[str, float] = {}  # when we first saw each app's alert (HAProxy keeps no such time)
        self._known = False  # desired state came from somewhere (state file, our own changes, or adopted)
        self.reapplied = 0  # how many times we found a fresh HAProxy and restored the desired state
        if state_file and state_file.exists():
            saved = json.loads(state_file.read_text())
            # Apps at the top level, as before the instance was kept; the key cannot be an app's name (they
            # start with a letter), and a console from before this ignores it.
            instance = saved.pop(_INSTANCE_KEY, None)
            if isinstance(instance, list) and len(instance) == 2 and all(instance):
                self._saved_instance = (str(instance[0]), str(instance[1]))
            for app, d in saved.items():
                if app in self._desired:
                    self._desired[app].update(d)
            self._known = True

    # -- the runtime API ------------------------------------------------------------
    async def _run(self, commands: list[str]) -> str:
        # Write-ahead: until the caller saves again, the file may say something HAProxy does not run (a crash,
        # a refused command), so the next console re-applies the file instead of trusting it.
        self._save(applied=False)
        out = await self.channel.command("; ".join(commands))
        errors = [line for line in out.splitlines() if line.strip() and not _INFO.match(line.strip())]
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
        # (An HAProxy without Start_time_sec is told apart by its Pid alone; "" never matches a saved one.)
        instance = (fields.get("Pid", ""), fields.get("Start_time_sec", ""))
        if instance != self._instance:
            first = self._instance is None
            if first and not self._known:
                # A console that starts (or restarts after a crash) must not undo the weights HAProxy runs
                # now: take them as the desired state instead of pushing the config's.
                self._adopt(await self._stats())
                self._instance = instance
            elif first and all(instance) and instance == self._saved_instance:
                # A new console on the HAProxy the state file was applied to: it runs that state already, and
                # re-applying would take members still draining for a fresh process's and cut their drain.
                self._instance = instance
            else:
                await self._apply_all()
                # Only now: an apply that failed or was cancelled is tried again at the next look.
                self._instance = instance
                if not first:
                    self.reapplied += 1
                self._save()  # (applied to this process now: the next console need not do it again)
            self._known = True

    def _adopt(self, rows: list[dict[str, str]]) -> None:
        for app, fe in self.config.frontends.items():
            by_name = {r["svname"]: r for r in rows if r["pxname"] == backend_name(app)}
            live = {n for n, r in by_name.items() if not r["status"].startswith(("MAINT", "DRAIN"))}
            sums = {p: sum(_int(by_name[n], "uweight") or _int(by_name[n], "weight")
                           for n in self._servers(app, p) if n in live) for p in fe.pools}
            total = sum(sums.values())
            if total:
                self._desired[app]["weights"] = {p: round(100 * v / total) for p, v in sums.items()}
            slots = {s: p for p in fe.pools for s in slot_names(p, self.config.haproxy.slots)}
            admin = {}
            for name, r in by_name.items():
                if name in slots:
                    continue  # a slot in maintenance is a free slot, not a member taken out
                if r["status"].startswith("MAINT"):
                    admin[name] = "disabled"
                elif r["status"].startswith("DRAIN"):
                    admin[name] = "draining"
            self._desired[app]["admin"] = admin
            # Slots in use: members someone set at runtime. Their given names are not in HAProxy; address:port is.
            for name, r in by_name.items():
                if name in slots and not r["status"].startswith("MAINT") and ":" in r.get("addr", ""):
                    address, _, port = r["addr"].rpartition(":")
                    entries = self._entries(app, slots[name])
                    entries.append({"name": r["addr"], "server": name, "address": address.strip("[]"),
                                    "port": int(port), "weight": 1, "removed": r["status"].startswith("DRAIN"),
                                    "slot": True})
            for entries in self._desired[app]["members"].values():
                # Beside slots in use, a config server in maintenance is one the member set left out.
                gone = [e for e in entries if not e["slot"] and by_name.get(e["server"], {}).get("status", "").startswith("MAINT")]
                entries[:] = [e for e in entries if e not in gone]
                for e in gone:
                    admin.pop(e["server"], None)

    async def _apply_all(self) -> None:
        cmds: list[str] = []
        for app in self.config.frontends:
            fe = self._view(app)
            be = backend_name(app)
            for pname, entries in self._desired[app]["members"].items():
                # Re-applied to a fresh HAProxy (or to one the file may not describe: a crash mid-change, an old
                # file), whose members that were draining are taken as gone.
                entries[:] = [e for e in entries if not e["removed"]]
                used = {e["server"] for e in entries}
                for server in self._servers(app, pname):
                    if server not in used:
                        cmds.append(f"set server {be}/{server} state maint")
                for e in entries:
                    if e["slot"]:
                        cmds.append(f"set server {be}/{e['server']} addr {e['address']} port {e['port']}")
            cmds += self._weight_commands(fe, self._desired[app]["weights"])
            for pname, entries in self._desired[app]["members"].items():
                cmds += [f"set server {be}/{e['server']} state ready" for e in entries
                         if e["server"] not in self._desired[app]["admin"]]
            for member, admin in self._desired[app]["admin"].items():
                cmds.append(f"set server {backend_name(app)}/{member} state {_ADMIN_TO_STATE[admin]}")
            if self._desired[app]["latched"] and "canary" in fe.pools:
                # A fresh HAProxy starts every server up; the latch we saw must hold across the reload.
                cmds += [f"set server {be}/{m.name} health down" for m in fe.pools["canary"].members]
        if cmds:
            await self._run(cmds)

    def _weight_commands(self, fe: FrontendConfig, weights: Mapping[str, int]) -> list[str]:
        out = set(self._desired[fe.app]["admin"]) | self._removed(fe.app)
        return [f"set weight {backend_name(fe.app)}/{name} {w}"
                for name, w in server_weights(fe, weights, out).items() if name not in out]

    # -- runtime member sets: config servers and `server-template` slots ---------------------------
    def _servers(self, app: str, pool: str) -> list[str]:
        """Every server HAProxy has for the pool: the config's members, then the pool's slots."""
        fe = self.config.frontends[app]
        return [m.name for m in fe.pools[pool].members] + slot_names(pool, self.config.haproxy.slots)

    def _view(self, app: str) -> FrontendConfig:
        """The app as HAProxy runs it now: a runtime pool's members are its entries, named by server."""
        fe = self.config.frontends[app]
        runtime = self._desired[app]["members"]
        if not runtime:
            return fe
        pools = {p: (replace(pool, members=tuple(MemberConfig(e["server"], e["address"], e["port"], e["weight"])
                                                 for e in runtime[p])) if p in runtime else pool)
                 for p, pool in fe.pools.items()}
        return replace(fe, pools=pools)

    def _removed(self, app: str) -> set[str]:
        return {e["server"] for entries in self._desired[app]["members"].values() for e in entries if e["removed"]}

    def _labels(self, app: str) -> dict[str, str]:
        """Server name → the member name its setter gave (pod names for Kubernetes endpoints)."""
        return {e["server"]: e["name"] for entries in self._desired[app]["members"].values() for e in entries}

    def _server_of(self, app: str, member: str) -> str:
        for server, name in self._labels(app).items():
            if name == member:
                return server
        return member

    def _entries(self, app: str, pool: str) -> list[dict[str, Any]]:
        runtime = self._desired[app]["members"]
        if pool not in runtime:  # the first set: the config's members are where it starts from
            runtime[pool] = [{"name": m.name, "server": m.name, "address": m.address, "port": m.port,
                              "weight": m.weight, "removed": False, "slot": False}
                             for m in self.config.frontends[app].pools[pool].members]
        return runtime[pool]  # type: ignore[no-any-return]

    async def _reap(self, app: str, rows: list[dict[str, str]]) -> None:
        """Removed members with no session left go to maintenance; their slots are free again."""
        by_name = {r["svname"]: r for r in rows if r["pxname"] == backend_name(app)}
        done = [e for entries in self._desired[app]["members"].values() for e in entries
                if e["removed"] and int(by_name.get(e["server"], {}).get("scur") or 0) == 0]
        if not done:
            return
        await self._run([f"set server {backend_name(app)}/{e['server']} state maint" for e in done])
        for entries in self._desired[app]["members"].values():
            entries[:] = [e for e in entries if not any(e is d for d in done)]
        self._save()

    async def set_members(self, app: str, pool: str, members: Sequence[Endpoint]) -> AppTraffic:
        fe = self._frontend(app)
        if pool not in fe.pools:
            raise TrafficNotFound(f"app {app} has no pool {pool!r} (pools: {', '.join(fe.pools)})")
        async with self._lock:
            await self._sync()
            others = {e["name"] for p, entries in self._desired[app]["members"].items() if p != pool
                      for e in entries if not e["removed"]}
            others |= {m.name for p, pl in fe.pools.items() if p != pool and p not in self._desired[app]["members"]
                       for m in pl.members}
            try:
                wanted = member_configs([asdict(m) for m in members], taken=others)
            except ValueError as exc:
                raise TrafficBadRequest(f"app {app} pool {pool}: {exc}") from None
            await self._reap(app, await self._stats())
            before = json.loads(json.dumps(self._desired[app]))
            entries = self._entries(app, pool)
            be = backend_name(app)
            current = {e["name"]: e for e in entries}
            free = [s for s in slot_names(pool, self.config.haproxy.slots) if s not in {e["server"] for e in entries}]
            kept, new, cmds, ready = [], [], [], []
            for m in wanted:
                e = current.get(m.name)
                if e is not None and (e["address"], e["port"]) == (m.address, m.port):
                    e["weight"] = m.weight
                    if e["removed"]:
                        e["removed"] = False
                        ready.append(e["server"])
                    kept.append(e)
                    continue
                if not free:
                    self._desired[app] = before  # (nothing sent yet: the file was not touched)
                    raise TrafficBadRequest(
                        f"app {app} pool {pool}: no free HAProxy server slot for {m.name} ({self.config.haproxy.slots} "
                        "slots, all in use or still draining); raise proxy.haproxy.slots and regenerate the config")
                server = free.pop(0)
                new.append({"name": m.name, "server": server, "address": m.address, "port": m.port,
                            "weight": m.weight, "removed": False, "slot": True})
                cmds.append(f"set server {be}/{server} addr {m.address} port {m.port}")
                ready.append(server)
            names = {m.name for m in wanted}
            drain = []
            kept_ids = {id(k) for k in kept}
            for e in entries:
                if id(e) not in kept_ids and not e["removed"]:
                    e["removed"] = True
                    drain.append(e)
            # Replaced under the same name (a new address): the old one drains unseen, its name is the new one's.
            entries[:] = (kept + new + [e for e in entries if e["removed"] and e["name"] not in names]
                          + [dict(e, name=f"{e['name']} (old)") for e in entries if e["removed"] and e["name"] in names])
            self._desired[app]["admin"] = {s: a for s, a in self._desired[app]["admin"].items()
                                           if s not in {e["server"] for e in drain} and s not in ready}
            # One exchange: addresses, then every weight (the pool's share over its new members), then states.
            cmds += self._weight_commands(self._view(app), self._desired[app]["weights"])
            cmds += [f"set server {be}/{s} state ready" for s in ready]
            cmds += [f"set server {be}/{e['server']} state drain" for e in drain]
            try:
                await self._run(cmds)
            except TrafficError:
                self._desired[app] = before
                self._save(applied=False)  # (HAProxy may have taken part of the exchange: re-apply next time)
                raise
            self._save()
        return await self.app(app)

    def _save(self, applied: bool = True) -> None:
        """Write the desired state; `applied`: HAProxy process `_instance` runs it (see _INSTANCE_KEY)."""
        if self.state_file is not None:
            instance = self._instance if applied and self._instance and all(self._instance) else None
            write_atomic(self.state_file, json.dumps({**self._desired, _INSTANCE_KEY: instance}))

    # -- reading ---------------------------------------------------------------------
    async def state(self) -> TrafficState:
        async with self._lock:
            await self._sync()
            rows = await self._stats()
            # Reaping sends the finished members to maintenance and drops them from the view: their rows
            # are not read below, and the others' did not change, so the rows read once still serve.
            for app in self.config.frontends:
                await self._reap(app, rows)
            apps = {}
            for app in self.config.frontends:
                apps[app] = self._app_state(self._view(app), rows)
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
        labels, removed = self._labels(fe.app), self._removed(fe.app)
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
                gone = m.name in removed
                healthy = status.startswith(("UP", "DRAIN", "NOLB")) or status == "no check"
                scur = int(r["scur"] or 0)
                members.append(MemberTraffic(
                    name=labels.get(m.name, m.name), pool=pname, address=m.address, port=m.port, weight=m.weight,
                    healthy=healthy, admin=admin, inflight=scur, drained=admin != "enabled" and scur == 0,
                    counters=_counters(r), check=r.get("check_desc") or r.get("check_status", ""), removed=gone,
                ))
            wanted = [mm for mm in members if mm.admin != "disabled" and not mm.removed]
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
        labels = self._labels(fe.app)
        if not any(labels.get(m.name, m.name) == member for p in self._view(fe.app).pools.values() for m in p.members):
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
            await self._run(self._weight_commands(self._view(app), new))
            self._desired[app]["weights"] = new
            self._save()
        return await self.app(app)

    async def _set_admin(self, app: str, member: str, admin: str) -> None:
        fe = self._frontend(app)
        self._check_member(fe, member)
        member = self._server_of(app, member)  # a runtime member's server (its slot)
        async with self._lock:
            await self._sync()
            states = self._desired[app]["admin"]
            before = dict(states)
            if admin == "enabled":
                states.pop(member, None)
            else:
                states[member] = admin
            # Weights first (the pool's share moves to its other members), then the state, in one exchange.
            cmds = self._weight_commands(self._view(app), self._desired[app]["weights"])
            cmds.append(f"set server {backend_name(app)}/{member} state {_ADMIN_TO_STATE[admin]}")
            try:
                await self._run(cmds)
            except TrafficError:
                self._desired[app]["admin"] = before
                self._save(applied=False)  # (HAProxy may have taken part of the exchange: re-apply next time)
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
            passing = [m.name for m in self._view(app).pools["canary"].members
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
            self._save()

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
