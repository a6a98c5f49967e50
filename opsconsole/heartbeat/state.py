"""Per-host health state with HAProxy-style fall/rise, and a bounded history."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from opsconsole.events import HealthSample


@dataclass
class HostHealth:
    """Up after `rise` consecutive successes, down after `fall` consecutive failures.

    The first sample sets the state at once, so a fresh console shows the fleet
    without waiting several intervals; after that one lost packet never flips it.
    """

    host: str
    fall: int
    rise: int
    history_size: int = 100
    healthy: bool | None = None
    streak: int = 0  # consecutive samples disagreeing with the current state
    last: HealthSample | None = None
    history: deque[HealthSample] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_size)

    def record(self, sample: HealthSample) -> bool | None:
        """Add a sample. Returns the new state if it changed, else None."""
        self.history.append(sample)
        self.last = sample
        if self.healthy is None:
            self.healthy = sample.ok
            self.streak = 0
            return sample.ok
        if sample.ok == self.healthy:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak >= (self.rise if sample.ok else self.fall):
            self.healthy = sample.ok
            self.streak = 0
            return sample.ok
        return None

    def cycle_status(self) -> str:
        """This host in the heartbeat's rolling line: the verdict first, so it agrees with the up/down count.

        A last probe that disagrees with the verdict (fall/rise not reached yet) is shown as such, with
        how far it got: `up~DOWN(1/3)` is up, its last probe refused, one of the three failures that make
        it down. `200` and `DOWN` alone mean the verdict and the last probe agree.
        """
        last = self.last
        if last is None:
            return "-"
        raw = short_status(last)
        if self.healthy is None or self.healthy == last.ok:
            return raw
        verdict = "up" if self.healthy else "DOWN"
        return f"{verdict}~{raw}({self.streak}/{self.rise if last.ok else self.fall})"

    @property
    def label(self) -> str:
        if self.healthy is None:
            return "unknown"
        state = "up" if self.healthy else "down"
        if self.streak:
            state += f" ({self.streak} {'ok' if not self.healthy else 'failed'} in a row)"
        return state


def short_status(sample: HealthSample) -> str:
    """One probe in a word: its HTTP status, `open` (TCP), `timeout` or `DOWN`."""
    if sample.status is not None:
        return str(sample.status)
    if sample.ok:
        return "open"
    if "timed out" in sample.error:
        return "timeout"
    return "DOWN"
