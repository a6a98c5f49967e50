"""`l`: every event in the headless printer's words (command output, tasks, messages, probes)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from opsconsole.events import (BuildUpdate, CanaryState, CommandFinished, CommandStarted, Event, HealthChanged,
                               HealthSample, HeartbeatCycle, HostState, Message, OutputLine, PlayFinished,
                               PlayStarted, RolloutStep, TaskFinished, TaskStarted)
from opsconsole.event_lines import format_event
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.log_view import LineFilter, LogLine, LogView, words_filter


# The kinds `k` cycles through, in order; "" shows every kind.
KINDS: tuple[str, ...] = ("", "command", "output", "task", "rollout", "build", "message", "host")
_KIND_OF: tuple[tuple[type, str], ...] = (
    ((CommandStarted, CommandFinished), "command"), (OutputLine, "output"),
    ((TaskStarted, TaskFinished, PlayStarted, PlayFinished), "task"), (RolloutStep, "rollout"),
    (BuildUpdate, "build"), (Message, "message"), (HostState, "host"),
)


def kind_of(event: Event) -> str:
    return next((kind for types, kind in _KIND_OF if isinstance(event, types)), "other")


def event_line(event: Event) -> LogLine | None:
    if isinstance(event, (HealthSample, HealthChanged, HeartbeatCycle)):
        return None  # the heartbeat log has these, in its own words
    if isinstance(event, CanaryState):
        return None  # a periodic refresh of what the canary pane shows, not an event; commands report changes
    text = format_event(event)
    if text is None:
        return None
    level = {"error": "bad", "warning": "warn"}.get(getattr(event, "level", ""), "")
    if getattr(event, "ok", True) is False:
        level = "bad"
    return LogLine(getattr(event, "host", None) or "", text, level, kind=kind_of(event))


class EventLogScreen(Screen[None]):
    """A screen of its own: its keys are its own (the app's pane keys are off here, see App.check_action)."""

    # The border carries the title: whose lines these are (`l` on a host) and the kind filter in force.
    DEFAULT_CSS = """
    EventLogScreen #event-log { border: round $accent; border-title-style: bold; }
    """
    BINDINGS = [Binding("escape,q,l", "app.pop_screen", "back", id="back"),
                Binding("slash", "filter", "filter", id="log_filter"),
                Binding("k", "next_kind", "kind", id="log_kind")]

    def __init__(self, lines: list[LogLine], wrap: bool = False, *, subject: str = "",
                 scope: LineFilter | None = None) -> None:
        """`subject`/`scope`: `l` on a selection shows only its lines (a host's, a canary app's), same viewer."""
        super().__init__()
        self.scope = scope
        self.initial = [line for line in lines if scope is None or scope(line)]
        self.heading = f"Events of {subject}" if subject else "Events"
        self.wrap = wrap
        self.filter_text = ""
        self.kind = ""  # "" = every kind

    def compose(self) -> ComposeResult:
        log = LogView(capacity=5000, scrollback=2000, id="event-log")
        log.border_title = f"{self.heading} · kind all (k) (esc back)"
        yield log
        yield FilterBar("filter events: words in the line or host", id="event-filter")
        yield Footer()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        self._apply_filter()

    def action_next_kind(self) -> None:
        self.kind = KINDS[(KINDS.index(self.kind) + 1) % len(KINDS)]
        self._apply_filter()

    def _apply_filter(self) -> None:
        """Words and kind together: `k` narrows to one kind of event, `/` to lines with the words."""
        log = self.query_one(LogView)
        words, kind = words_filter(self.filter_text), self.kind
        if kind:
            log.set_filter(lambda line: line.kind == kind and (words is None or words(line)))
        else:
            log.set_filter(words)
        log.border_title = (self.heading + (f" /{self.filter_text}" if self.filter_text else "")
                            + f" · kind {kind or 'all'} (k) (esc back)")

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.query_one(LogView).focus()

    def on_mount(self) -> None:
        log = self.query_one(LogView)
        log.wrap_lines = self.wrap
        log.add(self.initial)
        log.focus()

    def on_log_view_state_changed(self, event: LogView.StateChanged) -> None:
        event.log.border_subtitle = event.description
        self.app.log_wrap = event.log.wrap_lines  # type: ignore[attr-defined]  # wrap sticks across openings

    def add(self, lines: list[LogLine]) -> None:
        self.query_one(LogView).add(line for line in lines if self.scope is None or self.scope(line))
