"""The Kubernetes commands for apps on a `provider: kubernetes` group.

`manifests` and `apply`, and `roll`, `rollback`, `pause`, `resume`, `history` and `abort` where the
app runs on Kubernetes: the engine hands a command here when its app is a Kubernetes app (`route`),
and to the SSH desk otherwise, so the keys and the command language are the same for both. It reads
the config and the release record and talks to the API server through `opsconsole.kube.client`;
it holds no engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from opsconsole.config.model import AppConfig, Config, GroupConfig
from opsconsole.engine import commands as C
from opsconsole.engine.fleet import Fleet
from opsconsole.engine.rolling import Releases
from opsconsole.errors import CommandFailed, OperatorError
from opsconsole.events import EventBus, RolloutStep
from opsconsole.kube.manifests import (NAME_LABEL, TRACK_LABEL, app_manifests, deployment, deployment_name,
                                       image_for, kube_section, to_yaml, version_of_image)
from opsconsole.kube.pods import pod_state
from opsconsole.kube.progress import Progress, batch_strategy, read_progress

if TYPE_CHECKING:  # lightkube loads only when a cluster is used
    from opsconsole.kube.client import KubeClient
    from opsconsole.traffic.base import TrafficDriver

Cmd = TypeVar("Cmd", bound=C.Command)
REVISION = "deployment.kubernetes.io/revision"


@dataclass
class _Live:
    client: "KubeClient"
    name: str
    rollout_id: str
    paused: bool = False  # as we asked (pause/resume)
    watched_paused: bool = False  # as the watch last showed it


class KubeDesk:
    QUIET_WATCH = 5.0  # seconds of silence on a Deployment watch after which the Deployment is read once

    def __init__(self, config: Config, bus: EventBus, releases: Releases, fleet: Fleet,
                 holding: Callable[[AppConfig, str, Callable[[Exception], None]],
                                   contextlib.AbstractAsyncContextManager[None]] | None = None) -> None:
        """`holding`: holds the app's deploy lock, the one an SSH roll takes (RollingDesk.holding; None: no
        lock, for tests of parts)."""
        self.config = config
        self.holding = holding
        self.bus = bus
        self.releases = releases
        self.fleet = fleet
        self.live: dict[str, _Live] = {}  # app -> its rollout being watched

    # -- routing: the same command, the Kubernetes way when the app is on Kubernetes -------------
    def is_kube(self, app: str | None) -> bool:
        spec = self.config.apps.get(app or "")
        return spec is not None and self.config.groups[spec.group].provider == "kubernetes"

    def route(self, ssh: Callable[[Cmd], Awaitable[str | None]],
              kube: Callable[[Cmd], Awaitable[str | None]]) -> Callable[[Cmd], Awaitable[str | None]]:
        async def handler(command: Cmd) -> str | None:
            return await (kube if self.is_kube(getattr(command, "app", None)) else ssh)(command)
        return handler

    def both(self, ssh: Callable[[Cmd], Awaitable[str | None]], ssh_busy: Callable[[], bool],
             kube: Callable[[Cmd], Awaitable[str]]) -> Callable[[Cmd], Awaitable[str | None]]:
        """`pause`/`resume` name no app: they act on the live rollouts of both kinds."""
        async def handler(command: Cmd) -> str | None:
            if not self.live:
                return await ssh(command)
            said = [await kube(command)]
            if ssh_busy():
                said.append(str(await ssh(command)))
            return "; ".join(said)
        return handler

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

    def _client(self, app: AppConfig) -> "KubeClient":
        from opsconsole.kube.client import KubeClient

        return KubeClient(kube_section(self.config.groups[app.group]))

    def _step(self, live: _Live, app: str, state: str, detail: str = "") -> None:
        self.bus.emit(RolloutStep(rollout_id=live.rollout_id, app=app, host=None, state=state, detail=detail))

    # -- manifests and apply ---------------------------------------------------------------------
    async def manifests(self, command: C.Manifests) -> str:
        app = self.kube_app(command.app)
        version = self.version_for(app, command.version)
        return to_yaml(app_manifests(app, self.config.groups[app.group], version)).rstrip("\n")

    async def apply(self, command: C.Apply) -> str:
        app = self.kube_app(command.app)
        group = self.config.groups[app.group]
        version = self.version_for(app, command.version)
        documents = app_manifests(app, group, version)  # built first: a bad template sends nothing
        async with self._client(app) as client:
            applied = await client.apply(documents)
        return f"applied {len(applied)} objects of {app.name} at {version} (server-side, field manager opsconsole): " \
               + ", ".join(applied)

    # -- roll ----------------------------------------------------------------------------------
    async def roll(self, command: C.Roll) -> str:
        app = self.kube_app(command.app)
        group = self.config.groups[app.group]
        kube = kube_section(group)
        version = command.version or await self.branch_version(app)
        if app.name in self.live:
            raise CommandFailed(f"a rollout of {app.name} is already running")
        unavailable, surge = batch_strategy(command.batch, kube.replicas)
        target = deployment(app, group, version, max_unavailable=unavailable, max_surge=surge)
        # A roll rolls: a Deployment left paused (`kubectl rollout pause`, a pause that came as a roll ended)
        # would hold the new template without a word, until our safety net. Said below when it was paused.
        target["spec"]["paused"] = False
        image = image_for(app, version)
        name = deployment_name(app)
        if command.plan_only:
            return (f"roll {app.name}: Deployment {kube.namespace or 'default'}/{name} to {image}, "
                    f"{kube.replicas} replicas, maxUnavailable {unavailable}, maxSurge {surge}, "
                    f"progress deadline {kube.progress_deadline}s")
        async with self._client(app) as client, contextlib.AsyncExitStack() as held:
            current = await client.get_deployment(name)  # also: a bad context or server fails here, changing nothing
            previous = _image_of(current)
            was_paused = bool(((current or {}).get("spec") or {}).get("paused"))
            live = _Live(client, name, f"{app.name}-k8s-{int(time.time() * 1000)}")
            await held.enter_async_context(self._locked(app, live, f"roll {app.name} to {version}"))  # LockHeld: nothing sent
            self.live[app.name] = live
            try:
                self._step(live, app.name, "running", f"Deployment {name}: {previous or 'none'} → {image}, "
                                                      f"maxUnavailable {unavailable}, maxSurge {surge}"
                           + (" (it was paused, spec.paused: this roll resumes it)" if was_paused else ""))
                await client.apply([target])
                progress = await self._watch(live, app.name, kube.progress_deadline)
                if progress.failed:
                    return await self._failed(live, app, command, version, progress, previous)
                if live.paused or progress.paused:
                    # A pause (ours, or `kubectl rollout pause`) landed as the last pods became ready: there is
                    # nothing left to hold. Out of `live` first: a pause sent meanwhile then undoes itself.
                    self.live.pop(app.name, None)
                    self._step(live, app.name, "running", await self._unpause_done(client, name))
            except asyncio.CancelledError:  # `abort`: stop here and go back to what ran before
                await asyncio.shield(self._undo(live, app, previous, "aborted"))
                raise
            finally:
                self.live.pop(app.name, None)
        self.releases.record(app.name, version, version, image)
        self._step(live, app.name, "succeeded", f"{kube.replicas} pod(s) run {version}")
        return f"rolled {app.name} to {version}: {progress.text}"

    async def _unpause_done(self, client: "KubeClient", name: str) -> str:
        """Lift a pause from a Deployment whose rollout completed; what happened, in words. A failure leaves the
        roll done (its pods run the new version) and says how the pause can be lifted."""
        try:
            await client.set_paused(name, False)
        except OperatorError as exc:
            return (f"the rollout completed, but the Deployment stays paused: {exc} (the next roll lifts it, or "
                    f"`kubectl rollout resume deployment/{name}`)")
        return "the rollout completed before the pause took effect: the Deployment is not left paused"

    @contextlib.asynccontextmanager
    async def _locked(self, app: AppConfig, live: _Live, reason: str) -> AsyncIterator[None]:
        """Hold the app's deploy lock like an SSH roll: taken first (someone else's → LockHeld, nothing changed),
        renewed while the Deployment moves (lost → the roll stops, as `abort`), released however it ends."""
        if self.holding is None:
            yield
            return

        def lost(why: Exception) -> None:  # then the roll stops, as SSH rolls do
            self._step(live, app.name, "lock-lost", str(why))

        async with self.holding(app, reason, lost):
            yield

    async def branch_version(self, app: AppConfig) -> str:
        """No --version: the branch head's short commit, the tag CI gives the image it builds of that commit
        (the same version an SSH roll deploys)."""
        from opsconsole.builds.git import branch_head

        try:
            return (await branch_head(app.repo, app.branch))[:7]
        except OperatorError as exc:
            raise CommandFailed(f"roll {app.name}: no --version and the branch head is unknown: {exc}") from None

    def paused(self) -> list[str]:
        """Apps whose Deployment is paused (the console's space key resumes these)."""
        return [name for name, live in self.live.items() if live.paused]

    async def preview(self, command: C.Command) -> str:
        """The confirm text of a command on a Kubernetes app (changes nothing)."""
        if isinstance(command, C.Roll):
            try:
                return await self.roll(command if command.plan_only else replace(command, plan_only=True))
            except OperatorError as exc:
                return f"roll {command.app}: cannot plan: {exc}"
        if isinstance(command, C.Rollback):
            return f"rollback {command.app}: the Deployment rolls back to the release before the one running"
        if isinstance(command, C.Canary):
            return f"canary {command.app} {command.action}: the canary Deployment " + {
                "deploy": f"runs {command.version or 'the last release'} beside stable",
                "promote": "'s version is rolled out to stable, then the canary scales to 0",
                "rollback": "scales to 0: all pods are stable",
                "weight": f"is scaled so it gets about {command.weight}% of requests (replica counts)",
            }.get(command.action, command.action)
        return command.text()

    async def _watch(self, live: _Live, app: str, deadline: int) -> Progress:
        """Follow the Deployment until it is done or failed. Our own limit is a safety net past the
        controller's deadline, for a controller that never reports at all.

        A watch that says nothing for QUIET_WATCH seconds may be dead without a word (a load balancer
        that drops an idle stream and sends no RST, an event lost while the watch opened): the
        Deployment is then read once, so a roll that finished meanwhile is seen within seconds, not
        after the safety net."""
        last = ""
        states: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for state in live.client.watch_deployment(live.name):
                    states.put_nowait(state)
                states.put_nowait(None)
            except Exception as exc:  # noqa: BLE001 - handed over: the loop below raises it in its own task
                states.put_nowait(exc)

        pumping = asyncio.ensure_future(pump())
        try:
            async with asyncio.timeout(deadline * 2 + 30):
                while True:
                    try:
                        async with asyncio.timeout(self.QUIET_WATCH):
                            state = await states.get()
                    except TimeoutError:
                        try:
                            state = await live.client.get_deployment(live.name)
                        except OperatorError as exc:  # one failed look is no failed roll: the watch may speak yet
                            if "could not read" not in last:
                                last = f"the watch is quiet and the Deployment could not be read ({exc}); waiting"
                                self._step(live, app, "running", last)
                            continue
                        if state is None:
                            return Progress(False, f"Deployment {live.name} is gone", False, last)
                    if state is None:
                        return Progress(False, "the watch ended", False, last)
                    if isinstance(state, BaseException):
                        raise state
                    progress = read_progress(state)
                    if progress.paused != live.watched_paused:
                        live.watched_paused = progress.paused
                        self._step(live, app, "paused" if progress.paused else "running", progress.text)
                    elif progress.text != last:
                        self._step(live, app, "running", progress.text)
                    last = progress.text
                    if progress.done or progress.failed:
                        return progress
        except TimeoutError:
            return Progress(False, f"no report from the Deployment controller within {deadline * 2 + 30}s", False, last)
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)

    async def _failed(self, live: _Live, app: AppConfig, command: C.Roll, version: str, progress: Progress,
                      previous: str | None) -> str:
        self._step(live, app.name, "failed", progress.failed)
        if command.on_failure == "rollback" and previous:
            undone = await self._undo(live, app, previous, "rolled-back")
            raise CommandFailed(f"roll {app.name} to {version} failed: {progress.failed}; {undone}")
        raise CommandFailed(f"roll {app.name} to {version} failed: {progress.failed} "
                            f"(the Deployment stays as it is; `rollback {app.name}` or `roll {app.name} --version …`)")

    async def _undo(self, live: _Live, app: AppConfig, previous: str | None, state: str) -> str:
        """What `kubectl rollout undo` does: the previous template again (un-paused), watched until it runs."""
        group = self.config.groups[app.group]
        if previous is None:
            await live.client.set_paused(live.name, True)
            self._step(live, app.name, state, "nothing ran before: the Deployment is left paused")
            return "nothing ran before: the Deployment is left paused"
        await live.client.set_paused(live.name, True)  # stop new pods at once, before the undo is applied
        version = version_of_image(previous)
        target = deployment(app, group, version)
        target["spec"]["paused"] = False
        await live.client.apply([target])
        progress = await self._watch(live, app.name, kube_section(group).progress_deadline)
        text = f"undone to {previous}" + (f" ({progress.text})" if progress.done else f", but {progress.failed}")
        self._step(live, app.name, state, text)
        return text

    async def rollback(self, command: C.Rollback) -> str:
        app = self.kube_app(command.app)
        async with self._client(app) as client:
            current = version_of_image(_image_of(await client.get_deployment(deployment_name(app))) or "")
        target = self.releases.previous(app.name, current or None)
        if target is None:
            raise CommandFailed(f"rollback {app.name}: no earlier release than {current or 'the running one'}")
        return await self.roll(C.Roll(app=app.name, version=target[0], batch=command.batch))

    async def pause(self, command: C.Pause) -> str:
        paused, finished = [], []
        for app, live in list(self.live.items()):
            if self.live.get(app) is not live:
                continue  # ended meanwhile: nothing to pause
            # A client of its own: the roll's closes when the roll ends, maybe while this request is under way.
            async with self._client(self.kube_app(app)) as client:
                await client.set_paused(live.name, True)
                live.paused = True  # the watch confirms it; the console's space key reads this at once
                if self.live.get(app) is live:
                    paused.append(app)
                    continue
                # The roll ended while the pause was on its way: nothing is left to hold, and a Deployment left
                # paused with no roll to resume would hold the next change. Unless a new roll of the app was
                # paused by its own pause since.
                newer = self.live.get(app)
                if newer is None or not newer.paused:
                    await client.set_paused(live.name, False)
                finished.append(app)
        said = [f"paused the Deployment of {', '.join(paused)} (spec.paused)"] if paused else []
        if finished:
            said.append(f"the roll of {', '.join(finished)} finished before the pause took effect: nothing is paused")
        return "; ".join(said) or "nothing to pause: the roll had finished"

    async def resume(self, command: C.Resume) -> str:
        resumed = []
        for app, live in list(self.live.items()):
            if self.live.get(app) is not live:
                continue  # ended meanwhile: its end lifted any pause
            async with self._client(self.kube_app(app)) as client:
                await client.set_paused(live.name, False)
            live.paused = False
            resumed.append(app)
        return f"resumed the Deployment of {', '.join(resumed)}" if resumed else "nothing to resume: the roll had finished"

    # -- the canary: a second Deployment beside the stable one ----------------------------------
    KUBE_CANARY_ACTIONS = ("deploy", "promote", "rollback", "weight")

    def routes_canary(self, command: C.Canary) -> bool:
        """Kubernetes handles deploy/promote/rollback, and `weight` while no proxy fronts the app."""
        if not self.is_kube(command.app) or command.action not in self.KUBE_CANARY_ACTIONS:
            return False
        return command.action != "weight" or not (self.config.proxy and command.app in self.config.proxy.frontends)

    def route_canary(self, ssh: Callable[[C.Canary], Awaitable[str | None]]) -> Callable[[C.Canary], Awaitable[str | None]]:
        async def handler(command: C.Canary) -> str | None:
            return await (self.canary if self.routes_canary(command) else ssh)(command)
        return handler

    async def canary(self, command: C.Canary) -> str:
        app = self.kube_app(command.app)
        group = self.config.groups[app.group]
        stable_replicas = kube_section(group).replicas
        name = deployment_name(app, "canary")
        async with self._client(app) as client:
            current = await client.get_deployment(name)
            running = version_of_image(_image_of(current) or "")
            if command.action == "promote":
                if not running or not (current or {}).get("spec", {}).get("replicas"):
                    raise CommandFailed(f"canary of {app.name} runs no pods: `canary {app.name} deploy --version V` first")
                said = await self.roll(C.Roll(app=app.name, version=running))
                await self._scale_canary(client, app, running, 0)
                return f"{said}; canary scaled to 0"
            if command.action == "rollback":
                await self._scale_canary(client, app, running or self.version_for(app, None), 0)
                return f"canary of {app.name} scaled to 0: all pods are stable ({stable_replicas})"
            if command.action == "weight":
                weight = int(command.weight or 0)
                # Without a traffic router, a Service splits by pods: canary/(stable+canary) ≈ weight.
                replicas = 0 if weight == 0 else max(1, round(stable_replicas * weight / max(1, 100 - weight)))
                if not running and replicas == 0:
                    return f"canary of {app.name} runs no pods: all traffic is stable"
                if not running:
                    raise CommandFailed(f"canary of {app.name} has no version yet: `canary {app.name} deploy --version V`")
                await self._scale_canary(client, app, running, replicas)
                return self._split(app.name, stable_replicas, replicas)
            version = command.version or self.version_for(app, None)
            replicas = max(1, int((current or {}).get("spec", {}).get("replicas") or 0))
            await self._scale_canary(client, app, version, replicas)
        return f"canary of {app.name} runs {version}: " + self._split(app.name, stable_replicas, replicas)

    async def _scale_canary(self, client: "KubeClient", app: AppConfig, version: str, replicas: int) -> None:
        group = self.config.groups[app.group]
        live = _Live(client, deployment_name(app, "canary"), f"{app.name}-canary-{int(time.time() * 1000)}")
        await client.apply([deployment(app, group, version, track="canary", replicas=replicas)])
        progress = await self._watch(live, app.name, kube_section(group).progress_deadline)
        if progress.failed:
            raise CommandFailed(f"canary of {app.name} at {version}: {progress.failed}")

    def _split(self, app: str, stable: int, canary: int) -> str:
        share = 100 * canary / max(1, stable + canary)
        return (f"{canary} canary pod(s) beside {stable} stable: about {share:.0f}% of requests "
                f"(no proxy fronts {app}: the weight is approximated by replica counts)")

    # -- pods as hosts of the fleet -----------------------------------------------------------
    BROKEN = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "Error", "OOMKilled", "CreateContainerConfigError")
    RETRY_WATCH = 5.0  # seconds before a failed pod watch is opened again
    # Seconds a pod watch runs before the pods are listed again and the watch reopened. The watch is these
    # groups' heartbeat (pods are watched, not probed): one that died without a word (a load balancer dropping
    # the idle stream) would leave a dead pod "up" for good, and a pod deleted while no watch ran stayed a host.
    POD_RESYNC = 30.0

    def kube_groups(self) -> list[GroupConfig]:
        return [g for g in self.config.groups.values() if g.provider == "kubernetes"]

    async def watch_pods(self) -> None:
        """Keep each Kubernetes group's pods in the fleet as hosts, from a watch (a change shows at once)."""
        await asyncio.gather(*(self._watch_group(group) for group in self.kube_groups()))

    async def _watch_group(self, group: GroupConfig) -> None:
        from opsconsole.kube.client import KubeClient, KubeError, KubeWatchGone

        kube = kube_section(group)
        apps = {a.service_name for a in self.config.apps.values() if a.group == group.name}
        names = sorted(apps)
        while True:
            try:
                async with KubeClient(kube) as client:
                    while True:  # a round: the pods as listed now (the gone ones dropped), then the watch from there
                        pods, version = await client.list_pods(names)
                        self._pods_listed(pods, group.name, kube.port, apps)
                        with contextlib.suppress(TimeoutError, KubeWatchGone):  # 410: the next round lists afresh
                            async with asyncio.timeout(self.POD_RESYNC):
                                async for kind, pod in client.watch_pods(names, version):
                                    self._pod_event(kind, pod, group.name, kube.port, apps)
            except KubeError as exc:
                self.fleet.say(f"pods of {group.name}: {exc}; watching again in {self.RETRY_WATCH:g}s", "warning")
            await asyncio.sleep(self.RETRY_WATCH)

    def _pods_listed(self, pods: list[dict[str, Any]], group: str, port: int, apps: set[str]) -> None:
        """The group's hosts are these pods: each put as a watch's ADDED would, the others dropped."""
        listed = {name for pod in pods if (name := self._pod_event("ADDED", pod, group, port, apps)) is not None}
        for name in [n for n, view in self.fleet.views.items() if view.host.group == group and n not in listed]:
            self.fleet.drop_host(name)

    def _pod_event(self, kind: str, pod: dict[str, Any], group: str, port: int, apps: set[str]) -> str | None:
        """Put the pod as a host of `group` (or drop it); the host's name when it is one now."""
        state = pod_state(pod, group, port)
        if state.app not in apps:  # (a server may ignore the label selector) or relabelled away from our apps
            view = self.fleet.views.get(state.host.name)
            if view is not None and view.host.group == group:
                self.fleet.drop_host(state.host.name)
            return None
        if kind == "DELETED":
            self.fleet.drop_host(state.host.name)
            return None
        activity = "idle" if state.ready else ("failed" if state.reason in self.BROKEN else "deploying")
        detail = ", ".join(part for part in (state.reason, f"{state.restarts} restart(s)" if state.restarts else "",
                                            f"node {state.host.vars['node']}") if part)
        self.fleet.put_host(state.host, version=state.version, healthy=state.ready, activity=activity, detail=detail)
        return state.host.name

    def busy(self) -> bool:
        return bool(self.live)

    # -- EndpointSlices into the traffic proxy ----------------------------------------------------
    def fronted_apps(self) -> list[AppConfig]:
        """Kubernetes apps the traffic proxy fronts: their pools' members are the Services' ready endpoints."""
        proxy = self.config.proxy
        return [a for a in self.config.apps.values() if self.is_kube(a.name) and proxy and a.name in proxy.frontends]

    async def follow_endpoints(self, driver: Callable[[], "TrafficDriver"]) -> None:
        """Keep each fronted app's stable/canary pools equal to its Services' ready endpoints (until cancelled)."""
        await asyncio.gather(*(self._follow(app, driver) for app in self.fronted_apps()))

    async def _follow(self, app: AppConfig, driver: Callable[[], "TrafficDriver"]) -> None:
        from opsconsole.kube.client import KubeError
        from opsconsole.kube.endpoints import EndpointFollower

        services = {track: deployment_name(app, track) for track in ("stable", "canary")}
        while True:
            try:
                async with self._client(app) as client:
                    await EndpointFollower(client, app.name, services, driver, self.fleet.say).run()
            except KubeError as exc:  # a kubeconfig that cannot be used: say so, try again later
                self.fleet.say(f"endpoints of {app.name}: {exc}; trying again in {self.RETRY_WATCH:g}s", "warning")
            await asyncio.sleep(self.RETRY_WATCH)

    async def history(self, command: C.History) -> str:
        """The Deployment's revisions, from its ReplicaSets (what `kubectl rollout history` shows)."""
        app = self.kube_app(command.app)
        async with self._client(app) as client:
            labels = {NAME_LABEL: app.service_name, TRACK_LABEL: "stable"}
            # filtered here as well: not every server honours a label selector (kmock does not)
            sets = [rs for rs in await client.replica_sets(labels)
                    if labels.items() <= (rs.get("metadata", {}).get("labels") or {}).items()]
        rows = sorted(((int(rs["metadata"].get("annotations", {}).get(REVISION, 0)), rs) for rs in sets),
                      key=lambda row: row[0])
        if not rows:
            return f"{app.name}: no revisions yet"
        lines = [f"{app.name} revisions:"]
        for revision, rs in rows:
            image = _image_of(rs) or "?"
            lines.append(f"  {revision:>3}  {version_of_image(image) or '?':<12} {image}  "
                         f"replicas {rs.get('spec', {}).get('replicas', 0)}")
        return "\n".join(lines)


def _image_of(obj: dict[str, Any] | None) -> str | None:
    if not obj:
        return None
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return containers[0].get("image") if containers else None
