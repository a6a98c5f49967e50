"""The rollout journal: every step written to disk before it is taken.

One JSON-lines file per rollout under `<state>/rollouts/`. Reading it back
gives the exact state of every host — which survives a console killed
mid-rollout, so `status` can tell where things stand and `roll resume`
can finish the job.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opsconsole.fsio import append_jsonl, append_jsonl_many, make_private_dir, read_jsonl
from opsconsole.rollouts.plan import RolloutPlan

# Host states, in the order a host normally goes through them.
PENDING, DRAINING, DEPLOYING, GATING, DONE, FAILED = "pending", "draining", "deploying", "gating", "done", "failed"


@dataclass
class RolloutState:
    """What the journal says of one rollout."""

    plan: RolloutPlan
    issuer: str
    started: float
    hosts: dict[str, str] = field(default_factory=dict)  # host -> state
    reasons: dict[str, str] = field(default_factory=dict)  # host -> why it failed
    status: str = "running"  # running | paused | succeeded | failed | aborted | interrupted
    ended: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "aborted")

    @property
    def resumable(self) -> bool:
        """Stopped with hosts left by an abort, a dead console or a pause: `roll resume` carries on from here."""
        return self.status in ("aborted", "interrupted", "paused") and self.left() != []

    def left(self) -> list[str]:
        """The hosts not yet on the rollout's version."""
        return [h for h, s in self.hosts.items() if s != DONE]

    def batches_left(self) -> list[list[str]]:
        """The plan's batches, each with only its hosts not yet on the version (a batch all done: empty)."""
        return [[h for h in batch if self.hosts.get(h) != DONE] for batch in self.plan.batches]

    def host_versions(self) -> dict[str, str | None]:
        """The version each host runs as far as the journal knows."""
        return {h: (self.plan.version if s == DONE else self.plan.from_versions.get(h)) for h, s in self.hosts.items()}


class RolloutJournal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "rollouts"
        make_private_dir(self.dir)

    def path(self, rollout_id: str) -> Path:
        return self.dir / f"{rollout_id}.jsonl"

    def write(self, rollout_id: str, kind: str, **fields: Any) -> None:
        # On disk before we take the step.
        append_jsonl(self.path(rollout_id), {"ts": time.time(), "kind": kind, **fields})

    def write_many(self, rollout_id: str, kind: str, entries: list[dict[str, Any]]) -> None:
        """Several steps of one kind in one write and one fsync (a batch's hosts drained or deployed together)."""
        now = time.time()
        append_jsonl_many(self.path(rollout_id), [{"ts": now, "kind": kind, **fields} for fields in entries])

    def begin(self, plan: RolloutPlan, issuer: str) -> None:
        data = asdict(plan)
        self.write(plan.rollout_id, "plan", plan=data, issuer=issuer)

    def load(self, rollout_id: str) -> RolloutState | None:
        state: RolloutState | None = None
        for entry in read_jsonl(self.path(rollout_id)):
            kind = entry["kind"]
            if kind == "plan":
                p = entry["plan"]
                p["batches"] = tuple(tuple(b) for b in p["batches"])
                p["previous"] = tuple(p["previous"]) if p.get("previous") else None
                plan = RolloutPlan(**p)
                state = RolloutState(plan=plan, issuer=entry["issuer"], started=entry["ts"],
                                     hosts={h: PENDING for h in plan.hosts})
                continue
            if state is None:
                continue
            state.steps.append(entry)
            if kind == "host":
                state.hosts[entry["host"]] = entry["state"]
                if entry.get("reason"):
                    state.reasons[entry["host"]] = entry["reason"]
            elif kind == "status":
                state.status = entry["status"]
                if state.finished:
                    state.ended = entry["ts"]
        if state is not None and not state.finished and state.status != "paused":
            state.status = "interrupted" if state.status == "running" else state.status
        return state

    def all(self, app: str | None = None) -> list[RolloutState]:
        states = []
        for path in sorted(self.dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
            state = self.load(path.stem)
            if state is not None and app in (None, state.plan.app):
                states.append(state)
        return sorted(states, key=lambda s: s.started)

    def latest(self, app: str) -> RolloutState | None:
        states = self.all(app)
        return states[-1] if states else None
