"""EC2 groups as engine commands: provision machines, scale, decommission — bound to `opsconsole.ec2`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from opsconsole.config.model import Config, GroupConfig
from opsconsole.engine import commands as C
from opsconsole.engine.fleet import Fleet
from opsconsole.engine.traffic_service import TrafficService
from opsconsole.errors import CommandFailed
from opsconsole.events import EventBus
from opsconsole.fsio import write_atomic
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.hosts import Host

if TYPE_CHECKING:  # boto3 is imported only when an EC2 group is worked on
    from opsconsole.ec2.fleet import Ec2Fleet

SSH_WAIT = 300.0


class ScaleMemory:
    """The counts `scale` set, kept in the state dir so a later `provision` (or console) keeps them.

    Each entry also holds the config's `count` at the time: when the operator edits `count`, the
    config speaks again and the scaled count is forgotten.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "ec2" / "scaled.json"

    def _load(self) -> dict[str, dict[str, int]]:
        try:
            data = json.loads(self.path.read_text())
            return {g: {"count": int(e["count"]), "config_count": int(e["config_count"])} for g, e in data.items()}
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # none yet, or unreadable: the config's count holds

    def _save(self, entries: dict[str, dict[str, int]]) -> None:
        write_atomic(self.path, json.dumps(entries, sort_keys=True, indent=1) + "\n")

    def remember(self, group: str, count: int, config_count: int) -> None:
        entries = self._load()
        entries.pop(group, None)
        if count != config_count:  # back at the config's count: nothing to remember
            entries[group] = {"count": count, "config_count": config_count}
        self._save(entries)

    def scaled(self, group: GroupConfig) -> int | None:
        """The count `scale` set for `group`, or None when there is none or the config's `count` changed since."""
        entry = self._load().get(group.name)
        if entry is None:
            return None
        if entry["config_count"] != group.count:
            entries = self._load()
            entries.pop(group.name, None)
            self._save(entries)
            return None
        return entry["count"]

    def count(self, group: GroupConfig) -> int:
        scaled = self.scaled(group)
        return group.count if scaled is None else scaled


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
        self.scales = ScaleMemory(config.state_dir)

    def on_fleet_changed(self) -> None:
        self.hosts.reload()
        self.monitor.set_targets(self.hosts.probe_targets())

    def fleet(self, group: GroupConfig) -> Ec2Fleet:
        if group.provider != "ec2" or group.ec2 is None:
            raise CommandFailed(f"group {group.name} is not an EC2 group (provider: {group.provider})")
        if group.name not in self._fleets:
            from opsconsole.ec2.fleet import Ec2Fleet

            self._fleets[group.name] = Ec2Fleet(self.config.project, group.name, group.ec2,
                                                self.scales.count(group), self.config.state_dir, self.bus)
        return self._fleets[group.name]

    def status_lines(self) -> list[str]:
        """One line per EC2 group whose running count `scale` set, for `status`."""
        lines = []
        for group in self.config.groups.values():
            scaled = self.scales.scaled(group) if group.provider == "ec2" else None
            if scaled is not None:
                lines.append(f"{group.name}: scaled to {scaled} (config count {group.count}); `provision` keeps "
                             f"{scaled} until count changes in {self.config.file}")
        return lines

    async def provision(self, group: GroupConfig) -> str:
        """Create what is missing to reach `count` (or the count `scale` set since), record it, wait for SSH."""
        fleet = self.fleet(group)
        fleet.count = self.scales.count(group)  # a scale done by another console, or a count edited since
        instances = await fleet.provision()
        self.on_fleet_changed()
        await self._wait_for_ssh(group)
        return f"{len(instances)} instance(s) of {group.name} running"

    async def _wait_for_ssh(self, group: GroupConfig) -> None:
        """Every host of `group` answers over SSH, or fail naming the first that did not within SSH_WAIT.

        At most `ssh.max_connecting` attempts are in flight (the pool paces handshakes by the same
        number): 200 new instances are tried ten at a time, not 200 at once against a booting sshd
        or the bastion. A slot is held for one attempt only, never while waiting to try again.
        """
        hosts = self.hosts.inventory.group(group.name)
        slots = asyncio.Semaphore(self.config.ssh.max_connecting)
        up = 0
        every = max(1, len(hosts) // 10)  # progress about ten times, not once per host

        async def one(host: Host) -> None:
            nonlocal up
            deadline = asyncio.get_running_loop().time() + SSH_WAIT
            while True:
                try:
                    async with slots:
                        result = await self.hosts.transport_for(host).run("true", timeout=15)
                    if result.ok:
                        break
                except Exception as exc:  # not up yet: sshd still starting, or a host key to accept
                    if "host key" in str(exc).lower():
                        raise CommandFailed(str(exc)) from None
                    last = str(exc)
                else:
                    last = result.describe()
                if asyncio.get_running_loop().time() > deadline:
                    raise CommandFailed(f"{host.name}: no SSH after {SSH_WAIT:g}s ({last})")
                await asyncio.sleep(2)
            up += 1
            if up % every == 0 or up == len(hosts):
                self.hosts.say(f"{group.name}: SSH up on {up}/{len(hosts)} host(s)")

        self.hosts.say(f"{group.name}: waiting for SSH on {len(hosts)} host(s), "
                       f"{self.config.ssh.max_connecting} at a time")
        await asyncio.gather(*(one(h) for h in hosts))

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
        self.scales.remember(group.name, command.count, group.count)
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
        self.scales.remember(group.name, group.count, group.count)  # a group started afresh follows its config
        fleet.count = group.count
        self.on_fleet_changed()
        return f"{group.name}: terminated {len(removed)} instance(s): {names}"
