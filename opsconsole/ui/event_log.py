"""`l`: every event in the headless printer's words (command output, tasks, messages, probes)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from opsconsole.events import Event, HealthChanged, HealthSample, HeartbeatCycle
from opsconsole.event_lines import format_event
from opsconsole.ui.log_view import LogLine, LogView


def event_line(event: Event) -> LogLine | None:
    if isinstance(event, (HealthSample, HealthChanged, HeartbeatCycle)):
        return None  # the heartbeat log has these, in its own words
    text = format_event(event)
    if text is None:
        return None
    level = {"error": "bad", "warning": "warn"}.get(getattr(event, "level", ""), "")
    if getattr(event, "ok", True) is False:
        level = "bad"
    return LogLine(getattr(event, "host", None) or "", text, level)


class EventLogScreen(Screen[None]):
    BINDINGS = [Binding("escape,q,l", "app.pop_screen", "back", id="back")]

    def __init__(self, lines: list[LogLine]) -> None:
        super().__init__()
        self.initial = lines

    def compose(self) -> ComposeResult:
        log = LogView(capacity=5000, scrollback=2000, id="event-log")
        log.border_title = "Events (esc back)"
        yield log
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one(LogView)
        log.add(self.initial)
        log.focus()

    def on_log_view_state_changed(self, event: LogView.StateChanged) -> None:
        event.log.border_subtitle = event.description

    def add(self, lines: list[LogLine]) -> None:
        self.query_one(LogView).add(lines)
