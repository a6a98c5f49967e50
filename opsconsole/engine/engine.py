"""The engine: runs commands as asyncio work and reports by events. Knows nothing of Textual.

It builds its services once and hands each what it needs (none of them holds the engine):

    Fleet           inventory, host views, transports        (engine/fleet.py)
    Deployer        builds, artifacts, deploy playbook runs  (engine/deployer.py)
    TrafficService  proxy driver, desired weights, drain     (engine/traffic_service.py)
    HeartbeatMonitor                                         (heartbeat/monitor.py)
    Rollouts, CanaryDesk, CloudDesk: the command desks over them
    Preview         what a command will do, for confirm dialogs

`HANDLERS` maps every command type to the service method that runs it; a command type without a
handler stops the engine from being built. Front ends start it with `Engine.open(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

from opsconsole.builds.poller import BranchPoller
from opsconsole.fsio import make_private_dir, write_atomic
from opsconsole.builds.queue import BuildQueue
from opsconsole.builds.runner import Builder, BuildRecord, BuildStore
from opsconsole.config.model import AppConfig, Config
from opsconsole.config.secrets import fill_secrets
from opsconsole.demo.repo import ensure_demo_repo
from opsconsole.engine import commands as C
from opsconsole.engine.canary_desk import CanaryDesk
from opsconsole.engine.cloud import CloudDesk
from opsconsole.engine.deployer import Deployer
from opsconsole.engine.fleet import Fleet, HostView, ssh_options
from opsconsole.engine.journal import Journal, default_issuer
from opsconsole.engine.kube_desk import KubeDesk
from opsconsole.engine.preview import Preview
from opsconsole.engine.rolling import Rollouts
from opsconsole.engine.scratch import scratch_config
from opsconsole.engine.traffic_service import AppTrafficControl, TrafficService
from opsconsole.errors import CommandFailed, OperatorError
from opsconsole.events import CommandFinished, CommandStarted, Event, EventBus, OutputLine
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.heartbeat.rawhttp import RawProber
from opsconsole.heartbeat.until import probe_until
from opsconsole.hosts import Host
from opsconsole.inventory import Inventory
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.model import Playbook
from opsconsole.playbook.plan import check_lines, describe as describe_plan, limit_hosts
from opsconsole.playbook.templating import render_string
from opsconsole.rollouts.plan import RolloutPlan
from opsconsole.traffic.proxy_host import proxy_host_name, proxy_host_vars
from opsconsole.transport.base import Transport
from opsconsole.yamlsource import SourceError

__all__ = ["CommandFailed", "Engine", "HostView", "Outcome", "check_handlers", "ssh_options"]

_MACHINE = socket.gethostname()
# Where the events of the command whose work runs in this context go besides the bus (see `execute(output=)`).
# A context variable, not a command id on every event: tasks a command starts inherit it, and the heartbeat,
# pollers and other commands, which run in contexts of their own, never leak into its output.
_OUTPUT: contextvars.ContextVar[Callable[[Event], None] | None] = contextvars.ContextVar("command_output",
                                                                                          default=None)


def _route_output(event: Event) -> None:
    sink = _OUTPUT.get()
    if sink is not None:
        sink(event)

# A handler runs one command type; what it returns is the command's success message.
Handler = Callable[[Any], Awaitable[str | None]]


def _cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


def check_handlers(handlers: dict[type[C.Command], Handler], commands: Iterable[type[C.Command]]) -> None:
    """Every command type has exactly one handler, and every handler a command type; else TypeError.

    Run when an engine is built, so a new command without a handler (or a handler left behind) fails
    at once, not when an operator first types it.
    """
    commands = list(commands)
    missing = [cls.__name__ for cls in commands if cls not in handlers]
    stray = [cls.__name__ for cls in handlers if cls not in commands]
    problems = ([f"no handler for {', '.join(missing)}"] if missing else []) + \
        ([f"a handler for unknown {', '.join(stray)}"] if stray else [])
    if problems:
        raise TypeError("the engine's handler table does not match the command types: " + "; ".join(problems))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class Startup:
    """The always-on work a front end asked `Engine.open` for."""

    heartbeat: bool = False  # the heartbeat monitor
    poll: bool = False  # the branch pollers: build what is pushed, and deploy it as `on_build` says
    watch_proxy: bool = False  # report the canary split, and put back weights a restarted proxy lost


class Engine:
    def __init__(self, config: Config, *, bus: EventBus | None = None, issuer: str | None = None,
                 startup: Startup = Startup()) -> None:
        self.config = config
        self.bus = bus or EventBus()
        self.issuer = issuer or default_issuer()
        self.startup = startup
        try:
            make_private_dir(config.state_dir)
        except OSError as exc:  # a file, or a place nobody may create it: the config's key is at fault
            raise SourceError(config.file, None, "state_dir",
                              f"{config.state_dir} cannot be the state directory: {exc.strerror}") from None
        # Secrets are masked from here on in every event (TUI, headless, --json), the journal and the build logs.
        self.bus.redactor.add(config.secrets.values())
        self.journal = Journal(config.state_dir / "journal.jsonl", redactor=self.bus.redactor)
        # -- the services, built once and handed to each other (none holds the engine) --
        self.fleet = Fleet(config, self.bus)
        self.bus.subscribe(self.fleet.track)
        self.bus.subscribe(_route_output)
        # The one hook back into the engine: what a successful build starts is a command, run by `execute`.
        self.deployer = Deployer(config, self.fleet, self.bus, on_build=self._after_build)
        self.traffic = TrafficService(config, self.fleet, self.bus)
        # Plain-HTTP probes use the lean client: httpx cost 5x the CPU and fell behind at 1,000 hosts
        # (bench/bench_heartbeat.py); https still goes through httpx.
        self.prober = RawProber(endpoint=self.fleet.endpoint)
        self.monitor = HeartbeatMonitor(self.bus, self.prober, self.fleet.probe_targets(), config.heartbeat,
                                        change_log=config.state_dir / "heartbeat" / "changes.jsonl")
        self.rollouts = Rollouts(config, self.fleet, self.bus, issuer=self.issuer, deployer=self.deployer,
                                 traffic=self.traffic, monitor=self.monitor)
        self.canary_desk = CanaryDesk(config, self.fleet, self.traffic, self.deployer, self.rollouts)
        self.cloud = CloudDesk(config, self.fleet, self.bus, self.traffic, self.monitor)
        self.kube = KubeDesk(config, self.bus, self.rollouts.releases, self.fleet, holding=self.rollouts.holding)
        # Commands now running: id -> (command, the task doing its work). `abort` cancels these.
        self._running: dict[str, tuple[C.Command, asyncio.Task[str | None]]] = {}
        self.previews = Preview(config, self.fleet, self.deployer, self.rollouts, self._running)
        self._background: set[asyncio.Future[None]] = set()  # kept until done: a dropped task may be collected
        self._started = False
        self._closed = False
        self.handlers: dict[type[C.Command], Handler] = self._handler_table()
        check_handlers(self.handlers, C.command_classes())

    def _handler_table(self) -> dict[type[C.Command], Handler]:
        rollouts, canary, cloud, kube = self.rollouts, self.canary_desk, self.cloud, self.kube
        return {
            C.Help: self._help, C.Abort: self._abort, C.Sleep: self._sleep,
            C.Status: self._status, C.Probe: self._probe, C.Heartbeat: self._heartbeat,
            C.WaitHealthy: self._wait_healthy, C.WaitDown: self._wait_down, C.Run: self._run,
            C.Start: self._start_service, C.Stop: self._stop_service,
            C.Build: self._build, C.Builds: self._builds, C.CancelBuild: self._cancel_build, C.LogBuild: self._log_build,
            C.Deploy: self._deploy, C.Provision: self._provision, C.PlaybookRun: self._playbook_run,
            # A Kubernetes app's rollout is the Deployment controller's: kube routes those commands there.
            C.Roll: kube.route(rollouts.roll, kube.roll), C.RollResume: rollouts.resume_interrupted,
            C.Rollback: kube.route(rollouts.rollback, kube.rollback),
            C.Pause: kube.both(rollouts.pause, lambda: bool(rollouts.live), kube.pause),
            C.Resume: kube.both(rollouts.resume, lambda: bool(rollouts.paused()), kube.resume),
            C.History: kube.route(rollouts.show_history, kube.history),
            C.LockStatus: rollouts.lock_status, C.LockRelease: rollouts.lock_release,
            C.Canary: kube.route_canary(canary.canary), C.Traffic: canary.traffic,
            C.Scale: cloud.scale, C.Decommission: cloud.decommission,
            C.Manifests: kube.manifests, C.Apply: kube.apply,
        }

    # -- the one way a front end starts an engine ------------------------------------
    @classmethod
    def open(cls, config: Config, *, heartbeat: bool = False, poll: bool = False, watch_proxy: bool = False,
             bus: EventBus | None = None, issuer: str | None = None) -> "Engine":
        """An engine prepared for its first command, that starts exactly the always-on work asked for.

        Prepared now: every playbook parses (SourceError names a bad one's file and line), demo repos
        exist. Started by `await engine.start()`, or `async with engine:` (which also closes it), once
        the front end's event loop runs: `heartbeat` the monitor, `poll` the branch pollers (never when
        read-only), `watch_proxy` the proxy watch. A monitor asks for `heartbeat` only: it never changes
        the fleet.
        """
        engine = cls(config, bus=bus, issuer=issuer, startup=Startup(heartbeat, poll, watch_proxy))
        engine.prepare()
        return engine

    @classmethod
    @contextlib.contextmanager
    def checking(cls, config: Config) -> Iterator["Engine"]:
        """An engine that writes nothing where the operator keeps state, for `--check` and for reading a
        script before it runs: built on a scratch copy of the state's fleet names (engine/scratch.py), every
        playbook parsed as `open` parses them (SourceError names a bad one), no demo repo made. Never
        started, it has no connection, task or file open to close."""
        with scratch_config(config) as scratch:
            engine = cls(scratch)
            engine.deployer.load_playbooks()
            yield engine

    def prepare(self) -> None:
        """Everything that must be right before the first command: playbooks parse, demo repos exist.

        Raises SourceError naming the file and line of a bad playbook.
        """
        self.deployer.load_playbooks()
        for app in self.config.apps.values():
            if app.demo_repo and "://" not in app.repo:
                ensure_demo_repo(Path(app.repo), app.branch)

    async def start(self) -> None:
        """Start what `Engine.open` was asked for (once; an engine built without `open` starts nothing)."""
        if self._started:
            return
        self._started = True
        if self.startup.heartbeat and self.monitor.targets:
            self._keep(asyncio.ensure_future(self.monitor.run()))
        if self.startup.heartbeat and self.kube.kube_groups():  # pods are watched, not probed
            self._keep(asyncio.ensure_future(self.kube.watch_pods()))
        if self.startup.poll and not self.config.readonly:
            for poller in self.deployer.pollers.values():
                self._keep(asyncio.ensure_future(poller.run()))
        if self.startup.watch_proxy and self.config.proxy is not None:
            self._keep(asyncio.ensure_future(self.traffic.watch()))
            if self.kube.fronted_apps():  # Kubernetes apps: the proxy's members follow their EndpointSlices
                self._keep(asyncio.ensure_future(self.kube.follow_endpoints(self.traffic.driver)))

    async def __aenter__(self) -> "Engine":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel the always-on work and close every connection; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        # Commands still running are aborted, so their cleanup (ansible-playbook's process groups, services
        # mid-start) runs now, not never: a closing loop may drop a task without cancelling it.
        tasks = [*self._background, *(work for _, work in self._running.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()
        await self.deployer.close()
        await self.fleet.close()
        await self.traffic.close()
        await self.prober.aclose()

    # -- what front ends read ------------------------------------------------------
    @property
    def inventory(self) -> Inventory:
        return self.fleet.inventory

    @property
    def views(self) -> dict[str, HostView]:
        return self.fleet.views

    @property
    def names(self) -> C.Names:
        return self.fleet.names

    @property
    def builds(self) -> BuildStore:
        return self.deployer.builds

    @property
    def builder(self) -> Builder:
        return self.deployer.builder

    @property
    def build_queue(self) -> BuildQueue:
        return self.deployer.build_queue

    @property
    def pollers(self) -> dict[str, BranchPoller]:
        return self.deployer.pollers

    @property
    def playbooks(self) -> dict[str, Playbook]:
        return self.deployer.playbooks

    def parse(self, line: str) -> C.Command:
        return C.parse_command(line, self.names)

    def transport_for(self, host: Host) -> Transport:
        return self.fleet.transport_for(host)

    def app_hosts(self, app: AppConfig) -> list[Host]:
        """The hosts that run `app`: its group, and its canary pool's hosts when the proxy fronts it."""
        return self.fleet.app_hosts(app)

    async def plan(self, command: C.Roll) -> RolloutPlan:
        """The rollout plan `command` would run (no build, nothing changed): for confirm dialogs."""
        return await self.rollouts.plan_for(command)

    def masked(self, typed: str) -> str:
        """A typed line (or a message quoting it) as a front end may show or keep it: the credentials it holds
        are learned, so later output masks them too, and masked here (`curl -u admin:***`)."""
        self.bus.redactor.learn(typed)
        return self.bus.redactor.command(typed)

    async def preview(self, command: C.Command) -> str:
        """What `command` will do, in words: the text every front end shows before it runs (changes nothing).

        A credential typed in the command (`PGPASSWORD=…`) is learned here, before any dialog shows it."""
        self.bus.redactor.learn(command.text())
        if isinstance(command, (C.Roll, C.Rollback, C.Canary)) and self.kube.is_kube(command.app):
            text = f"{await self.kube.preview(command)}\n\ncommand: {command.text()}"
        else:
            text = await self.previews.text(command)
        return self.bus.redactor.command(text)

    def has_canary(self, app: str) -> bool:
        """Whether canary commands can act on `app`: the proxy fronts it, or Kubernetes runs its canary."""
        return self.traffic.fronted(app) or self.kube.is_kube(app)

    def traffic_control(self, app: AppConfig) -> AppTrafficControl | None:
        """Drain/enable controls for a rollout of `app`, or None when no proxy fronts it."""
        return self.traffic.control_for(app)

    async def artifact_for(self, app: AppConfig, version: str | None) -> BuildRecord:
        return await self.deployer.artifact_for(app, version)

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
        return self.rollouts.paused() + self.kube.paused()

    def running(self) -> list[C.Command]:
        """Commands whose work is under way now (the TUI asks before quitting over these)."""
        return [command for command, _ in self._running.values()]

    def say(self, text: str, level: str = "info", host: str | None = None) -> None:
        self.fleet.say(text, level=level, host=host)

    # -- the fleet changing --------------------------------------------------------
    def reload_inventory(self) -> None:
        """The fleet changed (EC2 instances came or went): rebuild hosts, views and heartbeat targets."""
        self.cloud.on_fleet_changed()

    async def _after_build(self, app: AppConfig, record: BuildRecord) -> None:
        """A build succeeded: start the deploy the app asks for, as a journaled command like any other."""
        if app.on_build == "none" or self.config.readonly:
            return
        command: C.Command = C.Roll(app=app.name, version=record.commit) if app.on_build == "rolling" \
            else C.Canary(app=app.name, action="deploy", version=record.commit)
        self.say(f"{app.name}: build {record.build_id} of {record.short} succeeded; starting `{command.text()}`")
        self._keep(asyncio.ensure_future(self.execute(command, issuer=f"{self.issuer} (build {record.build_id})")))

    def _keep(self, task: "asyncio.Future[Any]") -> None:
        """Hold a background task until it ends (a deploy per build must not grow a list for ever)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- running commands --------------------------------------------------
    def refusal(self, command: C.Command) -> str | None:
        """Why this engine will not run `command`, or None. Front ends may say it in their own words first."""
        if self.config.readonly and command.mutating:
            return (f"refused: `{command.text()}` changes something and this console is read-only "
                    f"(`readonly: true` in {self.config.file}, or --readonly)")
        return None

    async def execute(self, command: C.Command, *, issuer: str | None = None,
                      output: Callable[[Event], None] | None = None) -> Outcome:
        """Run one command: journaled before and after, reported by events, never raises but on cancel.

        `output`, if given, also gets every event the command's own work emits (its lines, messages,
        task results), synchronously as they happen: a front end shows them as that command's result.

        A command this engine refuses (a change while read-only) is journaled as refused and never runs,
        whichever front end sent it. An OperatorError is the command's failure, said in its own words;
        anything else is a bug of ours: "internal error", with the traceback in a file.
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
        token = _OUTPUT.set(output)  # the task copies the context now; set even when None, so no outer sink leaks in
        try:
            work = asyncio.ensure_future(self._dispatch(command))
        finally:
            _OUTPUT.reset(token)
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
        except OperatorError as exc:
            outcome = Outcome(False, exc.report())
        except Exception as exc:  # a bug of ours: say so in one line, keep the traceback on disk
            where = self._save_traceback(cid, text)
            outcome = Outcome(False, f"internal error ({type(exc).__name__}: {exc}); traceback in {where}")
        finally:
            self._running.pop(cid, None)
        return self._finish(cid, text, who, started, outcome)

    def _save_traceback(self, cid: str, text: str) -> Path:
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
        handler = self.handlers.get(type(command))
        if handler is None:  # a Command subclass made outside the command language: a bug, said loudly
            raise TypeError(f"no handler for command type {type(command).__name__}")
        return await handler(command)

    # -- the engine's own commands -------------------------------------------
    async def _help(self, command: C.Help) -> str:
        for line in C.help_text().splitlines():
            self.say(line)
        return ""

    async def _abort(self, command: C.Abort) -> str:
        targets = [(c, t) for c, t in self._running.values() if c.abortable]
        if not targets:
            raise CommandFailed("nothing to abort: no deploy or rollout is running in this console (another "
                                "console's is stopped there; `lock status APP` says who holds an app's lock)")
        for _, task in targets:
            task.cancel()
        await asyncio.gather(*(t for _, t in targets), return_exceptions=True)
        # After the stop, the way on: what is left and the command that does it (the operator reads it here).
        apps = {app for c, _ in targets if isinstance(app := getattr(c, "app", None), str)}
        way_on = [line for app in sorted(apps) if (line := self.rollouts.way_on(app))]
        return "; ".join([f"aborted {', '.join(c.text() for c, _ in targets)}", *way_on])

    async def _sleep(self, command: C.Sleep) -> str:
        await asyncio.sleep(command.seconds)
        return ""

    async def _status(self, command: C.Status) -> str:
        apps = [self.config.apps[command.app]] if command.app else list(self.config.apps.values())
        covered = {h.name for a in apps for h in self.app_hosts(a)}
        for app in apps:
            for line in await self.rollouts.status_lines(app.name):
                self.say(line, level="warning" if "INTERRUPTED" in line else "info")
        samples = await asyncio.gather(*(self._status_of(app, h) for app in apps for h in self.app_hosts(app)))
        if not command.app:
            for line in self.cloud.status_lines():
                self.say(line)
            for host in self.inventory.hosts:
                if host.name not in covered:
                    self.say(f"{host.name:<16} group={host.group} (no app)", host=host.name)
        healthy = sum(1 for ok in samples if ok)
        return f"{healthy}/{len(samples)} hosts healthy"

    async def _status_of(self, app: AppConfig, host: Host) -> bool:
        pid = await self.fleet.transport_for(host).service_pid(app.service_name)
        sample = await self.monitor.probe(host.name)
        view = self.views[host.name]
        health = "healthy" if sample.ok else f"DOWN ({sample.error})"
        latency = f"{sample.latency * 1000:.0f}ms" if sample.latency is not None else "-"
        service = f"running pid {pid}" if pid else "stopped"
        self.say(f"{app.name:<10} {host.address}:{host.port}  service={service}  health={health}"
                   f"  version={sample.version or view.version or '-'}  latency={latency}", host=host.name)
        return sample.ok

    async def _probe(self, command: C.Probe) -> str:
        if command.host not in self.monitor.targets:
            raise CommandFailed(f"{command.host} has no health check (give its app or group a `health:`)")
        sample = await self.monitor.probe(command.host)
        detail = f"status {sample.status}" if sample.status is not None else ("open" if sample.ok else sample.error)
        latency = f" in {sample.latency * 1000:.0f}ms" if sample.latency is not None else ""
        if not sample.ok:
            raise CommandFailed(f"{command.host}: {sample.error}")
        return f"{command.host}: {detail}{latency}" + (f", version {sample.version}" if sample.version else "")

    async def _heartbeat(self, command: C.Heartbeat) -> str:
        rows = self.monitor.table()
        for name, state, status, latency, error in rows:
            self.say(f"{state:<10} {status:>7} {latency:>7}  {error}", host=name)
        up = sum(1 for s in self.monitor.states.values() if s.healthy)
        return f"{up}/{len(rows)} up"

    async def _wait_healthy(self, command: C.WaitHealthy) -> str:
        app = self.config.apps[command.app]
        names = [h.name for h in self.app_hosts(app)]
        return await self._wait_for(names, True, command.timeout, app.name)

    async def _wait_down(self, command: C.WaitDown) -> str:
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

    async def _run(self, command: C.Run) -> str:
        hosts = [self.inventory.get(command.target)] if self.inventory.get(command.target) else self.inventory.group(command.target)
        results = await asyncio.gather(*(self._run_on(h, command.command) for h in hosts if h is not None))
        failed = [f"{name}: {why}" for name, why in results if why]
        if failed:
            raise CommandFailed("; ".join(failed))
        return f"ok on {len(results)} host(s)"

    async def _run_on(self, host: Host, shell: str) -> tuple[str, str]:
        transport = self.fleet.transport_for(host)
        typed = shell  # what the output lines are labelled with: never the filled-in secret
        try:
            shell = fill_secrets(shell, self.config.secrets)
        except ValueError as exc:
            raise CommandFailed(f"run: {exc}") from None
        result = await transport.run(shell, on_line=lambda line, stream: self.bus.emit(
            OutputLine(host=host.name, line=line, stream=stream, source=typed)))
        return host.name, "" if result.ok else result.describe()

    async def _start_service(self, command: C.Start) -> str:
        app = self.config.apps[command.app]
        if not app.service_command:
            raise CommandFailed(f"app {app.name} has no `service.command` in {self.config.file}")
        for host in self.app_hosts(app):
            rendered = render_string(app.service_command, self.fleet.host_vars(app, host))
            pid = await self.fleet.transport_for(host).start_service(app.service_name, rendered, port=host.port)
            self.say(f"{app.service_name} running (pid {pid})", host=host.name)
        return ""

    async def _stop_service(self, command: C.Stop) -> str:
        app = self.config.apps[command.app]
        for host in self.app_hosts(app):
            was_running = await self.fleet.transport_for(host).stop_service(app.service_name)
            self.fleet.set_activity(host, "stopped")
            self.say(f"{app.service_name} {'stopped' if was_running else 'was not running'}", host=host.name)
        return ""

    async def _build(self, command: C.Build) -> str:
        app = self.config.apps[command.app]
        record = await self.deployer.build(app, command.commit)
        return f"build {record.build_id} of {record.short} succeeded ({record.artifact})"

    async def _builds(self, command: C.Builds) -> str:
        records = [r for r in self.builds.records() if command.app in (None, r.app)]
        for r in records[-30:]:
            duration = f"{r.duration:.1f}s" if r.duration is not None else "-"
            self.say(f"{r.build_id:<32} {r.short} {r.status:<10} {duration:>7}  {r.author}: {r.subject}"
                       + (f" — {r.message}" if r.message and r.status != "succeeded" else ""))
        return f"{len(records)} build(s)"

    async def _cancel_build(self, command: C.CancelBuild) -> str:
        record = self.build_queue.cancel(command.build_id)
        if record is None:
            known = {r.build_id: r for r in self.builds.records()}
            if command.build_id in known:
                raise CommandFailed(f"build {command.build_id} is already {known[command.build_id].status}")
            raise CommandFailed(f"no build {command.build_id!r} (see `builds`)")
        return f"build {command.build_id} cancelled"

    async def _log_build(self, command: C.LogBuild) -> str:
        known = {r.build_id: r for r in self.builds.records()}
        record = known.get(command.build_id)
        if record is None:
            raise CommandFailed(f"no build {command.build_id!r} (see `builds`)")
        try:
            text = Path(record.log or "").read_text(encoding="utf-8", errors="replace")
        except OSError:
            raise CommandFailed(f"build {command.build_id} has no log yet") from None
        # The verdict first, with the failing command and its exit code: the log's end is where it failed,
        # but a long log's top is what the reader sees.
        verdict = f"build {record.build_id} of {record.short} {record.status.upper()}" + (
            f": {record.message}" if record.message and record.status != "succeeded" else "")
        self.say(verdict, level="info" if record.status == "succeeded" else "error")
        for line in text.splitlines():
            self.bus.emit(OutputLine(host=f"build:{record.app}", line=line, source=record.build_id))
        return verdict

    async def _deploy(self, command: C.Deploy) -> str:
        app = self.config.apps[command.app]
        hosts = self.inventory.group(app.group)
        if command.hosts:
            outside = [h for h in command.hosts if h not in {x.name for x in hosts}]
            if outside:
                raise CommandFailed(f"host {outside[0]} is not in group {app.group} of app {app.name}")
        for host in hosts:  # refuse early, before any host is touched
            self.fleet.transport_for(host)
        if app.name in self.rollouts.live:
            raise CommandFailed(f"a rollout of {app.name} is running here ({self.rollouts.live[app.name].plan.rollout_id}): "
                                "deploy when it is done, or `abort` it first")
        record = await self.deployer.artifact_for(app, command.version)
        targets = list(command.hosts) or [h.name for h in hosts]

        def lost(why: Exception) -> None:
            self.say(f"deploy of {app.name} stopped: {why}", level="error")

        # The same lock a roll holds: a deploy racing another console's roll left both saying "done" and the
        # fleet on whichever version wrote last.
        async with self.rollouts.holding(app, f"deploy {app.name} {record.short}", lost):
            self.say(f"deploying {app.name} {record.short} ({record.subject}) to {len(targets)} host(s)")
            result = await self.deployer.run_deploy_playbook(app, targets, version=record.short, commit=record.commit,
                                                             artifact=record.artifact or "",
                                                             steered=self.rollouts.steered_hosts())
        if not result.ok:
            untouched = [h for h, s in result.host_status.items() if s == "skipped"]
            raise CommandFailed(f"deploy of {app.name} {record.short} failed — {result.failure_text()}"
                                + (f"; not touched: {', '.join(untouched)}" if untouched else ""))
        if len(targets) == len(hosts):
            self.rollouts.releases.record(app.name, record.short, record.commit, record.artifact or "")
        return f"{app.name} {record.short} deployed to {sum(1 for s in result.host_status.values() if s == 'ok')} host(s)"

    async def _playbook_run(self, command: C.PlaybookRun) -> str:
        """Any playbook against the fleet; its path is relative to the config file's directory."""
        path = self.config.base_dir / command.file
        try:
            playbook = load_playbook(path)
        except SourceError as exc:
            raise CommandFailed(f"playbook run: {exc}") from None  # names file, line and key; nothing ran
        hosts = self.inventory.hosts
        limit = limit_hosts(command.limit, hosts) if command.limit else None
        if command.check:  # Ansible's --check: every task says what it would change; nothing changes
            result = await self.deployer.runner.run(playbook, hosts, limit=limit, check=True, diff=command.diff)
            return "\n".join([describe_plan(playbook, hosts, limit).replace("; nothing was run", "; checked, "
                                                                           "nothing changed"),
                               "what would change:", *check_lines(result)])
        result = await self.deployer.runner.run(playbook, hosts, limit=limit, diff=command.diff)
        if not result.ok:
            raise CommandFailed(f"playbook {command.file} failed — {result.failure_text()}")
        done = [h for h, s in result.host_status.items() if s == "ok"]
        return f"playbook {command.file}: ran on {len(done)} host(s): {', '.join(done) or 'none'}"

    async def _provision(self, command: C.Provision) -> str:
        group = self.config.groups[command.group]
        created = ""
        if group.provider == "ec2":
            created = await self.cloud.provision(group)
        hosts = self.inventory.group(group.name)
        playbook = self.deployer.provisioners.get(group.name)
        if playbook is None:
            return created or f"group {group.name} has no provisioning playbook (groups.{group.name}.provision)"
        if not hosts:
            raise CommandFailed(f"group {group.name} has no hosts to provision")
        extra = {"group": group.name, "app_hosts": {g: [h.address for h in self.inventory.group(g)]
                                                    for g in self.config.groups}}
        proxy = self.config.proxy
        if proxy is not None and proxy_host_name(proxy) in {h.name for h in hosts}:
            try:  # the proxy's config comes from our `proxy:` section, not from a playbook variable
                extra.update(proxy_host_vars(self.config, self.inventory.hosts))
            except ValueError as exc:
                raise CommandFailed(f"provisioning {group.name}: {exc}") from None
        result = await self.deployer.runner.run(playbook, self.inventory.hosts, extra_vars=extra,
                                                limit=[h.name for h in hosts])
        if not result.ok:
            raise CommandFailed(f"provisioning {group.name} failed — {result.failure_text()}")
        return (created + "; " if created else "") + f"{len(hosts)} host(s) of {group.name} provisioned"
