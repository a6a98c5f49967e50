"""EC2 groups as engine commands: provision machines, scale, decommission — bound to `opsconsole.ec2`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from opsconsole.engine import commands as C

if TYPE_CHECKING:
    from opsconsole.config.model import GroupConfig
    from opsconsole.engine.engine import Engine

SSH_WAIT = 300.0


class CloudDesk:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._fleets: dict[str, Any] = {}

    def fleet(self, group: "GroupConfig") -> Any:
        engine = self.engine
        if group.provider != "ec2":
            raise engine.failure(f"group {group.name} is not an EC2 group (provider: {group.provider})")
        if group.name not in self._fleets:
            from opsconsole.ec2.fleet import Ec2Fleet

            self._fleets[group.name] = Ec2Fleet(engine.config.project, group.name, group.ec2, group.count,
                                                engine.config.state_dir, engine.bus)
        return self._fleets[group.name]

    async def _guard(self, work: Any) -> Any:
        from opsconsole.ec2.errors import Ec2Error

        try:
            return await work
        except Ec2Error as exc:
            raise self.engine.failure(str(exc)) from None

    async def provision(self, group: "GroupConfig") -> str:
        """Create what is missing to reach `count`, record it, and wait until each answers SSH."""
        engine = self.engine
        instances = await self._guard(self.fleet(group).provision())
        engine.reload_inventory()
        await self._wait_for_ssh(group)
        return f"{len(instances)} instance(s) of {group.name} running"

    async def _wait_for_ssh(self, group: "GroupConfig") -> None:
        engine = self.engine

        async def one(host: Any) -> None:
            deadline = asyncio.get_running_loop().time() + SSH_WAIT
            while True:
                try:
                    result = await engine.transport_for(host).run("true", timeout=15)
                    if result.ok:
                        return
                except Exception as exc:  # not up yet: sshd still starting, or a host key to accept
                    if "host key" in str(exc).lower():
                        raise engine.failure(str(exc)) from None
                    last = str(exc)
                else:
                    last = result.describe()
                if asyncio.get_running_loop().time() > deadline:
                    raise engine.failure(f"{host.name}: no SSH after {SSH_WAIT:g}s ({last})")
                await asyncio.sleep(2)

        engine.say(f"{group.name}: waiting for SSH on {len(engine.inventory.group(group.name))} host(s)")
        await asyncio.gather(*(one(h) for h in engine.inventory.group(group.name)))

    async def scale(self, command: C.Scale) -> str:
        engine = self.engine
        group = engine.config.groups[command.group]
        fleet = self.fleet(group)
        plan = await self._guard(fleet.plan_scale(command.count))
        if plan.remove and not command.yes:
            names = ", ".join(f"{i.name} ({i.instance_id})" for i in plan.remove)
            raise engine.failure(f"scale {group.name} to {command.count} would terminate {len(plan.remove)}: {names}; "
                                 f"say `scale {group.name} {command.count} --yes` to do it")
        for app in engine.config.apps.values():  # drain what goes away, so no request meets a dying host
            control = engine.traffic_control(app) if app.group == group.name else None
            if control is not None:
                for instance in plan.remove:
                    await control.drain(instance.name)
                    await control.wait_drained(instance.name, app.rollout.drain_timeout)
        added, removed = await self._guard(fleet.scale(command.count, plan))
        engine.reload_inventory()
        if added:
            await self._wait_for_ssh(group)
        return f"{group.name}: {len(added)} added, {len(removed)} removed; {command.count} wanted"

    async def decommission(self, command: C.Decommission) -> str:
        engine = self.engine
        group = engine.config.groups[command.group]
        fleet = self.fleet(group)
        plan = await self._guard(fleet.decommission_plan())
        names = ", ".join(f"{i.name} ({i.instance_id})" for i in plan) or "none"
        if not command.yes:
            raise engine.failure(f"decommission {group.name} would terminate {len(plan)} instance(s): {names}; "
                                 f"say `decommission {group.name} --yes` to do it")
        removed = await self._guard(fleet.decommission(plan))
        engine.reload_inventory()
        return f"{group.name}: terminated {len(removed)} instance(s): {names}"
