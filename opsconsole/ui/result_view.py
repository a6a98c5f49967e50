"""A command's result, full screen: its output as it arrives, scrollable and searchable, until Esc.

`status`, `run`, `history`, `traffic`, `builds`, `log build` … (commands whose
`reports` is set) print tables and logs; a one-line toast and the event log, among
every other event, are no place to read them. The engine routes the events of this
command's own work here (`execute(output=)`); they are only queued by that callback
and written by a timer, like the panes' feed, so a long log costs one redraw per tick.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from opsconsole.engine.commands import Command
from opsconsole.engine.engine import Outcome
from opsconsole.events import CommandFinished, CommandStarted, Event, HealthChanged, HostState
from opsconsole.ui.event_log import event_line
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.log_view import LogLine, LogView, words_filter

FLUSH_SECONDS = 0.05
# Side effects of the work, not its output: the fleet pane shows them.
_NOT_OUTPUT = (CommandStarted, CommandFinished, HostState, HealthChanged)


class ResultScreen(Screen[None]):
    """A screen of its own, so its keys are its own (App.check_action turns the pane keys off)."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "back", id="back"),
                Binding("slash", "filter", "search", id="result_filter")]

    def __init__(self, command: Command, wrap: bool = False) -> None:
        super().__init__()
        self.command = command
        self.wrap = wrap
        self.pending: list[LogLine] = []
        self.outcome: Outcome | None = None
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        log = LogView(capacity=20_000, scrollback=5000, id="result-log")
        log.border_title = f"{self.command.text()} · running…"
        yield log
        yield FilterBar("search the output: words in the line or host", id="result-filter")
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one(LogView)
        log.wrap_lines = self.wrap
        log.focus()
        self.set_interval(FLUSH_SECONDS, self.flush)

    # -- fed by the engine, inside the command's work: queue only ------------
    def take(self, event: Event) -> None:
        if isinstance(event, _NOT_OUTPUT):
            return
        line = event_line(event)
        if line is not None:
            self.pending.append(line)

    def finished(self, outcome: Outcome, duration: float) -> None:
        self.outcome = outcome
        mark = "✔" if outcome.ok else "✘"
        self.pending.append(LogLine("", f"{mark} {self.command.text()} ({duration:.1f}s)"
                                        + (f": {outcome.message}" if outcome.message else ""),
                                    "ok" if outcome.ok else "bad"))

    def flush(self) -> None:
        if self.pending:
            lines, self.pending = self.pending, []
            self.query_one(LogView).add(lines)
        if self.outcome is not None:
            self._title()

    def _title(self) -> None:
        assert self.outcome is not None
        mark = "✔" if self.outcome.ok else "✘"
        search = f" /{self.filter_text}" if self.filter_text else ""
        self.query_one(LogView).border_title = f"{mark} {self.command.text()}{search} · esc back"

    def lines(self) -> list[str]:
        """The output lines the view shows now (tests read this)."""
        return [line.text for line in self.query_one(LogView).visible()]

    # -- search ----------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        self.query_one(LogView).set_filter(words_filter(self.filter_text))
        if self.outcome is not None:
            self._title()

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.query_one(LogView).focus()

    def on_log_view_state_changed(self, event: LogView.StateChanged) -> None:
        event.log.border_subtitle = event.description
        self.wrap = event.log.wrap_lines
        self.app.log_wrap = self.wrap  # type: ignore[attr-defined]  # wrap sticks across views
