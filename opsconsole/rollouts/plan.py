"""A rollout plan: which hosts, in which batches, from which version to which, with which gates."""

from __future__ import annotations

from opsconsole.errors import OperatorError
import time
import uuid
from dataclasses import dataclass, field

from opsconsole.config.model import RolloutConfig
from opsconsole.rollouts.batch import BatchError, batch_size
from opsconsole.units import format_duration


class PlanError(OperatorError, ValueError):
    """The plan cannot be made (bad batch size, no hosts …); the message says why."""


@dataclass(frozen=True)
class RolloutPlan:
    rollout_id: str
    app: str
    kind: str  # roll | rollback
    version: str  # short id of the version going out
    commit: str
    artifact: str
    batches: tuple[tuple[str, ...], ...]
    from_versions: dict[str, str | None] = field(default_factory=dict, compare=False)
    max_fail: int = 0
    health_timeout: float = RolloutConfig.health_timeout
    drain_timeout: float = RolloutConfig.drain_timeout
    deploy_timeout: float = RolloutConfig.deploy_timeout
    on_failure: str = "stop"  # stop | rollback
    previous: tuple[str, str, str] | None = None  # (version, commit, artifact) to roll back to

    @property
    def hosts(self) -> list[str]:
        return [h for batch in self.batches for h in batch]

    def summary(self) -> str:
        sizes = {len(b) for b in self.batches}
        per = f"{max(sizes)} at a time" if len(sizes) == 1 else f"batches of {', '.join(str(len(b)) for b in self.batches)}"
        return f"{self.kind} {self.app}: {len(self.hosts)} hosts, {per}, version {self.version}"

    def describe(self) -> list[str]:
        """The plan as lines for the operator: batches, versions, gates, timeouts."""
        lines = [self.summary()]
        for i, batch in enumerate(self.batches, start=1):
            hosts = ", ".join(f"{h} ({self.from_versions.get(h) or 'none'} → {self.version})" for h in batch)
            lines.append(f"  batch {i}: {hosts}")
        lines.append(f"  each batch: drain (≤{format_duration(self.drain_timeout)}) → deploy, each host in parallel "
                     f"(≤{format_duration(self.deploy_timeout)}) → health gate: healthy and "
                     f"reporting {self.version} (≤{format_duration(self.health_timeout)}) → back in the pool")
        lines.append(f"  stop after {self.max_fail + 1} failed host(s); on failure: {self.on_failure}")
        return lines


def timeouts(rollout: RolloutConfig) -> dict[str, float]:
    """An app's rollout timeouts as make_plan's keywords: one place, so no plan (or preview) misses one."""
    return {"health_timeout": rollout.health_timeout, "drain_timeout": rollout.drain_timeout,
            "deploy_timeout": rollout.deploy_timeout}


def make_plan(app: str, hosts: list[str], *, version: str, commit: str, artifact: str, batch: str | None = None,
              kind: str = "roll", from_versions: dict[str, str | None] | None = None, max_fail: int = 0,
              health_timeout: float = RolloutConfig.health_timeout,
              drain_timeout: float = RolloutConfig.drain_timeout,
              deploy_timeout: float = RolloutConfig.deploy_timeout, on_failure: str = "stop",
              previous: tuple[str, str, str] | None = None) -> RolloutPlan:
    if not hosts:
        raise PlanError(f"app {app} has no hosts to roll")
    try:
        size = batch_size(batch, len(hosts))
    except BatchError as exc:
        raise PlanError(str(exc)) from None
    batches = tuple(tuple(hosts[i:i + size]) for i in range(0, len(hosts), size))
    rollout_id = f"{app}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    return RolloutPlan(rollout_id=rollout_id, app=app, kind=kind, version=version, commit=commit, artifact=artifact,
                       batches=batches, from_versions=dict(from_versions or {}), max_fail=max_fail,
                       health_timeout=health_timeout, drain_timeout=drain_timeout, deploy_timeout=deploy_timeout,
                       on_failure=on_failure,
                       previous=previous)
