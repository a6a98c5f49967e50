"""The engine: runs commands as asyncio work and reports by events. Knows nothing of Textual."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from opsconsole.fsio import make_private_dir, write_atomic
from opsconsole.builds.git import GitError
from opsconsole.builds.poller import BranchPoller, HeadBook
from opsconsole.builds.queue import BuildQueue
from opsconsole.builds.runner import BuildFailed, Builder, BuildRecord, BuildStore
from opsconsole.config.model import AppConfig, Config
from opsconsole.config.secrets import fill_secrets
from opsconsole.demo.repo import ensure_demo_repo
from opsconsole.engine import commands as C
from opsconsole.engine.journal import Journal, default_issuer
from opsconsole.engine.canary_desk import CanaryDesk
from opsconsole.engine.cloud import CloudDesk
from opsconsole.engine.rolling import Rollouts
from opsconsole.rollouts.plan import PlanError, make_plan
from opsconsole.events import (
    CommandFinished,
    CommandStarted,
    Event,
    EventBus,
    HealthChanged,
    HealthSample,
    HostState,
    Message,
    OutputLine,
    RolloutStep,
    TaskFinished,
    TaskStarted,
)
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.heartbeat.probe import ProbeTarget
from opsconsole.heartbeat.rawhttp import RawProber
from opsconsole.heartbeat.until import probe_until
from opsconsole.hosts import Host
from opsconsole.inventory import Inventory, build_inventory
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.playbook.templating import render_string
from opsconsole.traffic.base import TrafficError
from opsconsole.transport.base import Transport, TransportError
from opsconsole.transport.local import LocalTransport
from opsconsole.transport.pool import SshOptions, SshPool
from opsconsole.transport.ssh import SshTransport


_MACHINE = socket.gethostname()


def ssh_options(config: Config) -> SshOptions:
    ssh = config.ssh
    return SshOptions(known_hosts=ssh.known_hosts, client_keys=ssh.identity_files, agent=ssh.agent,
                      ssh_config=ssh.ssh_config, jump=config.jump, max_channels=ssh.max_channels,
                      connect_timeout=ssh.connect_timeout)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _names(items: list[str], shown: int = 6) -> str:
    return ", ".join(items[:shown]) + (f" … +{len(items) - shown}" if len(items) > shown else "")


class CommandFailed(Exception):
    """A command ran and did not succeed; the message says where and why."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""


@dataclass
class HostView:
    """What the engine knows of a host right now (front ends render this)."""

    host: Host
    activity: str = "idle"
    version: str | None = None
    healthy: bool | None = None
    latency: float | None = None
    detail: str = ""


class Engine:
    def __init__(self, config: Config, *, bus: EventBus | None = None, issuer: str | None = None) -> None:
        self.config = config
        self.bus = bus or EventBus()
        self.issuer = issuer or default_issuer()
        make_private_dir(config.state_dir)
        # Secrets are masked from here on in every event (TUI, headless, --json), the journal and the build logs.
        self.bus.redactor.add(config.secrets.values())
        self.inventory: Inventory = build_inventory(config)
        self.names = C.Names(apps=tuple(config.apps), groups=tuple(config.groups), hosts=tuple(self.inventory.names()))
        self.journal = Journal(config.state_dir / "journal.jsonl", redactor=self.bus.redactor)
        self.builds = BuildStore(config.state_dir)
        self.builder = Builder(self.bus, self.builds, config.state_dir)
        self.build_queue = BuildQueue(self.builder, config.apps, config.max_parallel_builds, self._after_build)
        self.heads = HeadBook(config.state_dir / "builds" / "heads.json")
        self.pollers = {name: BranchPoller(self.bus, app, self.build_queue, self.heads)
                        for name, app in config.apps.items() if app.build.commands}
        self.runner = PlaybookRunner(self.bus, self.transport_for, secrets=config.secrets)
        self.views: dict[str, HostView] = {h.name: HostView(h) for h in self.inventory.hosts}
        self._transports: dict[str, Transport] = {}
        self.ssh_pool = SshPool(ssh_options(config))
        # Commands now running: id -> (command, the task doing its work). `abort` cancels these.
        self._running: dict[str, tuple[C.Command, asyncio.Task[str | None]]] = {}
        self.canary_desk = CanaryDesk(self)
        # Plain-HTTP probes use the lean client: httpx cost 5x the CPU and fell behind at 1,000 hosts
        # (bench/bench_heartbeat.py); https still goes through httpx.
        self.prober = RawProber(endpoint=self._endpoint)
        self.monitor = HeartbeatMonitor(self.bus, self.prober, self._probe_targets(), config.heartbeat,
                                        change_log=config.state_dir / "heartbeat" / "changes.jsonl")
        self._background: set[asyncio.Future[None]] = set()  # kept until done: a dropped task may be collected
        self._deployed_path = config.state_dir / "deployed.json"
        for name, version in self._load_deployed().items():
            if name in self.views:
                self.views[name].version = version
        self.bus.subscribe(self._track)
        self.playbooks: dict[str, Any] = {}  # app name -> validated Playbook, filled by prepare()
        self.provisioners: dict[str, Any] = {}  # group name -> its provisioning Playbook
        self.rollouts = Rollouts(self)
        self.cloud = CloudDesk(self)

    # -- set-up ------------------------------------------------------------
    def prepare(self) -> None:
        """Everything that must be right before the first command: playbooks parse, demo repos exist.

        Raises SourceError naming the file and line of a bad playbook.
        """
        for app in self.config.apps.values():
            if app.deploy_playbook is not None:
                self.playbooks[app.name] = load_playbook(app.deploy_playbook)
        for group in self.config.groups.values():
            if group.provision is not None:
                self.provisioners[group.name] = load_playbook(group.provision)
        for app in self.config.apps.values():
            if app.demo_repo and "://" not in app.repo:
                ensure_demo_repo(Path(app.repo), app.branch)

    def parse(self, line: str) -> C.Command:
        return C.parse_command(line, self.names)

    def transport_for(self, host: Host) -> Transport:
        if host.name not in self._transports:
            if host.transport == "ssh":
                self._transports[host.name] = SshTransport(host, self.ssh_pool)
            elif host.transport == "local":
                self._transports[host.name] = LocalTransport(host)
            else:
                raise CommandFailed(f"{host.name}: unknown transport {host.transport!r}")
        return self._transports[host.name]

    async def _endpoint(self, host: Host, port: int) -> tuple[str, int]:
        """Where to reach a host's port: directly, or through an SSH forward when it sits behind the jump host."""
        if host.transport == "ssh" and self.config.jump is not None:
            return await self.ssh_pool.forward(host, port)
        return host.address, port

    def _probe_targets(self) -> list[ProbeTarget]:
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

    async def start_monitor(self) -> None:
        """Start the heartbeat monitor and nothing else: for a front end that only watches (`opsconsole
        heartbeat`). No branch poller, no build, no deploy, no proxy weight: a monitor never changes the fleet."""
        if self.monitor.targets:
            self._keep(asyncio.ensure_future(self.monitor.run()))

    async def start_background(self, *, heartbeat: bool = True, poll: bool = True) -> None:
        """Start the console's always-on work: the heartbeat monitor, the branch pollers (which build and deploy
        what is pushed) and the proxy watch (which puts back the canary weights a restarted proxy lost).
        The console and `--watch` call this once; a front end that only watches calls `start_monitor`."""
        if heartbeat:
            await self.start_monitor()
        if poll and not self.config.readonly:
            for poller in self.pollers.values():
                self._keep(asyncio.ensure_future(poller.run()))
        if self.config.proxy is not None:
            self._keep(asyncio.ensure_future(self.canary_desk.watch()))

    async def plan(self, command: C.Roll) -> Any:
        """The rollout plan `command` would run (no build, nothing changed): for confirm dialogs."""
        return await self.rollouts.plan_for(command)

    # -- what a command will do, before it runs --------------------------------
    async def preview(self, command: C.Command) -> str:
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
                hosts = [h.name for h in self.app_hosts(self.config.apps[app])]
                verb = "stops" if isinstance(command, C.Stop) else "starts"
                return f"{command.verb} {app}: its service {verb} on {_count(hosts, 'host')}: {_names(hosts)}"
            case C.Run(target=target, command=shell):
                hosts = [target] if self.inventory.get(target) else [h.name for h in self.inventory.group(target)]
                return f"run on {target} ({_count(hosts, 'host')}: {_names(hosts)}):\n  {shell}"
            case C.Canary():
                return self._preview_canary(command)
            case C.Provision(group=group) | C.Decommission(group=group) | C.Scale(group=group):
                hosts = [h.name for h in self.inventory.group(group)]
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
                plan = await self.plan(command)
        except (CommandFailed, GitError, TimeoutError, OSError) as exc:
            return f"roll {command.app}: cannot plan: {str(exc) or 'git did not answer within 10s'}"
        built = "" if plan.artifact else " (built first)"
        batches = plan.describe()[1:]
        shown = batches[:4] + ([f"  … {len(batches) - 4} more"] if len(batches) > 4 else [])
        return plan.summary() + built + "\n\n" + "\n".join(shown)

    def _preview_resume(self, app: str) -> str:
        state = self.rollouts.journal.latest(app)
        if state is None or state.finished or app in self.rollouts.live:
            return f"roll resume {app}: no interrupted rollout of {app} to resume" + (
                " (one is running now)" if app in self.rollouts.live else "")
        left = [h for h, s in state.hosts.items() if s != "done"]
        where = ", ".join(f"{h} {s}" for h, s in state.hosts.items())
        return (f"roll resume {app}: rollout {state.plan.rollout_id} to {state.plan.version} by {state.issuer} "
                f"was interrupted ({where}); {_count(left, 'host')} left: {_names(left)}")

    def _preview_rollback(self, command: C.Rollback) -> str:
        app = self.config.apps[command.app]
        latest = self.rollouts.journal.latest(app.name)
        target = latest.plan.previous if latest is not None else None
        hosts = [h.name for h in self.inventory.group(app.group)]
        if target is None:
            current = {self.views[h].version for h in hosts}
            target = self.rollouts.previous_release(app.name, next(iter(current)) if len(current) == 1 else "")
        if target is None:
            return f"rollback {app.name}: no earlier good version of {app.name} is known to roll back to"
        try:
            plan = make_plan(app.name, hosts, version=target[0], commit=target[1], artifact=target[2],
                             batch=command.batch, kind="rollback",
                             from_versions={h: self.views[h].version for h in hosts},
                             health_timeout=app.rollout.health_timeout, drain_timeout=app.rollout.drain_timeout)
        except PlanError as exc:
            return f"rollback {app.name}: cannot plan: {exc}"
        return plan.summary() + "\n\n" + "\n".join(plan.describe()[1:][:4])

    async def _preview_deploy(self, command: C.Deploy) -> str:
        app = self.config.apps[command.app]
        targets = list(command.hosts) or [h.name for h in self.inventory.group(app.group)]
        playbook = self.playbooks.get(app.name)
        serial = playbook.plays[0].serial if playbook is not None and playbook.plays else None
        pace = "all at once" if serial in (None, 0, "", "100%") else f"{serial} at a time"
        try:
            async with asyncio.timeout(10):
                sha = await self.builder.resolve(app, command.version)
            built = self.builds.artifact_for(app.name, sha) is not None
            version = sha[:7] + ("" if built else " (built first)")
        except (GitError, TimeoutError, OSError) as exc:
            version = f"{command.version or 'head of ' + app.branch} (not resolved: {str(exc) or 'git did not answer within 10s'})"
        return f"deploy {app.name}: {_count(targets, 'host')}, {pace}, version {version}\n\nhosts: {_names(targets)}"

    def _preview_canary(self, command: C.Canary) -> str:
        app = command.app
        hosts = self.canary_desk.canary_hosts(app)
        if command.action == "weight":
            weight = int(command.weight or 0)
            return f"canary {app}: the canary gets {weight}% of the traffic, stable {100 - weight}%"
        if command.action == "deploy":
            version = command.version or f"the head of {self.config.apps[app].branch}"
            return f"canary {app} deploy: {version} goes on the canary's {_count(hosts, 'host')}: {_names(hosts)}"
        if command.action == "promote":
            return (f"canary {app} promote: the canary's version is rolled out to the stable pool, then all "
                    "traffic goes to stable")
        if command.action == "rollback":
            return f"canary {app} rollback: all traffic to stable (canary weight 0)"
        if command.action == "steps":
            steps = ", ".join(f"{w}%" for w in self.config.canary.steps)
            return (f"canary {app} steps: the canary weight walks {steps}, each held and judged for "
                    f"{self.config.canary.hold:g}s; back to 0 if the canary does worse than stable")
        return f"canary {app} {command.action}: {command.summary}"

    def startup_notices(self) -> list[str]:
        """What a console starting up must tell the operator first: work a dead console left unfinished."""
        notices = []
        for app in self.config.apps:
            state = self.rollouts.journal.latest(app)
            if state is not None and not state.finished and app not in self.rollouts.live:
                where = ", ".join(f"{h} {s}" for h, s in state.hosts.items())
                notices.append(f"rollout {state.plan.rollout_id} of {app} to {state.plan.version} was interrupted "
                               f"({where}): `roll resume {app}` finishes it, `rollback {app}` undoes it")
        for entry in self.journal.close_unfinished(self.issuer):
            notices.append(f"`{entry.get('command')}` by {entry.get('issuer')} never finished: the console running "
                           "it stopped")
        return notices

    def paused(self) -> list[str]:
        """Apps whose rollout is paused (or pausing before its next batch)."""
        return [name for name, runner in self.rollouts.live.items() if runner.pause_requested]

    async def _after_build(self, app: AppConfig, record: BuildRecord) -> None:
        """A build succeeded: start the deploy the app asks for, as a journaled command like any other."""
        if app.on_build == "none" or self.config.readonly:
            return
        command: C.Command = C.Roll(app=app.name, version=record.commit) if app.on_build == "rolling" \
            else C.Canary(app=app.name, action="deploy", version=record.commit)
        self._emit(f"{app.name}: build {record.build_id} of {record.short} succeeded; starting `{command.text()}`")
        self._keep(asyncio.ensure_future(self.execute(command, issuer=f"{self.issuer} (build {record.build_id})")))

    def _keep(self, task: "asyncio.Future[None]") -> None:
        """Hold a background task until it ends (a deploy per build must not grow a list for ever)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()
        await self.build_queue.close()
        for transport in self._transports.values():
            await transport.close()
        await self.canary_desk.close()
        await self.ssh_pool.close()
        await self.prober.aclose()

    # -- running commands --------------------------------------------------
    def refusal(self, command: C.Command) -> str | None:
        """Why this engine will not run `command`, or None. Front ends may say it in their own words first."""
        if self.config.readonly and command.mutating:
            return (f"refused: `{command.text()}` changes something and this console is read-only "
                    f"(`readonly: true` in {self.config.file}, or --readonly)")
        return None

    async def execute(self, command: C.Command, *, issuer: str | None = None) -> Outcome:
        """Run one command: journaled before and after, reported by events, never raises but on cancel.

        A command this engine refuses (a change while read-only) is journaled as refused and never runs,
        whichever front end sent it.
        """
        cid = uuid.uuid4().hex[:12]
        who = issuer or self.issuer
        self.bus.redactor.learn(command.text())  # `PGPASSWORD=…` typed here is masked wherever it would show
        text = self.bus.redactor.command(command.text())
        refused = self.refusal(command)
        if refused is not None:
            self.journal.append("command.refused", id=cid, command=text, issuer=who, message=refused)
            self.bus.emit(CommandStarted(command_id=cid, text=text, issuer=who))
            self.bus.emit(CommandFinished(command_id=cid, text=text, ok=False, message=refused))
            return Outcome(False, refused)
        self.journal.append("command.start", id=cid, command=text, issuer=who, pid=os.getpid(), machine=_MACHINE)
        self.bus.emit(CommandStarted(command_id=cid, text=text, issuer=who))
        started = time.monotonic()
        work = asyncio.ensure_future(self._dispatch(command))
        self._running[cid] = (command, work)
        try:
            message = await asyncio.shield(work)
            outcome = Outcome(True, message or "")
        except asyncio.CancelledError:
            if not work.done():
                # We were cancelled from outside (Ctrl-C, quit): cancel the work too and wait for its cleanup.
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
            elif work.cancelled() and not _cancelling():
                # The work alone was cancelled: an `abort` from the operator.
                outcome = Outcome(False, "aborted")
                return self._finish(cid, text, who, started, outcome)
            self.journal.append("command.interrupted", id=cid, command=text, issuer=who,
                                duration=round(time.monotonic() - started, 3))
            self.bus.emit(CommandFinished(command_id=cid, text=text, ok=False, message="interrupted",
                                          duration=time.monotonic() - started))
            raise
        except (CommandFailed, BuildFailed, GitError, TransportError, TrafficError) as exc:
            outcome = Outcome(False, str(exc))
        except Exception as exc:  # a bug of ours: say so in one line, keep the traceback on disk
            where = self._save_traceback(cid, text)
            outcome = Outcome(False, f"internal error ({type(exc).__name__}: {exc}); traceback in {where}")
        finally:
            self._running.pop(cid, None)
        return self._finish(cid, text, who, started, outcome)

    def _save_traceback(self, cid: str, text: str) -> Path:
        import traceback

        path = self.config.state_dir / "errors" / f"{cid}.txt"
        write_atomic(path, self.bus.redactor.text(f"{self.bus.redactor.command(text)}\n\n{traceback.format_exc()}"))
        return path

    def _finish(self, cid: str, text: str, who: str, started: float, outcome: Outcome) -> Outcome:
        duration = time.monotonic() - started
        self.journal.append("command.end", id=cid, command=text, issuer=who, ok=outcome.ok,
                            message=outcome.message, duration=round(duration, 3))
        self.bus.emit(CommandFinished(command_id=cid, text=text, ok=outcome.ok, message=outcome.message,
                                      duration=duration))
        return outcome

    async def _dispatch(self, command: C.Command) -> str | None:
        handler: Callable[[Any], Awaitable[str | None]] | None = getattr(self, f"_do_{type(command).__name__.lower()}", None)
        if handler is None:
            raise CommandFailed(f"{command.verb}: not supported by this engine")
        return await handler(command)

    def running(self) -> list[C.Command]:
        """Commands whose work is under way now (the TUI asks before quitting over these)."""
        return [command for command, _ in self._running.values()]

    def _emit(self, text: str, level: str = "info", host: str | None = None) -> None:
        self.bus.emit(Message(text=text, level=level, host=host))

    say = _emit

    def failure(self, message: str) -> CommandFailed:
        return CommandFailed(message)

    # -- commands ----------------------------------------------------------
    async def _do_help(self, command: C.Help) -> str:
        for line in C.help_text().splitlines():
            self._emit(line)
        return ""

    async def _do_abort(self, command: C.Abort) -> str:
        targets = [(c, t) for c, t in self._running.values() if c.abortable]
        if not targets:
            raise CommandFailed("nothing to abort: no deploy or rollout is running")
        for _, task in targets:
            task.cancel()
        await asyncio.gather(*(t for _, t in targets), return_exceptions=True)
        return f"aborted {', '.join(c.text() for c, _ in targets)}"

    async def _do_sleep(self, command: C.Sleep) -> str:
        await asyncio.sleep(command.seconds)
        return ""

    async def _do_status(self, command: C.Status) -> str:
        apps = [self.config.apps[command.app]] if command.app else list(self.config.apps.values())
        covered = {h.name for a in apps for h in self.app_hosts(a)}
        for app in apps:
            for line in await self.rollouts.status_lines(app.name):
                self._emit(line, level="warning" if "INTERRUPTED" in line else "info")
        samples = await asyncio.gather(*(self._status_of(app, h) for app in apps for h in self.app_hosts(app)))
        if not command.app:
            for host in self.inventory.hosts:
                if host.name not in covered:
                    self._emit(f"{host.name:<16} group={host.group} (no app)", host=host.name)
        healthy = sum(1 for ok in samples if ok)
        return f"{healthy}/{len(samples)} hosts healthy"

    async def _status_of(self, app: AppConfig, host: Host) -> bool:
        pid = await self.transport_for(host).service_pid(app.service_name)
        sample = await self.monitor.probe(host.name)
        view = self.views[host.name]
        health = "healthy" if sample.ok else f"DOWN ({sample.error})"
        latency = f"{sample.latency * 1000:.0f}ms" if sample.latency is not None else "-"
        service = f"running pid {pid}" if pid else "stopped"
        self._emit(f"{app.name:<10} {host.address}:{host.port}  service={service}  health={health}"
                   f"  version={sample.version or view.version or '-'}  latency={latency}", host=host.name)
        return sample.ok

    async def _do_probe(self, command: C.Probe) -> str:
        if command.host not in self.monitor.targets:
            raise CommandFailed(f"{command.host} has no health check (give its app or group a `health:`)")
        sample = await self.monitor.probe(command.host)
        detail = f"status {sample.status}" if sample.status is not None else ("open" if sample.ok else sample.error)
        latency = f" in {sample.latency * 1000:.0f}ms" if sample.latency is not None else ""
        if not sample.ok:
            raise CommandFailed(f"{command.host}: {sample.error}")
        return f"{command.host}: {detail}{latency}" + (f", version {sample.version}" if sample.version else "")

    async def _do_heartbeat(self, command: C.Heartbeat) -> str:
        rows = self.monitor.table()
        for name, state, status, latency, error in rows:
            self._emit(f"{state:<10} {status:>7} {latency:>7}  {error}", host=name)
        up = sum(1 for s in self.monitor.states.values() if s.healthy)
        return f"{up}/{len(rows)} up"

    async def _do_waithealthy(self, command: C.WaitHealthy) -> str:
        app = self.config.apps[command.app]
        names = [h.name for h in self.app_hosts(app)]
        return await self._wait_for(names, True, command.timeout, app.name)

    async def _do_waitdown(self, command: C.WaitDown) -> str:
        if command.host not in self.monitor.targets:
            raise CommandFailed(f"{command.host} has no health check (give its app or group a `health:`)")
        return await self._wait_for([command.host], False, command.timeout, command.host)

    async def _wait_for(self, names: list[str], healthy: bool, timeout: float, what: str) -> str:
        """Probe until the heartbeat state of every host is `healthy` (fall/rise apply)."""
        # Quick re-probes when waiting for health (a deploy just finished); the monitor's pace
        # when waiting for a host to fall, so `fall` failures mean `fall` intervals as configured.
        pace = 0.2 if healthy else self.config.heartbeat.interval
        word = "healthy" if healthy else "down"
        pending = await probe_until(self.monitor, names, lambda name, _: self.monitor.states[name].healthy is healthy,
                                    timeout=timeout, pace=pace)
        if not pending:
            return f"{len(names)}/{len(names)} {'hosts of ' + what if len(names) > 1 else what} {word}"
        why = ", ".join(f"{n} ({self.monitor.states[n].last.error or 'up'})" for n in pending)  # type: ignore[union-attr]
        raise CommandFailed(f"timed out after {timeout:g}s waiting for {what} to be {word}: {why}")

    async def _do_run(self, command: C.Run) -> str:
        hosts = [self.inventory.get(command.target)] if self.inventory.get(command.target) else self.inventory.group(command.target)
        results = await asyncio.gather(*(self._run_on(h, command.command) for h in hosts if h is not None))
        failed = [f"{name}: {why}" for name, why in results if why]
        if failed:
            raise CommandFailed("; ".join(failed))
        return f"ok on {len(results)} host(s)"

    async def _run_on(self, host: Host, shell: str) -> tuple[str, str]:
        transport = self.transport_for(host)
        typed = shell  # what the output lines are labelled with: never the filled-in secret
        try:
            shell = fill_secrets(shell, self.config.secrets)
        except ValueError as exc:
            raise CommandFailed(f"run: {exc}") from None
        result = await transport.run(shell, on_line=lambda line, stream: self.bus.emit(
            OutputLine(host=host.name, line=line, stream=stream, source=typed)))
        return host.name, "" if result.ok else result.describe()

    def app_hosts(self, app: AppConfig) -> list[Host]:
        """The hosts that run `app`: its group, and its canary pool's hosts when the proxy fronts it."""
        hosts = self.inventory.group(app.group)
        for name in self.canary_desk.canary_hosts(app.name):
            host = self.inventory.get(name)
            if host is not None and host not in hosts:
                hosts.append(host)
        return hosts

    async def _do_start(self, command: C.Start) -> str:
        app = self.config.apps[command.app]
        if not app.service_command:
            raise CommandFailed(f"app {app.name} has no `service.command` in {self.config.file}")
        for host in self.app_hosts(app):
            rendered = render_string(app.service_command, self.host_vars(app, host))
            pid = await self.transport_for(host).start_service(app.service_name, rendered)
            self._emit(f"{app.service_name} running (pid {pid})", host=host.name)
        return ""

    async def _do_stop(self, command: C.Stop) -> str:
        app = self.config.apps[command.app]
        for host in self.app_hosts(app):
            was_running = await self.transport_for(host).stop_service(app.service_name)
            self._set_activity(host, "stopped")
            self._emit(f"{app.service_name} {'stopped' if was_running else 'was not running'}", host=host.name)
        return ""

    async def _do_build(self, command: C.Build) -> str:
        app = self.config.apps[command.app]
        record = await self._build(app, command.commit)
        return f"build {record.build_id} of {record.short} succeeded ({record.artifact})"

    async def _build(self, app: AppConfig, commit: str | None) -> BuildRecord:
        """Queue a build of `commit` (default: the branch head) and wait for it; raise unless it succeeded."""
        if not app.build.commands:
            raise CommandFailed(f"app {app.name} has no build commands in {self.config.file}")
        sha = await self.builder.resolve(app, commit)
        record = await (await self.build_queue.submit(app, sha))
        if record.status != "succeeded":
            raise CommandFailed(f"build {record.build_id} of {record.short} {record.status}: {record.message}")
        return record

    async def _do_builds(self, command: C.Builds) -> str:
        records = [r for r in self.builds.records() if command.app in (None, r.app)]
        for r in records[-30:]:
            duration = f"{r.duration:.1f}s" if r.duration is not None else "-"
            self._emit(f"{r.build_id:<32} {r.short} {r.status:<10} {duration:>7}  {r.author}: {r.subject}"
                       + (f" — {r.message}" if r.message and r.status != "succeeded" else ""))
        return f"{len(records)} build(s)"

    async def _do_cancelbuild(self, command: C.CancelBuild) -> str:
        record = self.build_queue.cancel(command.build_id)
        if record is None:
            known = {r.build_id: r for r in self.builds.records()}
            if command.build_id in known:
                raise CommandFailed(f"build {command.build_id} is already {known[command.build_id].status}")
            raise CommandFailed(f"no build {command.build_id!r} (see `builds`)")
        return f"build {command.build_id} cancelled"

    async def _do_logbuild(self, command: C.LogBuild) -> str:
        known = {r.build_id: r for r in self.builds.records()}
        record = known.get(command.build_id)
        if record is None:
            raise CommandFailed(f"no build {command.build_id!r} (see `builds`)")
        try:
            text = Path(record.log or "").read_text(encoding="utf-8", errors="replace")
        except OSError:
            raise CommandFailed(f"build {command.build_id} has no log yet") from None
        for line in text.splitlines():
            self.bus.emit(OutputLine(host=f"build:{record.app}", line=line, source=record.build_id))
        return f"build {record.build_id}: {record.status}"

    async def artifact_for(self, app: AppConfig, version: str | None) -> BuildRecord:
        """The built artifact of `version` (default: the branch head), building it first if needed."""
        sha = await self.builder.resolve(app, version)
        return self.builds.artifact_for(app.name, sha) or await self._build(app, sha)

    async def _do_deploy(self, command: C.Deploy) -> str:
        app = self.config.apps[command.app]
        hosts = self.inventory.group(app.group)
        if command.hosts:
            outside = [h for h in command.hosts if h not in {x.name for x in hosts}]
            if outside:
                raise CommandFailed(f"host {outside[0]} is not in group {app.group} of app {app.name}")
        for host in hosts:  # refuse early, before any host is touched
            self.transport_for(host)
        record = await self.artifact_for(app, command.version)
        targets = list(command.hosts) or [h.name for h in hosts]
        self._emit(f"deploying {app.name} {record.short} ({record.subject}) to {len(targets)} host(s)")
        result = await self.run_deploy_playbook(app, targets, version=record.short, commit=record.commit,
                                                artifact=record.artifact or "")
        if not result.ok:
            untouched = [h for h, s in result.host_status.items() if s == "skipped"]
            raise CommandFailed(f"deploy of {app.name} {record.short} failed — {result.failure_text()}"
                                + (f"; not touched: {', '.join(untouched)}" if untouched else ""))
        if len(targets) == len(hosts):
            self.rollouts.record_release(app.name, record.short, record.commit, record.artifact or "")
        return f"{app.name} {record.short} deployed to {sum(1 for s in result.host_status.values() if s == 'ok')} host(s)"

    async def run_deploy_playbook(self, app: AppConfig, targets: list[str], *, version: str, commit: str,
                                  artifact: str, parallel: bool = False) -> Any:
        """Run the app's deploy playbook on `targets`; remember what each host now runs.

        `parallel` runs all targets at once whatever the playbook's `serial` says: a rollout
        makes its own batches.
        """
        playbook = self.playbooks.get(app.name)
        if playbook is None:
            raise CommandFailed(f"app {app.name} has no deploy playbook")
        if parallel:
            playbook = replace(playbook, plays=tuple(replace(p, serial=None) for p in playbook.plays))
        extra = {"app": app.name, "version": version, "commit": commit, "artifact": artifact,
                 "service_name": app.service_name, "service_command": app.service_command}
        # Every inventory host is offered (a canary lives in another group than the app's); `limit` picks.
        hosts = [self._with_app_vars(app, h) for h in self.inventory.hosts]
        result = await self.runner.run(playbook, hosts, extra_vars=extra, limit=targets)
        deployed = self._load_deployed()
        # A host in a rollout is not idle after its playbook: it waits for its health gate, drained; the
        # rollout's own steps (done, failed) say what it is next.
        steered = {h for runner in self.rollouts.live.values() for h in runner.plan.hosts}
        for name, status in result.host_status.items():
            if status == "ok":
                deployed[name] = version
                self.views[name].version = version
                if name not in steered:
                    self._set_activity(self.inventory.get(name), "idle")
        self._save_deployed(deployed)
        return result

    def traffic_control(self, app: AppConfig) -> Any:
        """Drain/enable controls for a rollout of `app`, or None when no proxy fronts it."""
        return self.canary_desk.control_for(app)

    async def _do_canary(self, command: C.Canary) -> str:
        return await self.canary_desk.canary(command)

    async def _do_traffic(self, command: C.Traffic) -> str:
        return await self.canary_desk.traffic(command)

    async def _do_provision(self, command: C.Provision) -> str:
        group = self.config.groups[command.group]
        created = ""
        if group.provider == "ec2":
            created = await self.provision_machines(group)
        hosts = self.inventory.group(group.name)
        playbook = self.provisioners.get(group.name)
        if playbook is None:
            return created or f"group {group.name} has no provisioning playbook (groups.{group.name}.provision)"
        if not hosts:
            raise CommandFailed(f"group {group.name} has no hosts to provision")
        extra = {"group": group.name, "app_hosts": {g: [h.address for h in self.inventory.group(g)]
                                                    for g in self.config.groups}}
        result = await self.runner.run(playbook, self.inventory.hosts, extra_vars=extra,
                                       limit=[h.name for h in hosts])
        if not result.ok:
            raise CommandFailed(f"provisioning {group.name} failed — {result.failure_text()}")
        return (created + "; " if created else "") + f"{len(hosts)} host(s) of {group.name} provisioned"

    async def provision_machines(self, group: Any) -> str:
        return await self.cloud.provision(group)

    async def _do_scale(self, command: C.Scale) -> str:
        return await self.cloud.scale(command)

    async def _do_decommission(self, command: C.Decommission) -> str:
        return await self.cloud.decommission(command)

    def reload_inventory(self) -> None:
        """The fleet changed (EC2 instances came or went): rebuild hosts, views and heartbeat targets."""
        self.inventory = build_inventory(self.config)
        self.names = C.Names(apps=tuple(self.config.apps), groups=tuple(self.config.groups),
                             hosts=tuple(self.inventory.names()))
        for host in self.inventory.hosts:
            if host.name not in self.views or self.views[host.name].host != host:
                old = self.views.get(host.name)
                self.views[host.name] = HostView(host, version=old.version if old else None)
                self._transports.pop(host.name, None)
        for name in [n for n in self.views if self.inventory.get(n) is None]:
            del self.views[name]
        self.monitor.set_targets(self._probe_targets())

    # -- rollouts ----------------------------------------------------------
    async def _do_roll(self, command: C.Roll) -> str:
        return await self.rollouts.roll(command)

    async def _do_rollresume(self, command: C.RollResume) -> str:
        return await self.rollouts.resume_interrupted(command)

    async def _do_rollback(self, command: C.Rollback) -> str:
        return await self.rollouts.rollback(command)

    async def _do_pause(self, command: C.Pause) -> str:
        if not self.rollouts.live:
            raise CommandFailed("nothing to pause: no rollout is running")
        for runner in self.rollouts.live.values():
            runner.pause()
        return f"pausing {', '.join(self.rollouts.live)} before the next batch"

    async def _do_resume(self, command: C.Resume) -> str:
        paused = [name for name, r in self.rollouts.live.items() if r.pause_requested]
        if not paused:
            raise CommandFailed("nothing to resume: no rollout is paused")
        for name in paused:
            self.rollouts.live[name].resume()
        return f"resumed {', '.join(paused)}"

    async def _do_lockstatus(self, command: C.LockStatus) -> str:
        info = await self.rollouts.lock_for(self.config.apps[command.app]).status()
        return info.describe() if info else f"{command.app}: not locked"

    async def _do_lockrelease(self, command: C.LockRelease) -> str:
        if command.app in self.rollouts.live:
            raise CommandFailed(f"a rollout of {command.app} runs in this console; `abort` it instead")
        info = await self.rollouts.lock_for(self.config.apps[command.app]).force_release()
        return f"released the lock of {command.app}" + (f" (was: {info.describe()})" if info else " (it was not locked)")

    async def _do_history(self, command: C.History) -> str:
        lines = self.rollouts.history(command.app, command.as_json)
        for line in lines:
            self._emit(line)
        return f"{sum(1 for line in lines if not line.startswith(' '))} rollout(s)" if not command.as_json else ""

    # -- host variables and state -----------------------------------------
    def host_vars(self, app: AppConfig, host: Host) -> dict[str, Any]:
        return {**app.vars, **host.vars, "inventory_hostname": host.name, "ansible_host": host.address,
                "port": host.port, "host_root": self.transport_for(host).root, "app": app.name}

    def _with_app_vars(self, app: AppConfig, host: Host) -> Host:
        return replace(host, vars={**app.vars, **host.vars})

    def _load_deployed(self) -> dict[str, str]:
        try:
            return json.loads(self._deployed_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_deployed(self, deployed: dict[str, str]) -> None:
        write_atomic(self._deployed_path, json.dumps(deployed, indent=1, sort_keys=True))

    def _set_activity(self, host: Host | None, activity: str, detail: str = "") -> None:
        if host is None:
            return
        view = self.views[host.name]
        view.activity, view.detail = activity, detail
        self.bus.emit(HostState(host=host.name, group=host.group, activity=activity, version=view.version, detail=detail))

    def _track(self, event: Event) -> None:
        """Keep host views current from what the parts report."""
        if isinstance(event, TaskStarted) and event.host in self.views:
            if self.views[event.host].activity != "deploying":
                self._set_activity(self.views[event.host].host, "deploying", event.task)
        elif isinstance(event, TaskFinished) and event.status == "failed" and event.host in self.views:
            self._set_activity(self.views[event.host].host, "failed", event.message)
        elif isinstance(event, HealthSample) and event.host in self.views:
            view = self.views[event.host]
            view.latency = event.latency
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
                self._set_activity(self.views[event.host].host, activity, event.detail)
