"""Run a rollout plan: per batch drain → deploy → health gate → undrain, journaled step by step.

The runner knows nothing of playbooks, proxies or probes: the engine hands it
three functions (deploy a batch, gate a host, and the traffic controls), so the
same runner drives the local demo fleet, the SSH lab and EC2 hosts.

Safety rules:
- a host is only put back in the pool after its gate passed (healthy and
  reporting the new version); a failed or aborted host stays drained;
- every step is written to the rollout journal before it is taken;
- pause takes effect between batches; abort cancels the current step and
  leaves its hosts drained, never half-deployed and in the pool.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Protocol

from opsconsole.config.model import RolloutConfig
from opsconsole.events import EventBus, RolloutProgress, RolloutStep
from opsconsole.rollouts.lock import FleetLock
from opsconsole.rollouts.plan import RolloutPlan
from opsconsole.rollouts.record import (
    DEPLOYING,
    DONE,
    DRAINING,
    FAILED,
    GATING,
    PENDING,
    RolloutJournal,
    RolloutState,
)

# deploy(hosts, plan) -> {host: "" if ok else the reason it failed}
DeployBatch = Callable[[list[str], RolloutPlan], Awaitable[dict[str, str]]]
# gate(host, version, timeout, ahead) -> "" if healthy with that version, else why not; `ahead`: good answers
# in a row already counted (by the look-ahead), the gate still asks at least once
HealthGate = Callable[[str, str, float, int], Awaitable[str]]
# warm(hosts): get ready to work on these hosts soon (open their connections); never raises
Warm = Callable[[list[str]], Awaitable[None]]
# look_ahead(host, settled): while the host's deploy runs (until `settled`), the good answers in a row its new
# release gave so far, for the gate after the deploy to go on from; 0 when there is nothing to count
LookAhead = Callable[[str, asyncio.Event], Awaitable[int]]


class TrafficControl(Protocol):
    """What a rollout needs of the proxy, per host of the app."""

    async def drain(self, host: str) -> None: ...
    async def wait_drained(self, host: str, timeout: float) -> bool: ...
    async def enable(self, host: str) -> None: ...
    async def disable(self, host: str) -> None: ...


class NoTraffic:
    """No proxy configured: nothing to drain, the gate alone protects the next batch."""

    async def drain(self, host: str) -> None:
        return None

    async def wait_drained(self, host: str, timeout: float) -> bool:
        return True

    async def enable(self, host: str) -> None:
        return None

    async def disable(self, host: str) -> None:
        return None


class RolloutRunner:
    def __init__(self, bus: EventBus, journal: RolloutJournal, state: RolloutState, *, deploy: DeployBatch,
                 gate: HealthGate, traffic: TrafficControl, lock: FleetLock | None = None,
                 lock_renew_every: float = RolloutConfig.lock_renew, warm: Warm | None = None,
                 look_ahead: LookAhead | None = None) -> None:
        self.bus = bus
        self.journal = journal
        self.state = state
        self.plan = state.plan
        self.deploy = deploy
        self.gate = gate
        self.traffic = traffic
        self.lock = lock
        self.lock_renew_every = lock_renew_every
        self.warm = warm
        self.look_ahead = look_ahead
        self.resume_event = asyncio.Event()
        self.resume_event.set()
        self.pause_requested = False
        self._abandoned: set[asyncio.Future] = set()  # deploys given up on at their timeout, still unwinding
        self._warming: set[asyncio.Future] = set()  # connections being opened ahead of their batch
        self._started = time.monotonic()
        self._finished_before = 0  # hosts done or failed before this run (a resumed rollout)

    # -- operator controls -------------------------------------------------
    def pause(self) -> None:
        self.pause_requested = True
        self.resume_event.clear()

    def resume(self) -> None:
        self.pause_requested = False
        self.resume_event.set()

    # -- bookkeeping -------------------------------------------------------
    async def _host(self, host: str, state: str, reason: str = "", batch: int | None = None) -> None:
        """One host's step, journaled (on disk) before this returns; the fsync (milliseconds on a disk) runs in
        a thread, so the batch-mates' work goes on meanwhile."""
        await asyncio.to_thread(self.journal.write, self.plan.rollout_id, "host", host=host, state=state,
                                reason=reason, batch=batch)
        self._took(host, state, reason, batch)

    def _hosts(self, hosts: list[str], state: str, batch: int) -> None:
        """A batch's hosts to `state` together: one journal write and one fsync for all of them."""
        self.journal.write_many(self.plan.rollout_id, "host",
                                [{"host": h, "state": state, "reason": "", "batch": batch} for h in hosts])
        for host in hosts:
            self._took(host, state, "", batch)

    def _took(self, host: str, state: str, reason: str, batch: int | None) -> None:
        """The step is journaled: now in memory and on the bus."""
        self.state.hosts[host] = state
        if reason:
            self.state.reasons[host] = reason
        self.bus.emit(RolloutStep(rollout_id=self.plan.rollout_id, app=self.plan.app, host=host, state=state,
                                  detail=reason, batch=batch))

    def _status(self, status: str, detail: str = "") -> None:
        self.journal.write(self.plan.rollout_id, "status", status=status, detail=detail)
        self.state.status = status
        self.bus.emit(RolloutStep(rollout_id=self.plan.rollout_id, app=self.plan.app, host=None, state=status,
                                  detail=detail))

    # -- the run -----------------------------------------------------------
    async def run(self) -> RolloutState:
        me = asyncio.current_task()
        renewer = (asyncio.ensure_future(self.lock.keep_renewed(self.lock_renew_every, me, self._lock_lost))
                   if self.lock else None)
        self._started = time.monotonic()
        self._finished_before = sum(1 for s in self.state.hosts.values() if s in (DONE, FAILED))
        try:
            self._status("running", self.plan.summary())
            failures = sum(1 for s in self.state.hosts.values() if s == FAILED)
            # (the first batch's connections: the engine opens them while it takes the lock)
            left = self.state.batches_left()
            for number, todo in enumerate(left, start=1):
                if not todo:
                    continue
                # The next batch's connections open while this one works: its deploys start on ready ones.
                self._warm(next((t for t in left[number:] if t), []))
                if self.pause_requested:
                    self._status("paused", f"before batch {number}")
                    await self.resume_event.wait()
                    self._status("running", f"resumed at batch {number}")
                failed = await self._batch(number, todo)
                failures += len(failed)
                if failures > self.plan.max_fail:
                    self._status("failed", "; ".join(f"{h}: {self.state.reasons.get(h, '')}" for h in failed)
                                 + f" — stopped after {failures} failed host(s)")
                    return self.state
            self._status("succeeded", f"{len(self.plan.hosts)} host(s) run {self.plan.version}")
            return self.state
        except asyncio.CancelledError:
            self._status("aborted", self._where())
            raise
        finally:
            for work in [*self._abandoned, *self._warming]:
                work.cancel()
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)

    def _where(self) -> str:
        versions = self.state.host_versions()
        by_version: dict[str, list[str]] = {}
        for host, version in versions.items():
            state = self.state.hosts.get(host)
            label = f"{version or 'none'}" + ("" if state in (DONE, PENDING) else f" ({state}, drained)")
            by_version.setdefault(label, []).append(host)
        return "; ".join(f"{label}: {', '.join(hosts)}" for label, hosts in by_version.items())

    async def _batch(self, number: int, hosts: list[str]) -> list[str]:
        """One batch; returns the hosts that failed (they stay drained).

        The batch's hosts are drained together, then each goes deploy → gate → back in the pool on
        its own: a slow host holds up nobody's gate, and one that does not answer within the plan's
        deploy timeout fails alone while its batch-mates finish.
        """
        self._progress(number)
        self._hosts(hosts, DRAINING, number)
        await asyncio.gather(*(self.traffic.drain(h) for h in hosts))
        drained = await asyncio.gather(*(self.traffic.wait_drained(h, self.plan.drain_timeout) for h in hosts))
        for host, ok in zip(hosts, drained):
            if not ok:  # a drain timeout is not fatal: in-flight requests had their time
                self.bus.emit(RolloutStep(rollout_id=self.plan.rollout_id, app=self.plan.app, host=host,
                                          state=DRAINING, detail=f"drain timed out after {self.plan.drain_timeout:g}s; going on"))
        self._hosts(hosts, DEPLOYING, number)
        outcomes = await asyncio.gather(*(self._one_host(number, h) for h in hosts))
        return [h for h, ok in zip(hosts, outcomes) if not ok]

    async def _one_host(self, number: int, host: str) -> bool:
        """Deploy one host (bounded by the deploy timeout), gate it, put it back; False if it failed.

        While the deploy runs, the look-ahead (once the deploy has started the app) counts the new release's
        good answers in a row; the gate after the deploy goes on from that count, so a host whose release
        answered well all through the deploy's last tasks needs one more good answer, not `rise` of them a pace
        apart. The gate's rule is the same: `rise` answers in a row from the new version, the last one after
        the deploy ended, with its own full timeout."""
        settled = asyncio.Event()
        ahead = asyncio.ensure_future(self.look_ahead(host, settled)) if self.look_ahead is not None else None
        try:
            reason = await self._deploy_within_timeout(host)
            settled.set()
            if reason:
                await self._host(host, FAILED, f"deploy: {reason}", batch=number)
                self._progress(number)
                return False
            counted = 0
            if ahead is not None:
                try:
                    counted = await ahead  # (its probe in flight, at most, once settled)
                except Exception:  # noqa: BLE001 - only a head start: without it the gate asks `rise` times
                    counted = 0
            await self._host(host, GATING, batch=number)
            reason = await self.gate(host, self.plan.version, self.plan.health_timeout, counted)
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()  # a failed deploy's, or an abort's
                await asyncio.gather(ahead, return_exceptions=True)
        if reason:
            await self._host(host, FAILED, f"health gate: {reason}", batch=number)
            self._progress(number)
            return False
        await self.traffic.enable(host)
        await self._host(host, DONE, batch=number)
        self._progress(number)
        return True

    async def _deploy_within_timeout(self, host: str) -> str:
        """'' once `host` is deployed; else why not — at the latest when the plan's deploy timeout runs out."""
        work = asyncio.ensure_future(self.deploy([host], self.plan))
        try:
            done, _ = await asyncio.wait({work}, timeout=self.plan.deploy_timeout)
        except asyncio.CancelledError:
            work.cancel()
            raise
        if work in done:
            try:
                return work.result().get(host, "not deployed")
            except Exception as exc:  # noqa: BLE001 - this host's deploy broke: it fails, its batch-mates go on
                return str(exc) or type(exc).__name__
        # Cancelled but not awaited: killing its commands may itself wait on the dead host's connection.
        work.cancel()
        self._abandoned.add(work)
        work.add_done_callback(self._forget)
        return (f"{host} did not finish within the deploy timeout of {self.plan.deploy_timeout:g}s "
                f"(unreachable or stalled); gave up on it, its batch went on")

    def _warm(self, hosts: list[str]) -> None:
        if self.warm is None or not hosts:
            return
        task = asyncio.ensure_future(self.warm(hosts))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    def _forget(self, task: asyncio.Future) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: whatever it raised after we gave up on the host is moot

    def _progress(self, number: int) -> None:
        """Emit where the rollout stands; the ETA is this run's pace per finished host times the hosts left."""
        hosts = self.state.hosts
        done = sum(1 for s in hosts.values() if s == DONE)
        failed = sum(1 for s in hosts.values() if s == FAILED)
        finished_here = done + failed - self._finished_before
        left = len(self.plan.hosts) - done - failed
        elapsed = time.monotonic() - self._started
        eta = elapsed / finished_here * left if finished_here > 0 else None
        self.bus.emit(RolloutProgress(rollout_id=self.plan.rollout_id, app=self.plan.app, batch=number,
                                      batches=len(self.plan.batches), done=done, total=len(self.plan.hosts),
                                      failed=failed, eta=eta))

    def _lock_lost(self, why: Exception) -> None:
        self.bus.emit(RolloutStep(rollout_id=self.plan.rollout_id, app=self.plan.app, host=None,
                                  state="lock-lost", detail=str(why)))
