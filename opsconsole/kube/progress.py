"""How far a Deployment's rollout is, read from its status the way `kubectl rollout status` reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    done: bool
    failed: str  # '' unless the controller gave up (ProgressDeadlineExceeded)
    paused: bool
    text: str


def read_progress(deployment: dict[str, Any]) -> Progress:
    """Done when the controller has seen the latest spec (observedGeneration) and every replica is updated
    and available with no old one left; failed when its Progressing condition says the deadline passed."""
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    paused = bool(spec.get("paused"))
    text = f"{updated}/{wanted} updated, {available} available, {total - updated} old"
    if observed < generation:  # the status is about an older spec: nothing in it counts yet
        return Progress(False, "", paused, f"waiting for the controller to see generation {generation}")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            deadline = spec.get("progressDeadlineSeconds")
            return Progress(False, f"no progress within its deadline ({deadline}s): {text}"
                            + (f" — {condition.get('message')}" if condition.get("message") else ""), paused, text)
    done = updated == wanted and total == updated and available == updated
    return Progress(done, "", paused, text)


def batch_strategy(batch: str | None, replicas: int) -> tuple[int | str, int]:
    """`--batch N|N%` as (maxUnavailable, maxSurge): N pods out of service at a time, none added — what an
    SSH rollout does with N hosts. No `--batch`: one at a time, as on SSH."""
    if batch is None:
        return 1, 0
    if batch.endswith("%"):
        # A share that rounds to no pod would never move: at least one, as batch_size() does on SSH.
        return (batch if math.floor(replicas * int(batch[:-1]) / 100) >= 1 else 1), 0
    return int(batch), 0
