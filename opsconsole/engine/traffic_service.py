"""The engine's traffic service: the proxy's driver, the weights the operator set, drain/enable per app.

Built once by the engine and given to the rollouts, the canary desk and the cloud desk; it holds
no engine, only the config, the fleet (to reach an HAProxy host) and the bus.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from opsconsole.config.model import AppConfig, Config
from opsconsole.engine.fleet import Fleet
from opsconsole.errors import CommandFailed, OperatorError
from opsconsole.events import CanaryState, EventBus, Message
from opsconsole.fsio import write_atomic
from opsconsole.traffic.base import AppTraffic, TrafficDriver, TrafficState
from opsconsole.traffic.proxy_host import resolved_proxy

STATE_POLL = 1.0  # seconds between proxy state reports while the console runs


def runtime_file(config: Config) -> Path:
    """Where the embedded proxy writes its pid and bound ports (the console reads it to find the admin API)."""
    proxy = config.proxy
    return proxy.runtime_file if proxy is not None and proxy.runtime_file else config.state_dir / "proxy" / "runtime.json"


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

    async def disable(self, host: str) -> None:
        await self.driver.disable(self.app, host)


class DesiredWeights:
    """The canary weights the operator set, kept so a restarted embedded proxy gets them back.

    The file holds the weights and which proxy process has them (here: its pid from the runtime file; on
    another host: the pid and start time its admin API reports): a proxy with another one has restarted
    since (with the config's weights), even if no console watched it happen.
    """

    def __init__(self, path: Path, runtime: Path) -> None:
        self.path = path
        self.runtime = runtime

    def load(self) -> tuple[int | str | None, dict[str, int]]:
        try:
            data = json.loads(self.path.read_text())
            return data.get("pid"), {k: int(v) for k, v in data["weights"].items()}
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return None, {}

    def save(self, pid: int | str | None, weights: dict[str, int]) -> None:
        write_atomic(self.path, json.dumps({"pid": pid, "weights": weights}, sort_keys=True))

    def remember(self, app: str, canary_weight: int, instance: int | str | None) -> None:
        _, weights = self.load()
        self.save(instance, {**weights, app: canary_weight})

    def proxy_pid(self) -> int | None:
        try:
            return int(json.loads(self.runtime.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class TrafficService:
    def __init__(self, config: Config, fleet: Fleet, bus: EventBus) -> None:
        self.config = config
        self.fleet = fleet
        self.bus = bus
        self.desired = DesiredWeights(config.state_dir / "proxy" / "desired-weights.json", runtime_file(config))
        self._driver: TrafficDriver | None = None

    @property
    def configured(self) -> bool:
        return self.config.proxy is not None

    def fronted(self, app: str) -> bool:
        proxy = self.config.proxy
        return proxy is not None and app in proxy.frontends

    def driver(self) -> TrafficDriver:
        proxy = self.config.proxy
        if proxy is None:
            raise CommandFailed(f"no proxy configured: add a `proxy:` section to {self.config.file}")
        if self._driver is None:
            from opsconsole.traffic.drivers import open_driver

            if proxy.driver == "embedded" and proxy.host:
                self._driver = self._forwarded_driver(proxy.host)
                return self._driver
            transport = None
            if proxy.driver == "haproxy" and proxy.haproxy.host:
                host = self.fleet.inventory.get(proxy.haproxy.host)
                if host is None:
                    raise CommandFailed(f"proxy.haproxy.host {proxy.haproxy.host!r} is not a host of the inventory")
                transport = self.fleet.transport_for(host)
            token = None
            try:
                if proxy.driver == "haproxy":
                    # HAProxy's servers are named after the hosts of each pool's group: the driver must know them.
                    proxy = resolved_proxy(proxy, self.fleet.inventory.hosts)
                elif proxy.token_secret:
                    token = proxy.read_token(self.config.secrets)
            except ValueError as exc:
                raise CommandFailed(str(exc)) from None
            self._driver = open_driver(proxy, runtime_file=runtime_file(self.config), token=token,
                                       state_file=self.config.state_dir / "proxy" / "haproxy-desired.json",
                                       transport=transport)
        return self._driver

    def _forwarded_driver(self, name: str) -> TrafficDriver:
        """The embedded proxy on inventory host `name`, its admin API through an SSH-forwarded port."""
        from opsconsole.traffic.remote import ForwardedEmbeddedDriver
        from opsconsole.transport.ssh import SshTransport

        proxy = self.config.proxy
        assert proxy is not None
        host = self.fleet.inventory.get(name)
        if host is None:
            raise CommandFailed(f"proxy.host {name!r} is not a host of the inventory")
        transport = self.fleet.transport_for(host)
        if not isinstance(transport, SshTransport):
            raise CommandFailed(f"proxy.host {name!r} is reached with the {host.transport} transport; the admin "
                                "API of a proxy on another host needs SSH (its port is forwarded)")
        try:
            token = proxy.read_token(self.config.secrets)
        except ValueError as exc:
            raise CommandFailed(str(exc)) from None
        return ForwardedEmbeddedDriver(transport, token)

    def control_for(self, app: AppConfig) -> AppTrafficControl | None:
        """The rollout's drain/enable controls when the proxy fronts `app`, else None (no draining)."""
        return AppTrafficControl(self.driver(), app.name) if self.fronted(app.name) else None

    def report(self, app: AppTraffic) -> None:
        """Tell the front ends how the split stands now."""
        canary = app.pools.get("canary")
        self.bus.emit(CanaryState(
            app=app.app, split=app.split, configured_weight=canary.weight if canary else 0,
            effective_weight=canary.effective_weight if canary else 0,
            requests=tuple((p.name, p.counters.requests) for p in app.pools.values()),
            errors=tuple((p.name, p.counters.failed) for p in app.pools.values()),
            alert=app.alert.reason if app.alert else None,
            answers=tuple(sorted((k, v) for k, v in app.answers.items() if v)),
            panic=app.panic_pools, tunnels=app.tunnels_open))

    async def canary_weight(self, app: str) -> int | None:
        """The canary weight of `app` now: the proxy's answer; else what the operator last set; else None."""
        try:
            async with asyncio.timeout(3):
                state = await self.driver().state()
            canary = state.apps[app].pools.get("canary")
            return canary.weight if canary is not None else 0
        except (OperatorError, TimeoutError, OSError, KeyError, ValueError):
            return self.desired.load()[1].get(app)

    async def set_canary_weight(self, app: str, weight: int) -> AppTraffic:
        """Set the canary's share of `app`'s traffic, remember it for a restarted proxy, and report it."""
        state = await self.driver().set_canary_percent(app, weight)
        await self.remember(app, weight)
        self.report(state)
        return state

    async def remember(self, app: str, weight: int) -> None:
        """Keep `weight` as `app`'s desired canary weight, with which proxy process has it."""
        self.desired.remember(app, weight, await self._proxy_instance())

    def _say(self, text: str, level: str = "info") -> None:
        self.bus.emit(Message(text=text, level=level))

    async def reapply_if_restarted(self, seen: TrafficState | None = None) -> bool:
        """The embedded proxy keeps weights in memory only: when it restarted, put the operator's back.
        `seen`: a state just fetched from a `proxy.host` proxy, whose instance says which process runs
        (saves asking again). True when weights were put back (a state fetched before is out of date)."""
        if self.config.proxy is None or self.config.proxy.driver != "embedded":
            return False  # the HAProxy driver keeps and re-applies its own desired state
        pid, weights = self.desired.load()
        if not weights:
            return False
        now = seen.instance if seen is not None else await self._proxy_instance()
        if now is None or now == pid:
            return False
        if not self.config.proxy.host:
            self._driver = None  # its admin address may have changed with it (a forward finds it by itself)
        driver = self.driver()
        where = f" on {self.config.proxy.host}" if self.config.proxy.host else ""
        for app, weight in weights.items():
            if self.fronted(app):
                await driver.set_canary_percent(app, weight)
                self._say(f"proxy{where} restarted (pid {pid} → {now}): canary weight of {app} set back to {weight}%")
        self.desired.save(now, weights)
        return True

    async def _proxy_instance(self) -> int | str | None:
        """Which embedded proxy process runs now, None if unknown: its pid from the runtime file here; for
        `proxy.host`, its pid and start time from the admin API (the runtime file is on that host)."""
        proxy = self.config.proxy
        if proxy is None or not proxy.host:
            return self.desired.proxy_pid()
        try:
            return (await self.driver().state()).instance
        except OperatorError:
            return None  # down or restarting: the watch says so and asks again next poll

    async def watch(self) -> None:
        """Report every fronted app's split each STATE_POLL; a proxy that is down is said once, not every poll."""
        problem = None
        seen: dict[str, tuple[str | None, tuple[str, ...]]] = {}  # app -> (alert, panic pools) last said
        while True:
            try:
                # A proxy on another host tells which process it is in its state: one fetch serves both the
                # restart check and the report, fetched again only after weights were put back.
                state = await self.driver().state() if self.config.proxy and self.config.proxy.host else None
                if await self.reapply_if_restarted(state) or state is None:
                    state = await self.driver().state()
                for app in state.apps.values():
                    self.report(app)
                    self._say_turns(app, seen)
                if problem is not None:
                    self._say("proxy reachable again")
                problem = None
            except Exception as exc:  # a watch must outlive anything a poll meets: down, no runtime file yet, …
                if str(exc) != problem:
                    self._say(f"proxy: {exc}", level="warning")
                problem = str(exc)
                self._driver = None  # reopened next poll: the proxy may come back on another address
            await asyncio.sleep(STATE_POLL)

    def _say_turns(self, app: AppTraffic, seen: dict[str, tuple[str | None, tuple[str, ...]]]) -> None:
        """Say it when the canary alert latches or clears, or a pool goes into panic or out of it: the split's
        turns, once each (the split itself is reported every poll, for the panes, not as lines)."""
        alert, panic = (app.alert.reason if app.alert else None), app.panic_pools
        before_alert, before_panic = seen.get(app.app, (None, ()))
        seen[app.app] = (alert, panic)
        if alert != before_alert:
            if alert:
                self._say(f"{app.app}: canary alert: {alert}; everything goes to stable", level="warning")
            else:
                self._say(f"{app.app}: canary alert cleared")
        if panic != before_panic:
            if panic:
                self._say(f"{app.app}: panic in {', '.join(panic)}: no healthy member, balancing across all of them",
                          level="warning")
            else:
                self._say(f"{app.app}: out of panic: healthy members again")

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None
