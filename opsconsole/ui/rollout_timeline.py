"""What the console remembers of rollouts for Enter's drill-down: each host's steps, in order, with times.

Fed from the bus like the panes (RolloutStep events); bounded, so a day of rollouts keeps memory flat.
"""

from __future__ import annotations

from collections import OrderedDict

from opsconsole.events import Event, RolloutStep
from opsconsole.heartbeat.log import clock

ROLLOUTS = 20  # the newest rollouts kept
STEPS_PER_ROLLOUT = 5000  # a 2,000-host rollout has a few steps per host
FINISHED = frozenset({"succeeded", "failed", "aborted", "interrupted", "cancelled"})


class RolloutTimelines:
    def __init__(self) -> None:
        self._steps: OrderedDict[str, list[RolloutStep]] = OrderedDict()
        self._host_rollout: dict[str, str] = {}  # host -> the rollout it took part in last
        self.status: dict[str, str] = {}  # rollout id -> its last status

    def add(self, batch: list[Event]) -> None:
        for event in batch:
            if not isinstance(event, RolloutStep):
                continue
            steps = self._steps.setdefault(event.rollout_id, [])
            self._steps.move_to_end(event.rollout_id)
            if len(steps) < STEPS_PER_ROLLOUT:
                steps.append(event)
            if event.host is None:
                self.status[event.rollout_id] = event.state
            else:
                self._host_rollout[event.host] = event.rollout_id
            while len(self._steps) > ROLLOUTS:
                gone, _ = self._steps.popitem(last=False)
                self.status.pop(gone, None)
                self._host_rollout = {h: r for h, r in self._host_rollout.items() if r != gone}

    def running_for(self, host: str) -> str | None:
        """The rollout `host` is taking part in now (its "now" column shows a step of it), if any."""
        rollout_id = self._host_rollout.get(host)
        if rollout_id is None or self.status.get(rollout_id) in FINISHED:
            return None
        return rollout_id

    def rows(self, rollout_id: str) -> list[tuple[str, str]]:
        """The rollout's timeline: its status changes, then per host every step with its time and reason."""
        steps = self._steps.get(rollout_id, [])
        app = steps[0].app if steps else "?"
        rows: list[tuple[str, str]] = [("rollout", rollout_id), ("app", app),
                                       ("status", self.status.get(rollout_id, "running"))]
        for step in (s for s in steps if s.host is None):
            rows.append((clock(step.at), f"rollout {step.state}" + (f": {step.detail}" if step.detail else "")))
        per_host: dict[str, list[str]] = {}
        for step in (s for s in steps if s.host is not None):
            batch = f"[batch {step.batch}] " if step.batch is not None and step.host not in per_host else ""
            per_host.setdefault(step.host, []).append(  # type: ignore[arg-type]
                f"{batch}{clock(step.at)} {step.state}" + (f" ({step.detail})" if step.detail else ""))
        rows.extend((host, " → ".join(marks)) for host, marks in per_host.items())
        return rows
