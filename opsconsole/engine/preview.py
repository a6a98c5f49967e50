"""What a command will do, in words, before it runs: the text of every confirm dialog.

Changes nothing. A problem it finds (git unreachable, nothing to resume) is said in the text, since
the command itself will report it again when it runs.
"""

from __future__ import annotations

import asyncio
from typing import Mapping

from opsconsole.config.model import Config
from opsconsole.engine import commands as C
from opsconsole.engine.deployer import Deployer
from opsconsole.engine.fleet import Fleet
from opsconsole.engine.rolling import Rollouts
from opsconsole.errors import CommandFailed, OperatorError
from opsconsole.rollouts.plan import make_plan, timeouts


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _names(items: list[str], shown: int = 6) -> str:
    return ", ".join(items[:shown]) + (f" … +{len(items) - shown}" if len(items) > shown else "")


class Preview:
    def __init__(self, config: Config, fleet: Fleet, deployer: Deployer, rollouts: Rollouts,
                 running: Mapping[str, tuple[C.Command, object]]) -> None:
        self.config = config
        self.fleet = fleet
        self.deployer = deployer
        self.rollouts = rollouts
        self._running = running  # the engine's commands under way, by id (an `abort` names them)

    def running(self) -> list[C.Command]:
        return [command for command, _ in self._running.values()]

    async def text(self, command: C.Command) -> str:
        """What `command` will do, in words: the text every front end shows before a destructive or long
        command runs (the console's confirm dialog). Changes nothing; a problem it finds (git unreachable,
        nothing to resume) is said in the text, since the command itself will report it again."""
        body = await self._preview_body(command)
        return f"{body}\n\ncommand: {command.text()}"

    async def _preview_body(self, command: C.Command) -> str:
        match command:
            case C.Roll(plan_only=False):
                return await self._preview_roll(command)
            case C.RollResume(app=app):
                return self._preview_resume(app)
            case C.Rollback():
                return self._preview_rollback(command)
            case C.Deploy():
                return await self._preview_deploy(command)
            case C.Abort():
                running = [c.text() for c in self.running() if c.abortable]
                if not running:
                    return "abort: nothing to abort: no deploy or rollout is running"
                return (f"abort {', '.join(running)}: the host being deployed stops where it is and stays out of "
                        "the pool; hosts not yet reached stay untouched.")
            case C.Stop(app=app) | C.Start(app=app):
                hosts = [h.name for h in self.fleet.app_hosts(self.config.apps[app])]
                verb = "stops" if isinstance(command, C.Stop) else "starts"
                return f"{command.verb} {app}: its service {verb} on {_count(hosts, 'host')}: {_names(hosts)}"
            case C.Run(target=target, command=shell):
                hosts = [target] if self.fleet.inventory.get(target) else [h.name for h in self.fleet.inventory.group(target)]
                return f"run on {target} ({_count(hosts, 'host')}: {_names(hosts)}):\n  {shell}"
            case C.Canary(action="weight", app=app, weight=weight):
                return await self._preview_weight(app, int(weight or 0))
            case C.Canary(action="promote", app=app):
                return self._preview_canary(command) + await self._downgrade_warning(app)
            case C.Canary():
                return self._preview_canary(command)
            case C.Provision(group=group) | C.Decommission(group=group) | C.Scale(group=group):
                hosts = [h.name for h in self.fleet.inventory.group(group)]
                now = f"group {group} has {_count(hosts, 'host')}" + (f": {_names(hosts)}" if hosts else "")
                if isinstance(command, C.Scale):
                    return f"scale {group} to {command.count} instance(s) ({now}); {command.summary}"
                return f"{command.verb} {group}: {command.summary} ({now})"
            case C.LockRelease(app=app):
                return (f"lock release {app}: remove the deploy lock of {app} whoever holds it; a rollout still "
                        "running elsewhere loses it and stops")
            case C.CancelBuild(build_id=build_id):
                return f"cancel build {build_id}: its processes are killed"
        return f"{command.verb}: {command.summary}"

    async def _preview_roll(self, command: C.Roll) -> str:
        try:
            async with asyncio.timeout(10):
                plan = await self.rollouts.plan_for(command)
        except (OperatorError, TimeoutError, OSError) as exc:
            return f"roll {command.app}: cannot plan: {str(exc) or 'git did not answer within 10s'}"
        built = "" if plan.artifact else " (built first)"
        skipped = self.rollouts.already_done(command.app, plan.commit)
        if skipped:
            built += f"; {_names(skipped)} left alone: already on {plan.version} by the stopped rollout"
        # The whole plan: the dialog scrolls. "… 3 more" of a 5-host plan hid what the operator confirms.
        return plan.summary() + built + self._failed_build_warning(command.app, plan.commit) + "\n\n" + \
            "\n".join(plan.describe()[1:])

    def _failed_build_warning(self, app: str, commit: str) -> str:
        """A warning when the latest build of `commit` failed: rolling it builds the same broken commit again."""
        builds = [r for r in self.deployer.builds.records() if r.app == app and r.commit == commit]
        if not builds or builds[-1].status not in ("failed", "timed_out"):
            return ""
        last = builds[-1]
        return (f"\n⚠ build {last.build_id} of {last.short} {last.status.replace('_', ' ')}"
                + (f": {last.message}" if last.message else "") + f" — `log build {last.build_id}` shows why")

    def _preview_resume(self, app: str) -> str:
        state = self.rollouts.stopped(app)
        if state is None:
            return f"roll resume {app}: no stopped rollout of {app} to resume" + (
                " (one is running now)" if app in self.rollouts.live else "")
        left = state.left()
        where = ", ".join(f"{h} {s}" for h, s in state.hosts.items())
        plan = state.plan
        batches = [[h for h in batch if h in left] for batch in plan.batches]
        lines = [f"  batch {i}: " + ", ".join(f"{h} ({plan.from_versions.get(h) or 'none'} → {plan.version})" for h in b)
                 for i, b in enumerate((b for b in batches if b), start=1)]
        return (f"roll resume {app}: rollout {plan.rollout_id} to {plan.version} by {state.issuer} "
                f"was {state.status} ({where}); {_count(left, 'host')} left: {_names(left)}\n\n"
                + "\n".join(lines))

    def _preview_rollback(self, command: C.Rollback) -> str:
        app = self.config.apps[command.app]
        latest = self.rollouts.journal.latest(app.name)
        target = latest.plan.previous if latest is not None else None
        hosts = [h.name for h in self.fleet.inventory.group(app.group)]
        if target is None:
            current = {self.fleet.views[h].version for h in hosts}
            target = self.rollouts.releases.previous(app.name, next(iter(current)) if len(current) == 1 else "")
        if target is None:
            return f"rollback {app.name}: no earlier good version of {app.name} is known to roll back to"
        try:
            plan = make_plan(app.name, hosts, version=target[0], commit=target[1], artifact=target[2],
                             batch=command.batch, kind="rollback",
                             from_versions={h: self.fleet.views[h].version for h in hosts},
                             **timeouts(app.rollout))
        except OperatorError as exc:
            return f"rollback {app.name}: cannot plan: {exc}"
        return plan.summary() + "\n\n" + "\n".join(plan.describe()[1:][:4])

    async def _preview_deploy(self, command: C.Deploy) -> str:
        app = self.config.apps[command.app]
        targets = list(command.hosts) or [h.name for h in self.fleet.inventory.group(app.group)]
        playbook = self.deployer.playbooks.get(app.name)
        serial = playbook.plays[0].serial if playbook is not None and playbook.plays else None
        pace = "all at once" if serial in (None, 0, "", "100%") else f"{serial} at a time"
        try:
            async with asyncio.timeout(10):
                sha = await self.deployer.builder.resolve(app, command.version)
            built = self.deployer.builds.artifact_for(app.name, sha) is not None
            version = sha[:7] + ("" if built else " (built first)")
        except (OperatorError, TimeoutError, OSError) as exc:
            version = f"{command.version or 'head of ' + app.branch} (not resolved: {str(exc) or 'git did not answer within 10s'})"
        return f"deploy {app.name}: {_count(targets, 'host')}, {pace}, version {version}\n\nhosts: {_names(targets)}"

    async def _preview_weight(self, app: str, weight: int) -> str:
        before = await self.rollouts.traffic.canary_weight(app)
        now = f"{100 - before}/{before}" if before is not None else "unknown (the proxy did not answer)"
        return (f"canary {app}: stable/canary {now} → {100 - weight}/{weight}: the canary gets {weight}% of the "
                f"traffic" + (f" (was {before}%)" if before is not None else ""))

    def _preview_canary(self, command: C.Canary) -> str:
        app = command.app
        hosts = self.fleet.canary_hosts(app)
        if command.action == "weight":
            weight = int(command.weight or 0)
            return f"canary {app}: the canary gets {weight}% of the traffic, stable {100 - weight}%"
        if command.action == "deploy":
            version = command.version or f"the head of {self.config.apps[app].branch}"
            return f"canary {app} deploy: {version} goes on the canary's {_count(hosts, 'host')}: {_names(hosts)}"
        if command.action == "promote":
            return self._preview_promote(app, hosts)
        if command.action == "rollback":
            return f"canary {app} rollback: all traffic to stable (canary weight 0)"
        if command.action == "steps":
            steps = ", ".join(f"{w}%" for w in self.config.canary.steps)
            return (f"canary {app} steps: the canary weight walks {steps}, each held and judged for "
                    f"{self.config.canary.hold:g}s; back to 0 if the canary does worse than stable")
        return f"canary {app} {command.action}: {command.summary}"

    async def _downgrade_warning(self, app: str) -> str:
        """A warning when the canary's build comes before what stable runs: promoting it takes stable back."""
        try:
            version = self.fleet.canary_version(app)
        except CommandFailed:
            return ""
        config = self.config.apps[app]
        newer = await self.deployer.older_than(config, version, self.fleet.group_versions(config.group))
        return (f"\n⚠ the canary's {version} is older than {', '.join(newer)}, which stable runs: promoting it takes "
                "stable back") if newer else ""

    def _preview_promote(self, app: str, canary_hosts: list[str]) -> str:
        """Which version goes to which hosts, in which batches: the roll that promote runs."""
        views = self.fleet.views
        try:
            version = self.fleet.canary_version(app)
        except CommandFailed as exc:
            return f"canary {app} promote: {exc}; promote will refuse"
        group = self.config.apps[app].group
        hosts = [h.name for h in self.fleet.inventory.group(group)]
        try:
            rollout = self.config.apps[app].rollout
            plan = make_plan(app, hosts, version=version, commit=version, artifact="", batch=None,
                             from_versions={h: views[h].version for h in hosts},
                             **timeouts(rollout))
        except OperatorError as exc:
            return f"canary {app} promote: cannot plan: {exc}"
        return (f"canary {app} promote: {version} (the canary's, on {_names(canary_hosts)}) is rolled out to the "
                f"stable pool ({_count(hosts, 'host')}), then the canary weight goes back to 0\n\n"
                + "\n".join(plan.describe()[1:]))
