"""Builds, artifacts and deploy playbook runs, and what is deployed where.

The `Deployer` is built once by the engine and given to every service that puts a version on hosts
(the deploy command, rollouts, the canary): none of them holds the engine.
"""

from __future__ import annotations

import asyncio
import json
import operator
from dataclasses import replace
from typing import Any, Collection

from opsconsole.builds import git
from opsconsole.builds.poller import BranchPoller, HeadBook
from opsconsole.builds.queue import BuildQueue, OnSuccess
from opsconsole.builds.runner import Builder, BuildRecord, BuildStore
from opsconsole.config.model import AppConfig, Config
from opsconsole.engine.fleet import Fleet, ssh_options, with_app_vars
from opsconsole.errors import CommandFailed
from opsconsole.events import EventBus
from opsconsole.fsio import write_atomic
from opsconsole.playbook.loader import load_playbook
from opsconsole.hosts import Host
from opsconsole.playbook.model import Playbook, PlaybookResult
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.base import Transport


class Deployer:
    def __init__(self, config: Config, fleet: Fleet, bus: EventBus, *, on_build: OnSuccess) -> None:
        self.config = config
        self.fleet = fleet
        self.builds = BuildStore(config.state_dir)
        self.builder = Builder(bus, self.builds, config.state_dir, build_host=self._build_host)
        # `on_build` decides what a successful build starts (the engine's policy: on_build, read-only).
        self.build_queue = BuildQueue(self.builder, config.apps, config.max_parallel_builds, on_build)
        self.heads = HeadBook(config.state_dir / "builds" / "heads.json")
        self.pollers = {name: BranchPoller(bus, app, self.build_queue, self.heads)
                        for name, app in config.apps.items() if app.build.commands}
        self.runner = PlaybookRunner(bus, fleet.transport_for, secrets=config.secrets, ssh=ssh_options(config))
        # A plan's check runs on a bus of its own (the same redactor): its per-task events would read like a
        # deploy in the panes; the plan says in one line per host what the check found.
        self.quiet_runner = PlaybookRunner(EventBus(bus.redactor), fleet.transport_for, secrets=config.secrets,
                                           ssh=ssh_options(config))
        self.playbooks: dict[str, Playbook] = {}  # app name -> its deploy playbook, filled by load_playbooks()
        self.provisioners: dict[str, Playbook] = {}  # group name -> its provisioning playbook
        self._deployed_path = config.state_dir / "deployed.json"
        self._deployed_lock = asyncio.Lock()
        self._offered_cache: tuple[AppConfig, list[Host], list[Host]] | None = None
        for name, version in self._load_deployed().items():
            if name in fleet.views:
                fleet.views[name].version = version

    def load_playbooks(self) -> None:
        """Parse every deploy and provisioning playbook; SourceError names the file and line of a bad one."""
        for app in self.config.apps.values():
            if app.deploy_playbook is not None:
                self.playbooks[app.name] = load_playbook(app.deploy_playbook)
        for group in self.config.groups.values():
            if group.provision is not None:
                self.provisioners[group.name] = load_playbook(group.provision)

    # -- builds and artifacts ------------------------------------------------------
    def _build_host(self, name: str) -> Transport:
        """The transport to `build.host`, an inventory host."""
        host = self.fleet.inventory.get(name)
        if host is None:
            raise CommandFailed(f"build.host {name!r} is not a host of the inventory (see {self.config.file})")
        return self.fleet.transport_for(host)

    async def build(self, app: AppConfig, commit: str | None) -> BuildRecord:
        """Queue a build of `commit` (default: the branch head) and wait for it; raise unless it succeeded."""
        if not app.build.commands:
            raise CommandFailed(f"app {app.name} has no build commands in {self.config.file}")
        sha = await self.builder.resolve(app, commit)
        record = await (await self.build_queue.submit(app, sha))
        if record.status != "succeeded":
            raise CommandFailed(f"build {record.build_id} of {record.short} {record.status}: {record.message}")
        return record

    async def artifact_for(self, app: AppConfig, version: str | None) -> BuildRecord:
        """The built artifact of `version` (default: the branch head), building it first if needed."""
        sha = await self.builder.resolve(app, version)
        return self.builds.artifact_for(app.name, sha) or await self.build(app, sha)

    def succeeded_build(self, app: str, short: str) -> BuildRecord | None:
        """The latest successful build of `app` whose short commit is `short`."""
        return next((r for r in reversed(self.builds.records())
                     if r.app == app and r.short == short and r.status == "succeeded"), None)

    async def older_than(self, app: AppConfig, version: str, others: Collection[str | None]) -> list[str]:
        """Of `others` (versions some hosts run), those whose commit comes after `version`'s in the repo's
        history: rolling `version` onto them would take them back. Only builds made here are compared."""
        mine = self.succeeded_build(app.name, version)
        if mine is None:
            return []
        newer = []
        for other in sorted({v for v in others if v and v != version}):
            build = self.succeeded_build(app.name, other)
            if build is not None and await git.is_ancestor(self.builder.cache_dir(app), mine.commit, build.commit):
                newer.append(other)
        return newer

    # -- deploy playbook runs ------------------------------------------------------
    async def run_deploy_playbook(self, app: AppConfig, targets: list[str], *, version: str, commit: str,
                                  artifact: str, parallel: bool = False,
                                  steered: Collection[str] = ()) -> PlaybookResult:
        """Run the app's deploy playbook on `targets`; remember what each host now runs.

        `parallel` runs all targets at once whatever the playbook's `serial` says: a rollout
        makes its own batches. Hosts in `steered` (a live rollout's) are left to the rollout's own steps.
        """
        playbook = self._deploy_playbook(app, parallel)
        extra, hosts = self._deploy_inputs(app, version, commit, artifact)
        result = await self.runner.run(playbook, hosts, extra_vars=extra, limit=targets)
        # One read-modify-write at a time; its fsyncs in a thread, so a rollout's other hosts go on meanwhile.
        async with self._deployed_lock:
            deployed = self._load_deployed()
            # A host in a rollout is not idle after its playbook: it waits for its health gate, drained; the
            # rollout's own steps (done, failed) say what it is next.
            for name, status in result.host_status.items():
                if status == "ok":
                    deployed[name] = version
                    self.fleet.views[name].version = version
                    if name not in steered:
                        self.fleet.set_activity(self.fleet.inventory.get(name), "idle")
            await asyncio.to_thread(self._save_deployed, deployed)
        return result

    async def check_deploy_playbook(self, app: AppConfig, targets: list[str], *, version: str, commit: str,
                                    artifact: str) -> PlaybookResult:
        """The deploy playbook in check mode (Ansible's --check) on `targets`: which tasks would change on
        each host, nothing changed. Each host is checked on its own, at most `heartbeat.concurrency` at once
        (a check only reads, like a probe), within the app's deploy_timeout: a slow or unreachable host is
        told about in its own line and holds up no other."""
        playbook = self._deploy_playbook(app, parallel=True)
        extra, hosts = self._deploy_inputs(app, version, commit, artifact)
        gate = asyncio.Semaphore(max(1, self.config.heartbeat.concurrency))
        timeout = app.rollout.deploy_timeout

        async def one(name: str) -> PlaybookResult:
            async with gate:
                try:
                    async with asyncio.timeout(timeout):
                        return await self.quiet_runner.run(playbook, hosts, extra_vars=extra, limit=[name],
                                                           check=True)
                except TimeoutError:
                    return PlaybookResult(ok=False, host_status={name: "failed"},
                                          failures={name: f"no answer within {timeout:g}s (deploy_timeout)"})

        merged = PlaybookResult(ok=True)
        for result in await asyncio.gather(*(one(name) for name in targets)):
            merged.ok = merged.ok and result.ok
            for field in ("host_status", "failures", "changed_tasks", "check_skipped"):
                getattr(merged, field).update(getattr(result, field))
        return merged

    def _deploy_playbook(self, app: AppConfig, parallel: bool) -> Playbook:
        playbook = self.playbooks.get(app.name)
        if playbook is None:
            raise CommandFailed(f"app {app.name} has no deploy playbook")
        if parallel:
            playbook = replace(playbook, plays=tuple(replace(p, serial=None) for p in playbook.plays))
        return playbook

    def _deploy_inputs(self, app: AppConfig, version: str, commit: str,
                       artifact: str) -> tuple[dict[str, Any], list[Host]]:
        """The deploy playbook's extra vars, and the hosts offered to it."""
        extra = {"app": app.name, "version": version, "commit": commit, "artifact": artifact,
                 "service_name": app.service_name, "service_command": app.service_command}
        # Every inventory host is offered (a canary lives in another group than the app's); `limit` picks.
        return extra, self._offered(app)

    def _offered(self, app: AppConfig) -> list[Host]:
        """The inventory's hosts with the app's vars, made again only when the app or a host changed: a
        rollout deploys host by host, and making them all for each one grew with the square of the fleet."""
        hosts = self.fleet.inventory.hosts
        cached = self._offered_cache
        if cached is None or cached[0] is not app or len(cached[1]) != len(hosts) \
                or not all(map(operator.is_, cached[1], hosts)):
            cached = self._offered_cache = (app, hosts, [with_app_vars(app, h) for h in hosts])
        return cached[2]

    def _load_deployed(self) -> dict[str, str]:
        try:
            return json.loads(self._deployed_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_deployed(self, deployed: dict[str, str]) -> None:
        write_atomic(self._deployed_path, json.dumps(deployed, indent=1, sort_keys=True))

    async def close(self) -> None:
        await self.build_queue.close()
