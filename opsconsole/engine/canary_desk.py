"""The `canary` and `traffic` commands, over the traffic service, the deployer and the rollouts."""

from __future__ import annotations

import asyncio
import time

from opsconsole.canary.steps import CanaryFailed, walk_steps
from opsconsole.builds.runner import BuildRecord
from opsconsole.config.model import AppConfig, Config
from opsconsole.engine import commands as C
from opsconsole.engine.deployer import Deployer
from opsconsole.engine.fleet import Fleet
from opsconsole.engine.rolling import Rollouts
from opsconsole.engine.traffic_service import TrafficService
from opsconsole.errors import CommandFailed
from opsconsole.rollouts.runner import NoTraffic
from opsconsole.traffic.base import AppTraffic, TrafficUnavailable


class CanaryDesk:
    def __init__(self, config: Config, fleet: Fleet, traffic: TrafficService, deployer: Deployer,
                 rollouts: Rollouts) -> None:
        self.config = config
        self.fleet = fleet
        self.traffic_service = traffic
        self.deployer = deployer
        self.rollouts = rollouts

    async def canary(self, command: C.Canary) -> str:
        service = self.traffic_service
        if not service.fronted(command.app):
            raise CommandFailed(f"app {command.app} has no canary: the proxy does not front it "
                                f"(add it under proxy.apps in {self.config.file})")
        if command.action == "deploy":  # needs no proxy: it puts a version on the canary's hosts
            return await self._deploy_canary(command)
        if command.action == "weight":
            before = await service.canary_weight(command.app)
            after = await service.set_canary_weight(command.app, int(command.weight or 0))
            weight = int(command.weight or 0)
            change = (f"stable/canary {100 - before}/{before} → {100 - weight}/{weight}. " if before is not None
                      else f"stable/canary now {100 - weight}/{weight}. ")
            return change + self.describe(after)
        if command.action == "clear":
            if not await service.driver().clear_alert(command.app):
                raise CommandFailed(f"the canary of {command.app} is still down: the alert stays")
            return f"canary alert of {command.app} cleared"
        if command.action == "rollback":
            app = await service.set_canary_weight(command.app, 0)
            return f"canary of {command.app} rolled back: all traffic to stable. " + self.describe(app)
        if command.action == "steps":
            try:
                final = await walk_steps(service.driver(), command.app, self.config.canary, self.fleet.say)
            except CanaryFailed as exc:
                await service.remember(command.app, 0)
                raise CommandFailed(f"canary {command.app}: {exc}") from None
            await service.remember(command.app, final)
            return f"canary {command.app} held at every step up to {final}%"
        if command.action == "promote":
            return await self._promote(command)
        raise CommandFailed(f"unknown canary action {command.action!r}")

    async def _deploy_canary(self, command: C.Canary) -> str:
        app = self.config.apps[command.app]
        hosts = self.fleet.canary_hosts(app.name)
        if not hosts:
            raise CommandFailed(f"app {app.name} has no canary hosts (proxy.apps.{app.name}.pools.canary)")
        record = await self.deployer.artifact_for(app, command.version)

        def lost(why: Exception) -> None:
            self.fleet.say(f"canary deploy of {app.name} stopped: {why}", level="error")

        # The app's deploy lock, as deploy and roll take it: two consoles deploying canaries at once raced.
        async with self.rollouts.holding(app, f"canary deploy {app.name} {record.short}", lost):
            return await self._deploy_canary_hosts(app, hosts, record)

    async def _deploy_canary_hosts(self, app: AppConfig, hosts: list[str], record: BuildRecord) -> str:
        # A deploy restarts the canary, and a restart is no canary death: out of rotation and out of health
        # checks (maintenance) while it happens, so no client meets a restarting member and the alert does not
        # latch (seen under load: the restart outlasted `fall` checks and the next `weight 20` gave 0%).
        # Back in rotation whatever the deploy did: a canary that then fails its checks latches the alert, which
        # is the seed's rule doing its job, in plain sight.
        try:
            control = self.rollouts.traffic_for(app)
            await asyncio.gather(*(control.drain(h) for h in hosts))
        except TrafficUnavailable as exc:
            # No proxy running (a first bring-up deploys before starting it): no client to protect.
            self.fleet.say(f"canary {app.name}: deploying without taking it out of rotation: {exc}", level="warning")
            control = NoTraffic()
        await asyncio.gather(*(control.wait_drained(h, app.rollout.drain_timeout) for h in hosts))
        await asyncio.gather(*(control.disable(h) for h in hosts))
        try:
            result = await self.deployer.run_deploy_playbook(app, hosts, version=record.short, commit=record.commit,
                                                             artifact=record.artifact or "", parallel=True,
                                                             steered=self.rollouts.steered_hosts())
        finally:
            await asyncio.shield(asyncio.gather(*(control.enable(h) for h in hosts)))
        if not result.ok:
            raise CommandFailed(f"canary deploy failed: {result.failure_text()}")
        return f"canary of {app.name} runs {record.short} on {', '.join(hosts)}"

    async def _promote(self, command: C.Canary) -> str:
        """Stable gets the canary's version by a rolling update; then the canary weight returns to 0."""
        version = self.fleet.canary_version(command.app)
        build = self.deployer.succeeded_build(command.app, version)
        if build is None:
            raise CommandFailed(f"no successful build of {command.app} {version} is known to promote")
        app = self.config.apps[command.app]
        newer = await self.deployer.older_than(app, version, self.fleet.group_versions(app.group))
        if newer:
            self.fleet.say(f"the canary's {version} is older than {', '.join(newer)}, which stable runs: promoting it "
                           "takes stable back", level="warning")
        self.fleet.say(f"promoting {command.app} {version}: rolling it out to the stable pool")
        outcome = await self.rollouts.roll(C.Roll(app=command.app, version=build.commit))
        await self.traffic_service.driver().set_canary_percent(command.app, 0)
        await self.traffic_service.remember(command.app, 0)
        return f"{outcome}; canary weight back to 0"

    async def traffic(self, command: C.Traffic) -> str:
        state = await self.traffic_service.driver().state()
        say = self.fleet.say
        apps = [a for name, a in state.apps.items() if command.app in (None, name)]
        for app in apps:
            say(self.describe(app))
            for pool in app.pools.values():
                c = pool.counters
                say(f"  {pool.name:<7} weight {pool.weight:>3} (effective {pool.effective_weight:>3})  "
                    f"requests {c.requests}  failed {c.failed}  upstream errors {c.errors}"
                    + (f"  queued {pool.queued} (waiting {pool.queue})" if pool.queued else "")
                    + ("  PANIC: no healthy member, balancing across all" if pool.panic else ""))
                for m in pool.members:
                    health = "up" if m.healthy else ("EJECTED" if m.ejected else "DOWN")
                    say(f"    {m.name:<14} {m.address}:{m.port} {health:<7} "
                        f"{m.admin:<9} in flight {m.inflight}  requests {m.counters.requests}"
                        + (f"  tunnels {m.tunnels}" if m.tunnels else "")
                        + (f"  ({m.check})" if m.check and not m.healthy else ""))
            if app.answers:
                say("  the proxy answered itself: " + ", ".join(f"{k}×{v}" for k, v in sorted(app.answers.items())))
            if app.tunnels_total:
                say(f"  tunnels (WebSocket): {app.tunnels_open} open, {app.tunnels_total} opened")
        return f"{state.driver} proxy, {len(apps)} app(s)"

    @staticmethod
    def describe(app: AppTraffic) -> str:
        # weight set, then what the proxy applies now: "→" here read as before→after, which it never was
        pools = ", ".join(f"{p.name} {p.weight}%" + (f" (live {p.effective_weight}%)" if p.effective_weight != p.weight else "")
                          for p in app.pools.values())
        share = f"canary gets {app.canary_percent:.0f}%" if app.canary_percent is not None else "no pool can take traffic"
        alert = f"; ALERT since {time.strftime('%H:%M:%S', time.localtime(app.alert.since))}: {app.alert.reason}" \
            if app.alert else ""
        return f"{app.app} ({app.split} split): {pools}; {share}{alert}"
