"""Engine events, collected as they are emitted and handed to the UI in batches.

The bus calls subscribers synchronously inside the engine's work, so the
subscriber here only appends to a deque: no widget is touched until the app's
flush timer drains the batch. A flood of output lines thus costs one redraw
per flush instead of one per line.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from opsconsole.events import Event, EventBus


class EventFeed:
    def __init__(self, bus: EventBus, limit: int = 50_000) -> None:
        # Bounded so a UI that cannot keep up degrades by losing log lines, not memory.
        # Widgets that show state (the fleet) read the engine's views, so a drop never shows a stale host.
        self._pending: deque[Event] = deque(maxlen=limit)
        self.dropped = 0
        self._unsubscribe: Callable[[], None] = bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(event)

    def drain(self) -> list[Event]:
        batch = list(self._pending)
        self._pending.clear()
        return batch

    def close(self) -> None:
        self._unsubscribe()
