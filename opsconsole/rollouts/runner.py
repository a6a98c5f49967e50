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
from typing import Awaitable, Callable, Protocol

from opsconsole.config.model import RolloutConfig
from opsconsole.events import EventBus, RolloutStep
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
# gate(host, version, timeout) -> "" if healthy with that version, else why not
HealthGate = Callable[[str, str, float], Awaitable[str]]


class TrafficControl(Protocol):
    """What a rollout needs of the proxy, per host of the app."""

    async def drain(self, host: str) -> None: ...
    async def wait_drained(self, host: str, timeout: float) -> bool: ...
    async def enable(self, host: str) -> None: ...


class NoTraffic:
    """No proxy configured: nothing to drain, the gate alone protects the next batch."""

    async def drain(self, host: str) -> None:
        return None

    async def wait_drained(self, host: str, timeout: float) -> bool:
        return True

    async def enable(self, host: str) -> None:
        return None


class RolloutRunner:
    def __init__(self, bus: EventBus, journal: RolloutJournal, state: RolloutState, *, deploy: DeployBatch,
                 gate: HealthGate, traffic: TrafficControl, lock: FleetLock | None = None,
                 lock_renew_every: float = RolloutConfig.lock_renew) -> None:
        self.bus = bus
        self.journal = journal
        self.state = state
        self.plan = state.plan
        self.deploy = deploy
        self.gate = gate
        self.traffic = traffic
        self.lock = lock
        self.lock_renew_every = lock_renew_every
        self.resume_event = asyncio.Event()
        self.resume_event.set()
        self.pause_requested = False

    # -- operator controls -------------------------------------------------
    def pause(self) -> None:
        self.pause_requested = True
        self.resume_event.clear()

    def resume(self) -> None:
        self.pause_requested = False
        self.resume_event.set()

    # -- bookkeeping -------------------------------------------------------
    def _host(self, host: str, state: str, reason: str = "", batch: int | None = None) -> None:
        self.journal.write(self.plan.rollout_id, "host", host=host, state=state, reason=reason, batch=batch)
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
        renewer = asyncio.ensure_future(self._renew_lock(me)) if self.lock else None
        try:
            self._status("running", self.plan.summary())
            failures = sum(1 for s in self.state.hosts.values() if s == FAILED)
            for number, batch in enumerate(self.plan.batches, start=1):
                todo = [h for h in batch if self.state.hosts.get(h) != DONE]
                if not todo:
                    continue
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
        """One batch; returns the hosts that failed (they stay drained)."""
        for host in hosts:
            self._host(host, DRAINING, batch=number)
        await asyncio.gather(*(self.traffic.drain(h) for h in hosts))
        drained = await asyncio.gather(*(self.traffic.wait_drained(h, self.plan.drain_timeout) for h in hosts))
        for host, ok in zip(hosts, drained):
            if not ok:  # a drain timeout is not fatal: in-flight requests had their time
                self.bus.emit(RolloutStep(rollout_id=self.plan.rollout_id, app=self.plan.app, host=host,
                                          state=DRAINING, detail=f"drain timed out after {self.plan.drain_timeout:g}s; going on"))
        for host in hosts:
            self._host(host, DEPLOYING, batch=number)
        results = await self.deploy(hosts, self.plan)
        failed = []
        gating = []
        for host in hosts:
            reason = results.get(host, "not deployed")
            if reason:
                self._host(host, FAILED, f"deploy: {reason}", batch=number)
                failed.append(host)
            else:
                self._host(host, GATING, batch=number)
                gating.append(host)
        reasons = await asyncio.gather(*(self.gate(h, self.plan.version, self.plan.health_timeout) for h in gating))
        for host, reason in zip(gating, reasons):
            if reason:
                self._host(host, FAILED, f"health gate: {reason}", batch=number)
                failed.append(host)
                continue
            await self.traffic.enable(host)
            self._host(host, DONE, batch=number)
        return failed

    async def _renew_lock(self, owner: asyncio.Task | None) -> None:
        """Renew the fleet lock while we work; if it was taken from us, stop the rollout at once."""
        assert self.lock is not None
        while True:
            await asyncio.sleep(self.lock_renew_every)
            try:
                await self.lock.renew()
            except Exception as exc:  # LockLost, or the lock host unreachable
                self.bus.emit(RolloutStep(rollout_id=self.plan.rollout_id, app=self.plan.app, host=None,
                                          state="lock-lost", detail=str(exc)))
                if owner is not None:
                    owner.cancel()
                return
