"""The hosts as the engine sees them: the inventory, what each host is doing now, how to reach it.

Every engine service is given this one `Fleet` (not the engine): when EC2 instances come or go,
`reload()` rebuilds it in place, so every service sees the same hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from opsconsole.config.model import AppConfig, Config
from opsconsole.engine import commands as C
from opsconsole.errors import CommandFailed
from opsconsole.events import (
    Event,
    EventBus,
    HealthChanged,
    HealthSample,
    HostState,
    Message,
    RolloutStep,
    TaskFinished,
    TaskStarted,
)
from opsconsole.heartbeat.probe import ProbeTarget
from opsconsole.hosts import Host
from opsconsole.inventory import Inventory, build_inventory
from opsconsole.transport.base import Transport
from opsconsole.transport.local import LocalTransport
from opsconsole.transport.pool import SshOptions, SshPool
from opsconsole.transport.ssh import SshTransport


def ssh_options(config: Config) -> SshOptions:
    ssh = config.ssh
    return SshOptions(known_hosts=ssh.known_hosts, client_keys=ssh.identity_files, agent=ssh.agent,
                      ssh_config=ssh.ssh_config, jump=config.jump, max_channels=ssh.max_channels,
                      connect_timeout=ssh.connect_timeout)


@dataclass
class HostView:
    """What the engine knows of a host right now (front ends render this)."""

    host: Host
    activity: str = "idle"
    version: str | None = None
    healthy: bool | None = None
    latency: float | None = None
    detail: str = ""
    probe_ok: bool | None = None  # the last probe alone; `healthy` is the verdict after fall/rise

    @property
    def health(self) -> str:
        """The one health word every view shows: the verdict, with a last probe that disagrees named as such.

        up, down, unknown; "flapping" (up, but the last probe failed), "rising" (down, but it answered);
        "restarting" while a deploy runs and the probes fail — expected, not an outage.
        """
        if self.healthy is None:
            return "unknown"
        if self.probe_ok is False and self.activity == "deploying":
            return "restarting"
        if self.probe_ok is None or self.probe_ok == self.healthy:
            return "up" if self.healthy else "down"
        return "flapping" if self.healthy else "rising"


class Fleet:
    """Inventory, host views and transports, shared by the engine's services."""

    def __init__(self, config: Config, bus: EventBus) -> None:
        self.config = config
        self.bus = bus
        self.inventory: Inventory = build_inventory(config)
        self.views: dict[str, HostView] = {h.name: HostView(h) for h in self.inventory.hosts}
        self.ssh_pool = SshPool(ssh_options(config))
        self._transports: dict[str, Transport] = {}

    @property
    def names(self) -> C.Names:
        """What a command line may name: apps, groups, hosts (hosts change with `reload`)."""
        return C.Names(apps=tuple(self.config.apps), groups=tuple(self.config.groups),
                       hosts=tuple(self.inventory.names()))

    def say(self, text: str, level: str = "info", host: str | None = None) -> None:
        self.bus.emit(Message(text=text, level=level, host=host))

    # -- reaching hosts ----------------------------------------------------------
    def transport_for(self, host: Host) -> Transport:
        if host.name not in self._transports:
            if host.transport == "ssh":
                self._transports[host.name] = SshTransport(host, self.ssh_pool)
            elif host.transport == "local":
                self._transports[host.name] = LocalTransport(host, self.bus.redactor)
            else:
                raise CommandFailed(f"{host.name}: unknown transport {host.transport!r}")
        return self._transports[host.name]

    async def endpoint(self, host: Host, port: int) -> tuple[str, int]:
        """Where to reach a host's port: directly, or through an SSH forward when it sits behind the jump host."""
        if host.transport == "ssh" and self.config.jump is not None:
            return await self.ssh_pool.forward(host, port)
        return host.address, port

    # -- which hosts ---------------------------------------------------------------
    def canary_hosts(self, app: str) -> list[str]:
        """The hosts of `app`'s canary pool when the proxy fronts it (a pool names a group or its members)."""
        proxy = self.config.proxy
        if proxy is None or app not in proxy.frontends:
            return []
        canary = proxy.frontends[app].pools.get("canary")
        if canary is None:
            return []
        if canary.group:
            return [h.name for h in self.inventory.group(canary.group)]
        return [m.name for m in canary.members]

    def group_versions(self, group: str) -> list[str | None]:
        """The version each host of `group` reports running (None: not known)."""
        return [self.views[h.name].version if h.name in self.views else None for h in self.inventory.group(group)]

    def canary_version(self, app: str) -> str:
        """The one version `app`'s canary hosts run (what `canary promote` rolls out); CommandFailed naming
        what they report when they report none or more than one."""
        hosts = [self.views[h] for h in self.canary_hosts(app) if h in self.views]
        versions = sorted({str(view.version) for view in hosts if view.version})
        if len(versions) != 1:
            raise CommandFailed(f"cannot tell the canary's version (its hosts report {', '.join(versions) or 'none'})")
        return versions[0]

    def app_hosts(self, app: AppConfig) -> list[Host]:
        """The hosts that run `app`: its group, and its canary pool's hosts when the proxy fronts it."""
        hosts = self.inventory.group(app.group)
        for name in self.canary_hosts(app.name):
            host = self.inventory.get(name)
            if host is not None and host not in hosts:
                hosts.append(host)
        return hosts

    def probe_targets(self) -> list[ProbeTarget]:
        """Every host of every app with the app's health check; app-less groups with their own probe."""
        targets: dict[str, ProbeTarget] = {}
        for app in self.config.apps.values():
            for host in self.app_hosts(app):
                targets.setdefault(host.name, ProbeTarget(host, app.health))
        for group in self.config.groups.values():
            if group.health is not None:
                for host in self.inventory.group(group.name):
                    targets.setdefault(host.name, ProbeTarget(host, group.health))
        return list(targets.values())

    def host_vars(self, app: AppConfig, host: Host) -> dict[str, Any]:
        return {**app.vars, **host.vars, "inventory_hostname": host.name, "ansible_host": host.address,
                "port": host.port, "host_root": self.transport_for(host).root, "app": app.name}

    # -- what each host is doing -----------------------------------------------------
    def set_activity(self, host: Host | None, activity: str, detail: str = "") -> None:
        if host is None:
            return
        view = self.views[host.name]
        view.activity, view.detail = activity, detail
        self.bus.emit(HostState(host=host.name, group=host.group, activity=activity, version=view.version, detail=detail))

    def track(self, event: Event) -> None:
        """Keep host views current from what the parts report (subscribed to the bus by the engine)."""
        if isinstance(event, TaskStarted) and event.host in self.views:
            if self.views[event.host].activity != "deploying":
                self.set_activity(self.views[event.host].host, "deploying", event.task)
        elif isinstance(event, TaskFinished) and event.status in ("failed", "cancelled") and event.host in self.views:
            # A host whose work was stopped is not FAILED: it stays where the stop found it, and says so.
            self.set_activity(self.views[event.host].host, "failed" if event.status == "failed" else "aborted",
                              event.message)
        elif isinstance(event, HealthSample) and event.host in self.views:
            view = self.views[event.host]
            view.latency = event.latency
            view.probe_ok = event.ok
            if view.healthy is None:  # until the monitor's first verdict
                view.healthy = event.ok
            if event.version:
                view.version = event.version
        elif isinstance(event, HealthChanged) and event.host in self.views:
            self.views[event.host].healthy = event.healthy  # the verdict after fall/rise, not one probe
        elif isinstance(event, RolloutStep) and event.host in self.views:
            activity = {"draining": "drained", "deploying": "deploying", "gating": "deploying",
                        "done": "idle", "failed": "failed"}.get(event.state)
            if activity:
                self.set_activity(self.views[event.host].host, activity, event.detail)

    # -- hosts that come and go without the inventory (Kubernetes pods) ---------------------
    def put_host(self, host: Host, *, version: str | None, healthy: bool, activity: str, detail: str) -> None:
        """Add or update a host reported from outside the inventory, and tell the front ends what changed
        (a pod's watch says MODIFIED, and a resync lists every pod again, with nothing to tell)."""
        view = self.views.get(host.name)
        if view is not None and view.host == host and (view.version, view.healthy, view.activity, view.detail) == \
                (version, healthy, activity, detail):
            return
        if view is None or view.host != host:
            view = self.views[host.name] = HostView(host, version=version)
        view.version = version
        if view.healthy != healthy:
            view.healthy = healthy
            self.bus.emit(HealthChanged(host=host.name, healthy=healthy, reason=detail))
        self.set_activity(host, activity, detail)

    def drop_host(self, name: str) -> None:
        view = self.views.pop(name, None)
        if view is not None:
            self.bus.emit(HostState(host=name, group=view.host.group, activity="stopped", version=view.version,
                                    detail="gone"))

    def reload(self) -> None:
        """The fleet changed (EC2 instances came or went): rebuild hosts and views; versions known are kept."""
        self.inventory = build_inventory(self.config)
        for host in self.inventory.hosts:
            if host.name not in self.views or self.views[host.name].host != host:
                old = self.views.get(host.name)
                self.views[host.name] = HostView(host, version=old.version if old else None)
                self._transports.pop(host.name, None)
        # Pods are not in the inventory: the pod watch keeps them (put_host/drop_host).
        for name in [n for n, v in self.views.items() if self.inventory.get(n) is None and v.host.transport != "kube"]:
            del self.views[name]

    async def close(self) -> None:
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()
        await self.ssh_pool.close()


def with_app_vars(app: AppConfig, host: Host) -> Host:
    return replace(host, vars={**app.vars, **host.vars})
