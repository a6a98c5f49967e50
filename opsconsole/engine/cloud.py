"""EC2 groups as engine commands: provision machines, scale, decommission — bound to `opsconsole.ec2`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from opsconsole.config.model import Config, GroupConfig
from opsconsole.engine import commands as C
from opsconsole.engine.fleet import Fleet
from opsconsole.engine.traffic_service import TrafficService
from opsconsole.errors import CommandFailed
from opsconsole.events import EventBus
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.hosts import Host

if TYPE_CHECKING:  # boto3 is imported only when an EC2 group is worked on
    from opsconsole.ec2.fleet import Ec2Fleet

SSH_WAIT = 300.0


class CloudDesk:
    """`provision` (its machines), `scale` and `decommission` of EC2 groups.

    When instances came or went it rebuilds the fleet's hosts and the heartbeat's targets.
    """

    def __init__(self, config: Config, fleet: Fleet, bus: EventBus, traffic: TrafficService,
                 monitor: HeartbeatMonitor) -> None:
        self.config = config
        self.hosts = fleet
        self.bus = bus
        self.traffic = traffic
        self.monitor = monitor
        self._fleets: dict[str, Ec2Fleet] = {}

    def on_fleet_changed(self) -> None:
        self.hosts.reload()
        self.monitor.set_targets(self.hosts.probe_targets())

    def fleet(self, group: GroupConfig) -> Ec2Fleet:
        if group.provider != "ec2" or group.ec2 is None:
            raise CommandFailed(f"group {group.name} is not an EC2 group (provider: {group.provider})")
        if group.name not in self._fleets:
            from opsconsole.ec2.fleet import Ec2Fleet

            self._fleets[group.name] = Ec2Fleet(self.config.project, group.name, group.ec2, group.count,
                                                self.config.state_dir, self.bus)
        return self._fleets[group.name]

    async def provision(self, group: GroupConfig) -> str:
        """Create what is missing to reach `count`, record it, and wait until each answers SSH."""
        instances = await self.fleet(group).provision()
        self.on_fleet_changed()
        await self._wait_for_ssh(group)
        return f"{len(instances)} instance(s) of {group.name} running"

    async def _wait_for_ssh(self, group: GroupConfig) -> None:
        async def one(host: Host) -> None:
            deadline = asyncio.get_running_loop().time() + SSH_WAIT
            while True:
                try:
                    result = await self.hosts.transport_for(host).run("true", timeout=15)
                    if result.ok:
                        return
                except Exception as exc:  # not up yet: sshd still starting, or a host key to accept
                    if "host key" in str(exc).lower():
                        raise CommandFailed(str(exc)) from None
                    last = str(exc)
                else:
                    last = result.describe()
                if asyncio.get_running_loop().time() > deadline:
                    raise CommandFailed(f"{host.name}: no SSH after {SSH_WAIT:g}s ({last})")
                await asyncio.sleep(2)

        self.hosts.say(f"{group.name}: waiting for SSH on {len(self.hosts.inventory.group(group.name))} host(s)")
        await asyncio.gather(*(one(h) for h in self.hosts.inventory.group(group.name)))

    async def scale(self, command: C.Scale) -> str:
        group = self.config.groups[command.group]
        fleet = self.fleet(group)
        plan = await fleet.plan_scale(command.count)
        if plan.remove and not command.yes:
            names = ", ".join(f"{i.name} ({i.instance_id})" for i in plan.remove)
            raise CommandFailed(f"scale {group.name} to {command.count} would terminate {len(plan.remove)}: {names}; "
                                 f"say `scale {group.name} {command.count} --yes` to do it")
        for app in self.config.apps.values():  # drain what goes away, so no request meets a dying host
            control = self.traffic.control_for(app) if app.group == group.name else None
            if control is not None:
                for instance in plan.remove:
                    await control.drain(instance.name)
                    await control.wait_drained(instance.name, app.rollout.drain_timeout)
        added, removed = await fleet.scale(command.count, plan)
        self.on_fleet_changed()
        if added:
            await self._wait_for_ssh(group)
        return f"{group.name}: {len(added)} added, {len(removed)} removed; {command.count} wanted"

    async def decommission(self, command: C.Decommission) -> str:
        group = self.config.groups[command.group]
        fleet = self.fleet(group)
        plan = await fleet.decommission_plan()
        names = ", ".join(f"{i.name} ({i.instance_id})" for i in plan) or "none"
        if not command.yes:
            raise CommandFailed(f"decommission {group.name} would terminate {len(plan)} instance(s): {names}; "
                                 f"say `decommission {group.name} --yes` to do it")
        removed = await fleet.decommission(plan)
        self.on_fleet_changed()
        return f"{group.name}: terminated {len(removed)} instance(s): {names}"
