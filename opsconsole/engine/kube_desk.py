"""The Kubernetes commands (`manifests`, `apply`) for apps on a `provider: kubernetes` group.

Plugged in beside the SSH desks: it reads the config and the release record and talks to the API
server through `opsconsole.kube.client`; it holds no engine.
"""

from __future__ import annotations

from opsconsole.config.model import AppConfig, Config
from opsconsole.engine import commands as C
from opsconsole.engine.rolling import Releases
from opsconsole.errors import CommandFailed
from opsconsole.events import EventBus
from opsconsole.kube.manifests import app_manifests, kube_section, to_yaml


class KubeDesk:
    def __init__(self, config: Config, bus: EventBus, releases: Releases) -> None:
        self.config = config
        self.bus = bus
        self.releases = releases

    def kube_app(self, name: str) -> AppConfig:
        app = self.config.apps[name]
        group = self.config.groups[app.group]
        if group.provider != "kubernetes":
            raise CommandFailed(f"app {name} runs on group {group.name} (provider: {group.provider}), "
                                "not on Kubernetes: it has no manifests")
        return app

    def version_for(self, app: AppConfig, asked: str | None) -> str:
        """`--version`, else the app's last release; with neither there is nothing to name in the image."""
        if asked:
            return asked
        released = self.releases.of(app.name)
        if released:
            return str(released[-1]["version"])
        raise CommandFailed(f"app {app.name} has no release yet: give the image version with --version")

    async def manifests(self, command: C.Manifests) -> str:
        app = self.kube_app(command.app)
        version = self.version_for(app, command.version)
        return to_yaml(app_manifests(app, self.config.groups[app.group], version)).rstrip("\n")

    async def apply(self, command: C.Apply) -> str:
        app = self.kube_app(command.app)
        group = self.config.groups[app.group]
        version = self.version_for(app, command.version)
        documents = app_manifests(app, group, version)  # built first: a bad template sends nothing
        from opsconsole.kube.client import KubeClient  # lightkube loads only when a cluster is used

        async with KubeClient(kube_section(group)) as client:
            applied = await client.apply(documents)
        return f"applied {len(applied)} objects of {app.name} at {version} (server-side, field manager opsconsole): " \
               + ", ".join(applied)
