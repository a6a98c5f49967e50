"""The canary and traffic commands, bound to the proxy's traffic driver."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from opsconsole.canary.steps import CanaryFailed, walk_steps
from opsconsole.engine import commands as C
from opsconsole.events import CanaryState
from opsconsole.fsio import write_atomic
from opsconsole.traffic.base import AppTraffic, TrafficDriver, TrafficError

STATE_POLL = 1.0  # seconds between proxy state reports while the console runs

if TYPE_CHECKING:
    from opsconsole.config.model import AppConfig
    from opsconsole.engine.engine import Engine


def runtime_file(engine: "Engine") -> Path:
    """Where the embedded proxy writes its pid and bound ports (the console reads it to find the admin API)."""
    proxy = engine.config.proxy
    return proxy.runtime_file if proxy is not None and proxy.runtime_file else engine.config.state_dir / "proxy" / "runtime.json"


class AppTrafficControl:
    """The rollout's view of the proxy: drain / wait / enable one member (host) of one app."""

    def __init__(self, driver: TrafficDriver, app: str) -> None:
        self.driver = driver
        self.app = app

    async def drain(self, host: str) -> None:
        await self.driver.drain(self.app, host)

    async def wait_drained(self, host: str, timeout: float) -> bool:
        return await self.driver.wait_drained(self.app, host, timeout)

    async def enable(self, host: str) -> None:
        await self.driver.enable(self.app, host)


class CanaryDesk:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._driver: TrafficDriver | None = None

    @property
    def configured(self) -> bool:
        return self.engine.config.proxy is not None

    def fronted(self, app: str) -> bool:
        proxy = self.engine.config.proxy
        return proxy is not None and app in proxy.frontends

    def driver(self) -> TrafficDriver:
        engine = self.engine
        if engine.config.proxy is None:
            raise engine.failure(f"no proxy configured: add a `proxy:` section to {engine.config.file}")
        if self._driver is None:
            from opsconsole.traffic import open_driver

            proxy = engine.config.proxy
            transport = None
            if proxy.driver == "haproxy" and proxy.haproxy.host:
                host = engine.inventory.get(proxy.haproxy.host)
                if host is None:
                    raise engine.failure(f"proxy.haproxy.host {proxy.haproxy.host!r} is not a host of the inventory")
                transport = engine.transport_for(host)
            try:
                self._driver = open_driver(proxy, runtime_file=runtime_file(engine),
                                           state_file=engine.config.state_dir / "proxy" / "haproxy-desired.json",
                                           transport=transport)
            except TrafficError as exc:
                raise engine.failure(str(exc)) from None
        return self._driver

    def control_for(self, app: "AppConfig") -> AppTrafficControl | None:
        """The rollout's drain/enable controls when the proxy fronts `app`, else None (no draining)."""
        return AppTrafficControl(self.driver(), app.name) if self.fronted(app.name) else None

    def report(self, app: AppTraffic) -> None:
        """Tell the front ends how the split stands now."""
        canary = app.pools.get("canary")
        self.engine.bus.emit(CanaryState(
            app=app.app, split=app.split, configured_weight=canary.weight if canary else 0,
            effective_weight=canary.effective_weight if canary else 0,
            requests=tuple((p.name, p.counters.requests) for p in app.pools.values()),
            errors=tuple((p.name, p.counters.failed) for p in app.pools.values()),
            alert=app.alert.reason if app.alert else None,
            answers=tuple(sorted((k, v) for k, v in app.answers.items() if v)),
            panic=app.panic_pools, tunnels=app.tunnels_open))

    # -- the weights the operator set, kept so a restarted proxy gets them back ---------------
    # The file holds the weights and the pid of the proxy that has them: a proxy with another pid has
    # restarted since (with the config's weights), even if no console watched it happen.
    def _desired_path(self) -> Path:
        return self.engine.config.state_dir / "proxy" / "desired-weights.json"

    def _load_desired(self) -> tuple[int | None, dict[str, int]]:
        try:
            data = json.loads(self._desired_path().read_text())
            return data.get("pid"), {k: int(v) for k, v in data["weights"].items()}
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return None, {}

    def _save_desired(self, pid: int | None, weights: dict[str, int]) -> None:
        write_atomic(self._desired_path(), json.dumps({"pid": pid, "weights": weights}, sort_keys=True))

    def remember(self, app: str, canary_weight: int) -> None:
        _, weights = self._load_desired()
        self._save_desired(self._proxy_pid(), {**weights, app: canary_weight})

    def _proxy_pid(self) -> int | None:
        try:
            return int(json.loads(runtime_file(self.engine).read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    async def reapply_if_restarted(self) -> None:
        """The embedded proxy keeps weights in memory only: when it restarted, put the operator's back."""
        if self.engine.config.proxy.driver != "embedded":
            return  # the HAProxy driver keeps and re-applies its own desired state
        pid, weights = self._load_desired()
        now = self._proxy_pid()
        if not weights or now is None or now == pid:
            return
        self._driver = None  # its admin address may have changed with it
        driver = self.driver()
        for app, weight in weights.items():
            if self.fronted(app):
                await driver.set_canary_percent(app, weight)
                self.engine.say(f"proxy restarted (pid {pid} → {now}): canary weight of {app} set back to {weight}%")
        self._save_desired(now, weights)

    async def watch(self) -> None:
        """Report every fronted app's split each STATE_POLL; a proxy that is down is said once, not every poll."""
        problem = None
        while True:
            try:
                await self.reapply_if_restarted()
                state = await self.driver().state()
                for app in state.apps.values():
                    self.report(app)
                if problem is not None:
                    self.engine.say("proxy reachable again")
                problem = None
            except Exception as exc:  # TrafficError, or CommandFailed for a missing runtime file
                if str(exc) != problem:
                    self.engine.say(f"proxy: {exc}", level="warning")
                problem = str(exc)
                self._driver = None  # reopened next poll: the proxy may come back on another address
            await asyncio.sleep(STATE_POLL)

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None

    # -- commands ----------------------------------------------------------
    async def canary(self, command: C.Canary) -> str:
        engine = self.engine
        if not self.fronted(command.app):
            raise engine.failure(f"app {command.app} has no canary: the proxy does not front it "
                                 f"(add it under proxy.apps in {engine.config.file})")
        try:
            if command.action == "deploy":  # needs no proxy: it puts a version on the canary's hosts
                return await self._deploy_canary(command)
            driver = self.driver()
            if command.action == "weight":
                app = await driver.set_canary_percent(command.app, int(command.weight or 0))
                self.remember(command.app, int(command.weight or 0))
                self.report(app)
                return self.describe(app)
            if command.action == "clear":
                cleared = await driver.clear_alert(command.app)
                if not cleared:
                    raise engine.failure(f"the canary of {command.app} is still down: the alert stays")
                return f"canary alert of {command.app} cleared"
            if command.action == "rollback":
                app = await driver.set_canary_percent(command.app, 0)
                self.remember(command.app, 0)
                self.report(app)
                return f"canary of {command.app} rolled back: all traffic to stable. " + self.describe(app)
            if command.action == "steps":
                try:
                    final = await walk_steps(driver, command.app, engine.config.canary, engine.say)
                except CanaryFailed as exc:
                    self.remember(command.app, 0)
                    raise engine.failure(f"canary {command.app}: {exc}") from None
                self.remember(command.app, final)
                return f"canary {command.app} held at every step up to {final}%"
            if command.action == "promote":
                return await self._promote(command)
        except TrafficError as exc:
            raise engine.failure(str(exc)) from None
        raise engine.failure(f"unknown canary action {command.action!r}")

    def canary_hosts(self, app: str) -> list[str]:
        if not self.fronted(app):
            return []
        pools = self.engine.config.proxy.frontends[app].pools
        canary = pools.get("canary")
        if canary is None:
            return []
        if canary.group:
            return [h.name for h in self.engine.inventory.group(canary.group)]
        return [m.name for m in canary.members]

    async def _deploy_canary(self, command: C.Canary) -> str:
        engine = self.engine
        app = engine.config.apps[command.app]
        hosts = self.canary_hosts(app.name)
        if not hosts:
            raise engine.failure(f"app {app.name} has no canary hosts (proxy.apps.{app.name}.pools.canary)")
        record = await engine.artifact_for(app, command.version)
        result = await engine.run_deploy_playbook(app, hosts, version=record.short, commit=record.commit,
                                                  artifact=record.artifact or "", parallel=True)
        if not result.ok:
            raise engine.failure(f"canary deploy failed: {result.failure_text()}")
        return f"canary of {app.name} runs {record.short} on {', '.join(hosts)}"

    async def _promote(self, command: C.Canary) -> str:
        """Stable gets the canary's version by a rolling update; then the canary weight returns to 0."""
        engine = self.engine
        hosts = self.canary_hosts(command.app)
        versions = {engine.views[h].version for h in hosts if h in engine.views}
        versions.discard(None)
        if len(versions) != 1:
            raise engine.failure(f"cannot tell the canary's version (hosts report {sorted(map(str, versions)) or 'none'})")
        version = versions.pop()
        commit = next((r.commit for r in reversed(engine.builds.records())
                       if r.app == command.app and r.short == version and r.status == "succeeded"), None)
        if commit is None:
            raise engine.failure(f"no successful build of {command.app} {version} is known to promote")
        engine.say(f"promoting {command.app} {version}: rolling it out to the stable pool")
        outcome = await engine.rollouts.roll(C.Roll(app=command.app, version=commit))
        await self.driver().set_canary_percent(command.app, 0)
        self.remember(command.app, 0)
        return f"{outcome}; canary weight back to 0"

    async def traffic(self, command: C.Traffic) -> str:
        state = await self.driver().state()
        apps = [a for name, a in state.apps.items() if command.app in (None, name)]
        for app in apps:
            self.engine.say(self.describe(app))
            for pool in app.pools.values():
                c = pool.counters
                self.engine.say(f"  {pool.name:<7} weight {pool.weight:>3} (effective {pool.effective_weight:>3})  "
                                f"requests {c.requests}  failed {c.failed}  upstream errors {c.errors}"
                                + (f"  queued {pool.queued} (waiting {pool.queue})" if pool.queued else "")
                                + ("  PANIC: no healthy member, balancing across all" if pool.panic else ""))
                for m in pool.members:
                    state = "up" if m.healthy else ("EJECTED" if m.ejected else "DOWN")
                    self.engine.say(f"    {m.name:<14} {m.address}:{m.port} {state:<7} "
                                    f"{m.admin:<9} in flight {m.inflight}  requests {m.counters.requests}"
                                    + (f"  tunnels {m.tunnels}" if m.tunnels else "")
                                    + (f"  ({m.check})" if m.check and not m.healthy else ""))
            if app.answers:
                self.engine.say("  the proxy answered itself: "
                                + ", ".join(f"{k}×{v}" for k, v in sorted(app.answers.items())))
            if app.tunnels_total:
                self.engine.say(f"  tunnels (WebSocket): {app.tunnels_open} open, {app.tunnels_total} opened")
        return f"{state.driver} proxy, {len(apps)} app(s)"

    @staticmethod
    def describe(app: AppTraffic) -> str:
        pools = ", ".join(f"{p.name} {p.weight}%→{p.effective_weight}%" for p in app.pools.values())
        share = f"canary gets {app.canary_percent:.0f}%" if app.canary_percent is not None else "no pool can take traffic"
        alert = f"; ALERT since {time.strftime('%H:%M:%S', time.localtime(app.alert.since))}: {app.alert.reason}" \
            if app.alert else ""
        return f"{app.app} ({app.split} split): {pools}; {share}{alert}"
