"""Rolling updates as engine commands: roll, roll resume, rollback, pause/resume, lock, history.

The rollout machinery itself (plan, journal, lock, runner) lives in `opsconsole.rollouts`; this
module binds it to the deployer, the heartbeat monitor and the traffic service, which the engine
builds once and hands in. The desk holds no engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from opsconsole.config.model import AppConfig, Config
from opsconsole.engine import commands as C
from opsconsole.engine.deployer import Deployer
from opsconsole.engine.fleet import Fleet
from opsconsole.engine.traffic_service import TrafficService
from opsconsole.errors import CommandFailed, OperatorError
from opsconsole.events import Event, EventBus, HealthSample, TaskFinished
from opsconsole.fsio import append_jsonl, read_jsonl
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.heartbeat.until import probe_until
from opsconsole.hosts import Host
from opsconsole.playbook.plan import check_lines
from opsconsole.rollouts.lock import FleetLock
from opsconsole.rollouts.plan import RolloutPlan, make_plan, timeouts
from opsconsole.rollouts.record import DONE, RolloutJournal, RolloutState
from opsconsole.rollouts.runner import NoTraffic, RolloutRunner, TrafficControl


# Seconds between a rollout gate's probes of one host (see Rollouts.gate).
GATE_PACE = 0.05


class Releases:
    """What was released, app by app (`releases.jsonl`): a rollback picks its target from here."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, app: str, version: str, commit: str, artifact: str) -> None:
        # On disk before the command reports success: a later rollback picks its target from here.
        append_jsonl(self.path, {"ts": time.time(), "app": app, "version": version, "commit": commit,
                                 "artifact": artifact})

    def of(self, app: str) -> list[dict[str, Any]]:
        return [entry for entry in read_jsonl(self.path) if entry.get("app") == app]

    def previous(self, app: str, not_version: str | None) -> tuple[str, str, str] | None:
        """The latest release of `app` that is not `not_version` (what runs now): (version, commit, artifact)."""
        for entry in reversed(self.of(app)):
            if entry["version"] != not_version:
                return entry["version"], entry["commit"], entry["artifact"]
        return None


class AppStarts:
    """How many times the app's service was started or restarted on each host during a rollout, as the
    playbooks' own reports say (TaskFinished.started): where the rollout's look-ahead may count answers."""

    def __init__(self, bus: EventBus, service: str) -> None:
        self.service = service
        self._count: dict[str, int] = {}
        self._news: dict[str, asyncio.Event] = {}
        self.close = bus.subscribe(self._heard)

    def _heard(self, event: Event) -> None:
        if isinstance(event, TaskFinished) and event.started == self.service and event.status in ("ok", "changed"):
            self._count[event.host] = self._count.get(event.host, 0) + 1
            news = self._news.pop(event.host, None)
            if news is not None:
                news.set()

    def count(self, host: str) -> int:
        return self._count.get(host, 0)

    async def after(self, host: str, seen: int) -> None:
        """Returns once `host`'s app was started more than `seen` times."""
        while self.count(host) <= seen:
            await self._news.setdefault(host, asyncio.Event()).wait()


class Rollouts:
    """The engine's rollout desk: one live runner per app at most."""

    def __init__(self, config: Config, fleet: Fleet, bus: EventBus, *, issuer: str, deployer: Deployer,
                 traffic: TrafficService, monitor: HeartbeatMonitor) -> None:
        self.config = config
        self.fleet = fleet
        self.bus = bus
        self.issuer = issuer
        self.deployer = deployer
        self.traffic = traffic
        self.monitor = monitor
        self.journal = RolloutJournal(config.state_dir)
        self.releases = Releases(config.state_dir / "releases.jsonl")
        self.live: dict[str, RolloutRunner] = {}
        self.holders: dict[str, str] = {}  # app -> what of this console's holds its lock now (a deploy, a roll)

    def steered_hosts(self) -> set[str]:
        """Hosts a live rollout steers: their next state is the rollout's to say."""
        return {h for runner in self.live.values() for h in runner.plan.hosts}

    def paused(self) -> list[str]:
        """Apps whose rollout is paused (or pausing before its next batch)."""
        return [name for name, runner in self.live.items() if runner.pause_requested]

    # -- traffic and gates -------------------------------------------------
    def traffic_for(self, app: AppConfig) -> TrafficControl:
        return self.traffic.control_for(app) or NoTraffic()

    async def gate(self, host: str, version: str, timeout: float, ahead: int = 0) -> str:
        """'' once the host answered healthy with `version` on `rise` probes in a row (the heartbeat's rise;
        `ahead` of them already counted by the look-ahead while the deploy ran, the rest here, at least one)
        and the monitor's verdict is up; else why not, at the timeout.

        Rise as HAProxy and Envoy mean it: one good answer from a release that breaks a moment later must
        not put the host back in the pool. The probes come GATE_PACE apart (HAProxy's fastinter), so rise 2
        costs one pace per batch, not one heartbeat interval (none, after a look-ahead that counted)."""
        monitor = self.monitor
        rise = max(1, monitor.states[host].rise)
        in_a_row = ahead

        def arrived(name: str, sample: HealthSample) -> bool:
            nonlocal in_a_row
            in_a_row = in_a_row + 1 if sample.ok and sample.version == version else 0
            return in_a_row >= rise and bool(monitor.states[name].healthy)

        late = await probe_until(monitor, [host], arrived, timeout=timeout, pace=GATE_PACE)
        if not late:
            return ""
        sample = late[host]
        if not sample.ok:
            return f"not healthy after {timeout:g}s: {sample.error}"
        if sample.version != version:
            return f"reports version {sample.version or 'none'} after {timeout:g}s, expected {version}"
        if in_a_row < rise:
            return f"healthy on only {in_a_row} probe(s) in a row after {timeout:g}s; rise is {rise}"
        return f"not yet up after {timeout:g}s ({monitor.states[host].label})"

    async def _look_ahead(self, starts: AppStarts, version: str, host: str, settled: asyncio.Event) -> int:
        """While `host`'s deploy runs (until `settled`): once the deploy has started the app, probe it GATE_PACE
        apart and count its answers in a row that are healthy and from `version`; the count when the deploy
        ended, for the gate to go on from (0: no start seen, or no good answer last).

        Counted only from a start reported after the deploy began (not another command's before it), and
        from zero again at every start after that (a playbook restarting twice). Only good answers are recorded
        in the monitor: a release still starting while its deploy runs is no host going down (no alert, no
        down/up flap of a drained host); what the gate asks after the deploy is recorded whatever it says."""
        monitor = self.monitor
        before = starts.count(host)
        waiting = asyncio.ensure_future(starts.after(host, before))
        ended = asyncio.ensure_future(settled.wait())
        try:
            await asyncio.wait({waiting, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            ended.cancel()
        if starts.count(host) == before:
            return 0  # the deploy ended (or failed) without starting the app: the gate asks `rise` times
        in_a_row, seen = 0, starts.count(host)
        while not settled.is_set():
            try:
                sample = await monitor.prober.probe(monitor.targets[host])
            except Exception:  # noqa: BLE001 - a probe that broke counts as no answer
                sample = None
            if starts.count(host) != seen:  # started again meanwhile: the answers so far were another process's
                in_a_row, seen = 0, starts.count(host)
                continue
            if sample is not None and sample.ok and sample.version == version:
                in_a_row += 1
                monitor.record(sample)
            else:
                in_a_row = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GATE_PACE):
                    await settled.wait()
        return in_a_row

    # -- commands ----------------------------------------------------------
    def stopped(self, app: str) -> RolloutState | None:
        """The latest rollout of `app` if it stopped with hosts left (aborted, interrupted, paused) and none runs."""
        state = self.journal.latest(app)
        return state if state is not None and state.resumable and app not in self.live else None

    def already_done(self, app: str, commit: str) -> list[str]:
        """Hosts a stopped rollout of `app` already brought to `commit`: a new roll to it leaves them alone."""
        state = self.stopped(app)
        if state is None or state.plan.commit != commit:
            return []
        return [h for h, s in state.hosts.items() if s == DONE and self.fleet.views[h].version in (None, state.plan.version)]

    def way_on(self, app: str) -> str | None:
        """What the operator can do about a stopped rollout of `app`, in one line (None when nothing stopped)."""
        state = self.stopped(app)
        if state is None:
            return None
        left = state.left()
        return (f"{len(left)} host(s) of {app} not on {state.plan.version} ({', '.join(left)}): "
                f"`roll resume {app}` finishes, `rollback {app}` undoes")

    def _plan(self, command: C.Roll, app: AppConfig, version: str, commit: str, artifact: str) -> RolloutPlan:
        done = set(self.already_done(app.name, commit))
        hosts = [h.name for h in self.fleet.inventory.group(app.group) if h.name not in done] or \
            [h.name for h in self.fleet.inventory.group(app.group)]
        return make_plan(app.name, hosts, version=version, commit=commit, artifact=artifact,
                         batch=command.batch, from_versions={h: self.fleet.views[h].version for h in hosts},
                         max_fail=command.max_fail, **timeouts(app.rollout),
                         on_failure=command.on_failure, previous=self.releases.previous(app.name, version))

    async def plan_for(self, command: C.Roll) -> RolloutPlan:
        """The plan without building: the version is resolved in git only."""
        app = self.config.apps[command.app]
        sha = await self.deployer.builder.resolve(app, command.version)
        built = self.deployer.builds.artifact_for(app.name, sha)
        return self._plan(command, app, sha[:7], sha, built.artifact or "" if built else "")

    async def roll(self, command: C.Roll) -> str:
        app = self.config.apps[command.app]
        record = await self.deployer.artifact_for(app, command.version)
        skipped = self.already_done(app.name, record.commit)
        plan = self._plan(command, app, record.short, record.commit, record.artifact or "")
        lines = plan.describe() + ([f"  left alone: {', '.join(skipped)} (already on {record.short} by the stopped "
                                    "rollout)"] if skipped else [])
        if command.plan_only:
            for line in lines:
                self.fleet.say(line)
            await self._say_check(app, plan)
            return "plan only: nothing changed"
        return await self._run(app, RolloutState(plan=plan, issuer=self.issuer, started=time.time(),
                                                 hosts={h: "pending" for h in plan.hosts}), fresh=True, say=lines)

    async def _say_check(self, app: AppConfig, plan: RolloutPlan) -> None:
        """The deploy playbook's check mode on every host of the plan: which of its tasks would change there.
        Every host, not only the first batch: a check only reads, and the later batches are where an odd
        host (a hand-edited config, a release already there) hides."""
        if app.name not in self.deployer.playbooks:
            return
        result = await self.deployer.check_deploy_playbook(app, plan.hosts, version=plan.version,
                                                           commit=plan.commit, artifact=plan.artifact)
        self.fleet.say(f"  deploy playbook, checked (--check) on {len(plan.hosts)} host(s):")
        for line in check_lines(result, "    "):
            self.fleet.say(line)

    async def resume_interrupted(self, command: C.RollResume) -> str:
        state = self.stopped(command.app)
        if state is None:
            raise CommandFailed(f"no stopped rollout of {command.app} to resume"
                                + (" (one is running now)" if command.app in self.live else ""))
        app = self.config.apps[command.app]
        left = state.left()
        return await self._run(app, state, fresh=False,
                               say=[f"resuming {state.plan.rollout_id}: {len(left)} host(s) left: {', '.join(left)}"])

    async def rollback(self, command: C.Rollback) -> str:
        app = self.config.apps[command.app]
        latest = self.journal.latest(app.name)
        target = latest.plan.previous if latest is not None else None
        if target is None:
            current = {self.fleet.views[h.name].version for h in self.fleet.inventory.group(app.group)}
            target = self.releases.previous(app.name, next(iter(current)) if len(current) == 1 else "")
        if target is None:
            raise CommandFailed(f"no earlier good version of {app.name} is known to roll back to")
        version, commit, artifact = target
        hosts = [h.name for h in self.fleet.inventory.group(app.group)]
        plan = make_plan(app.name, hosts, version=version, commit=commit, artifact=artifact, batch=command.batch,
                         kind="rollback", from_versions={h: self.fleet.views[h].version for h in hosts},
                         **timeouts(app.rollout), previous=None)
        return await self._run(app, RolloutState(plan=plan, issuer=self.issuer, started=time.time(),
                                                 hosts={h: "pending" for h in plan.hosts}), fresh=True,
                               say=plan.describe())

    async def _run(self, app: AppConfig, state: RolloutState, *, fresh: bool, say: list[str]) -> str:
        """Run the rollout under the app's lock; `say`, its plan, is said once the lock is ours (a plan
        printed first read as if it would run, when another console's rollout held the lock)."""
        if app.name in self.live:
            raise CommandFailed(f"a rollout of {app.name} is already running here ({self.live[app.name].plan.rollout_id})")
        # The first batch's connections open while the lock is taken: they change nothing on a host, and its
        # deploys start on ready ones. If the lock is someone else's they are the pool's, as any other.
        early = asyncio.ensure_future(self._warm(next((b for b in state.batches_left() if b), [])))
        try:
            lock = await self._take(app, f"{state.plan.kind} {app.name} to {state.plan.version}")
        except BaseException:
            early.cancel()
            raise
        for line in say:
            self.fleet.say(line)
        if fresh:
            self.journal.begin(state.plan, self.issuer)
        starts = AppStarts(self.bus, app.service_name) if app.service_name else None
        runner = RolloutRunner(self.bus, self.journal, state, deploy=self._deploy_batch, gate=self.gate,
                               traffic=self.traffic_for(app), lock=lock, lock_renew_every=app.rollout.lock_renew,
                               warm=self._warm,
                               look_ahead=functools.partial(self._look_ahead, starts, state.plan.version)
                               if starts else None)
        self.live[app.name] = runner
        try:
            result = await runner.run()
        finally:
            early.cancel()  # (done long before, but for a rollout aborted at once)
            if starts is not None:
                starts.close()
            self.live.pop(app.name, None)
            # Released even on abort: the journal, not the lock, remembers where the rollout stopped.
            await asyncio.shield(self._release(app, lock))
        plan = result.plan
        if result.status == "succeeded":
            self.releases.record(app.name, plan.version, plan.commit, plan.artifact)
            return f"{plan.kind} of {app.name} to {plan.version} done on {len(plan.hosts)} host(s)"
        message = f"{plan.kind} of {app.name} to {plan.version} {result.status}: " + "; ".join(
            f"{h}: {result.reasons[h]}" for h in result.reasons)
        untouched = [h for h, s in result.hosts.items() if s == "pending"]
        if untouched:
            message += f"; not touched: {', '.join(untouched)} (still on their old version)"
        if plan.on_failure == "rollback" and plan.kind == "roll":
            done = [h for h, s in result.hosts.items() if s != "pending"]
            if done and plan.previous is not None:
                self.fleet.say(f"--on-failure rollback: returning {', '.join(done)} to {plan.previous[0]}")
                version, commit, artifact = plan.previous
                back = make_plan(app.name, done, version=version, commit=commit, artifact=artifact, kind="rollback",
                                 from_versions={h: plan.version for h in done},
                                 health_timeout=plan.health_timeout, drain_timeout=plan.drain_timeout,
                                 deploy_timeout=plan.deploy_timeout)
                undo = await self._run(app, RolloutState(plan=back, issuer=self.issuer, started=time.time(),
                                                         hosts={h: "pending" for h in back.hosts}), fresh=True,
                                       say=[])
                message += f"; {undo}"
        raise CommandFailed(message)

    async def pause(self, command: C.Pause) -> str:
        if not self.live:
            raise CommandFailed("nothing to pause: no rollout is running")
        for runner in self.live.values():
            runner.pause()
        return f"pausing {', '.join(self.live)} before the next batch"

    async def resume(self, command: C.Resume) -> str:
        paused = self.paused()
        if not paused:
            raise CommandFailed("nothing to resume: no rollout is paused")
        for name in paused:
            self.live[name].resume()
        return f"resumed {', '.join(paused)}"

    async def lock_status(self, command: C.LockStatus) -> str:
        info = await self.lock_for(self.config.apps[command.app]).status()
        return info.describe() if info else f"{command.app}: not locked"

    async def lock_release(self, command: C.LockRelease) -> str:
        if command.app in self.live or command.app in self.holders:
            what = f"a rollout of {command.app}" if command.app in self.live else f"`{self.holders[command.app]}`"
            raise CommandFailed(f"{what} holds the lock in this console; `abort` it instead")
        info = await self.lock_for(self.config.apps[command.app]).force_release()
        return f"released the lock of {command.app}" + (f" (was: {info.describe()})" if info else " (it was not locked)")

    async def show_history(self, command: C.History) -> str:
        lines = self.history(command.app, command.as_json)
        for line in lines:
            self.fleet.say(line)
        return f"{sum(1 for line in lines if not line.startswith(' '))} rollout(s)" if not command.as_json else ""

    @contextlib.asynccontextmanager
    async def holding(self, app: AppConfig, reason: str, on_lost: Callable[[Exception], None]) -> AsyncIterator[None]:
        """Hold `app`'s deploy lock around work that changes its hosts (a deploy, a Kubernetes roll): taken
        first (someone else's: LockHeld, nothing changed), renewed while the work runs (lost: `on_lost` hears
        why, then the work is cancelled, as `abort` would), released however it ends."""
        lock = await self._take(app, reason)
        renewer = asyncio.ensure_future(lock.keep_renewed(app.rollout.lock_renew, asyncio.current_task(), on_lost))
        self.holders[app.name] = reason
        try:
            yield
        finally:
            self.holders.pop(app.name, None)
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            await asyncio.shield(self._release(app, lock))

    async def _take(self, app: AppConfig, reason: str) -> FleetLock:
        """The app's lock, taken (someone else's live one: LockHeld); a stale one taken over is said."""
        lock = self.lock_for(app)
        taken = await lock.acquire(reason)
        if taken is not None:
            self.fleet.say(f"took over a stale deploy lock of {app.name}: {taken.describe()}", level="warning")
        return lock

    async def _release(self, app: AppConfig, lock: FleetLock) -> None:
        """Give the lock back. Not reachable (its host down), the work under it stands as it ended: the
        lock expires after lock_ttl by itself, and the operator is told so."""
        try:
            await lock.release()
        except (OperatorError, OSError) as exc:
            self.fleet.say(f"could not release the deploy lock of {app.name} ({exc}); it expires by itself after "
                           f"{app.rollout.lock_ttl:g}s", level="warning")

    def lock_for(self, app: AppConfig) -> FleetLock:
        """The app's deploy lock, kept on `rollout.lock_host` or else on the group's first host."""
        key = f"apps.{app.name}.rollout.lock_host"
        if app.rollout.lock_host:
            host = self.fleet.inventory.get(app.rollout.lock_host)
            if host is None:
                raise CommandFailed(f"{key} names {app.rollout.lock_host}, which is no host of the fleet "
                                    f"(`hosts` lists them); nothing was changed")
            where = f"{host.name} ({key})"
        else:
            hosts = self.fleet.inventory.group(app.group)
            # What to do when it is down belongs in the message: a dead first host stops every rollout.
            where = (f"{hosts[0].name}, the first host of group {app.group} (set {key} to keep it on a host "
                     f"that is up; every console must name the same one)") if hosts else ""
            if not hosts and self.config.groups[app.group].provider == "kubernetes":
                # Pods are no hosts to keep a file on: the lock lives on this machine, under the state directory,
                # shared by every console here (a Lease in the cluster would share it across machines too).
                hosts = [Host(name=f"{app.name}-lock", group=app.group, address="127.0.0.1", transport="local",
                              root=str(self.config.state_dir / "kube-locks"))]
                where = "this machine's state directory"
            if not hosts:
                raise CommandFailed(f"app {app.name} has no hosts to hold its lock")
            host = hosts[0]
        return FleetLock(self.fleet.transport_for(host), app.name, self.issuer, ttl=app.rollout.lock_ttl,
                         on_notice=lambda text: self.fleet.say(text, level="warning"), where=where)

    async def _warm(self, hosts: list[str]) -> None:
        """Open the SSH connections of `hosts` and their SFTP sessions (paced by the pool's max_connecting); a
        host that cannot be reached now fails later, in its own deploy, with the reason."""
        ssh = [h for h in map(self.fleet.inventory.get, hosts) if h is not None and h.transport == "ssh"]
        await asyncio.gather(*(self.fleet.ssh_pool.warm(h) for h in ssh), return_exceptions=True)

    async def _deploy_batch(self, hosts: list[str], plan: RolloutPlan) -> dict[str, str]:
        app = self.config.apps[plan.app]
        result = await self.deployer.run_deploy_playbook(app, hosts, version=plan.version, commit=plan.commit,
                                                        artifact=plan.artifact, parallel=True,
                                                        steered=self.steered_hosts())
        return {h: ("" if result.host_status.get(h) == "ok" else result.failures.get(h, result.host_status.get(h, "not run")))
                for h in hosts}

    async def status_lines(self, app: str) -> list[str]:
        """Lines for `status`: an interrupted rollout of `app` (from another console's journal), if any."""
        if app in self.live:
            runner = self.live[app]
            return [f"rollout {runner.plan.rollout_id} {runner.state.status}: " + ", ".join(
                f"{h}={s}" for h, s in runner.state.hosts.items())]
        state = self.stopped(app)
        if state is None:
            return []
        return [f"rollout {state.plan.rollout_id} of {app} to {state.plan.version} was {state.status.upper()} "
                f"(`roll resume {app}` finishes it, `rollback {app}` undoes it):"] + [
            f"  {h}: {s}" + (f" — {state.reasons[h]}" if h in state.reasons else "")
            + ("" if s in ("pending", DONE) else " (drained)")
            for h, s in state.hosts.items()]

    def history(self, app: str, as_json: bool) -> list[str]:
        lines = []
        for state in self.journal.all(app):
            if as_json:
                lines.append(json.dumps({"plan": asdict(state.plan), "issuer": state.issuer, "started": state.started,
                                         "status": state.status, "hosts": state.hosts, "reasons": state.reasons,
                                         "steps": state.steps}, default=str))
                continue
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started))
            lines.append(f"{stamp} {state.plan.rollout_id} {state.plan.kind} → {state.plan.version} "
                         f"by {state.issuer}: {state.status}")
            last_at: dict[str, float] = {}
            for step in state.steps:
                if step["kind"] != "host":
                    continue
                host = step["host"]
                took = f" (+{step['ts'] - last_at[host]:.1f}s)" if host in last_at else ""
                last_at[host] = step["ts"]
                when = time.strftime("%H:%M:%S", time.localtime(step["ts"]))
                lines.append(f"  {when} {host:<14} {step['state']}{took}"
                             + (f" — {step['reason']}" if step.get("reason") else ""))
        return lines
