"""The build queue: queued / running / finished builds, newest first, and the selected build's log.

The builder writes every build's full log to the state dir; the pane keeps
only a bounded tail per build in memory and reads the file for builds that
ran before the console started.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable

from opsconsole.events import BuildUpdate, Event, OutputLine
from opsconsole.ui.bindings import bindings
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.row_table import RowTable
from opsconsole.ui.selection import SelectionChanged
from opsconsole.ui.log_view import LogLine, LogView
from opsconsole.ui.style import level_styles, styled

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine

LOG_TAIL = 500
SHOWN_BUILDS = 50

_STATUS: dict[str, tuple[str, str]] = {
    "queued": ("◷ queued", "dim"),
    "running": ("⟳ running", "busy"),
    "succeeded": ("✔ ok", "ok"),
    "failed": ("✘ FAILED", "bad"),
    "cancelled": ("■ cancel", "warn"),
    "timed_out": ("✘ TIMEOUT", "bad"),
    "skipped": ("· skip", "dim"),
}


@dataclass(frozen=True)
class BuildRow:
    build_id: str
    app: str
    commit: str
    status: str
    author: str = ""
    subject: str = ""
    message: str = ""
    started_at: float | None = None
    duration: float | None = None  # final, once finished
    log: str | None = None

    def took(self, now: float) -> str:
        seconds = self.duration if self.duration is not None else (
            now - self.started_at if self.started_at is not None and self.status == "running" else None)
        return "-" if seconds is None else f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


class BuildQueuePane(Vertical):
    BINDINGS = bindings("table")
    can_focus = False

    def __init__(self, engine: "Engine", id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.engine = engine
        self.border_title = "Build queue (2)"
        self.rows: dict[str, BuildRow] = {}
        self._logs: dict[str, deque[LogLine]] = {}
        self.shown_build: str | None = None
        self.app_filter = ""

    def compose(self) -> ComposeResult:
        table: DataTable[object] = RowTable(cursor_type="row", id="build-table")
        app_width = max([len(a) for a in self.engine.config.apps] + [3])
        for key, label, width in (("status", "state", 9), ("app", "app", app_width), ("commit", "commit", 7),
                                  ("author", "author", 10), ("took", "took", 4), ("result", "result", 40)):
            table.add_column(label, key=key, width=width)  # fixed: see fleet.FIXED_WIDTHS
        yield table
        yield LogView(capacity=LOG_TAIL, id="build-log")
        yield FilterBar("filter by app", id="build-filter")

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#build-table", DataTable)

    @property
    def log(self) -> LogView:  # type: ignore[override]
        return self.query_one("#build-log", LogView)

    def on_mount(self) -> None:
        for record in self.engine.builds.records()[-SHOWN_BUILDS:]:
            self.rows[record.build_id] = BuildRow(
                record.build_id, record.app, record.commit, record.status, record.author, record.subject,
                record.message, record.started_at,
                record.duration if record.finished_at is not None else None, record.log)
        self.rebuild()
        self.set_interval(1.0, self._tick)

    # -- rows --------------------------------------------------------------
    def ordered(self) -> list[BuildRow]:
        rows = [r for r in self.rows.values() if not self.app_filter or self.app_filter in r.app]
        return list(reversed(rows))  # dicts keep arrival order: newest last, shown first

    def _cells(self, row: BuildRow, styles: dict[str, str], now: float) -> list[object]:
        text, level = _STATUS.get(row.status, (row.status, ""))
        result = row.message or row.subject
        return [styled(text, level, styles), Text(row.app), Text(row.commit[:7]), Text(row.author or "-"),
                Text(row.took(now)), Text(result)]

    def rebuild(self) -> None:
        table = self.table
        follow_newest = table.cursor_row == 0
        keep = self.selected_build()
        table.clear()
        styles, now = level_styles(self.app), time.time()
        for row in self.ordered():
            table.add_row(*self._cells(row, styles, now), key=row.build_id)
        if keep in table.rows and not follow_newest:
            table.move_cursor(row=table.get_row_index(keep), animate=False)
        self._show_log(self.selected_build())
        self.border_subtitle = f"{len(self.rows)} builds" + (f" · /{self.app_filter}" if self.app_filter else "")

    def selected_build(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value)

    def _tick(self) -> None:
        """Running builds' durations count up; nothing is redrawn when no build runs."""
        now = time.time()
        for row in self.rows.values():
            if row.status == "running" and row.build_id in self.table.rows:
                self.table.update_cell(row.build_id, "took", Text(row.took(now)))

    # -- events ------------------------------------------------------------
    def on_events(self, batch: list[Event]) -> None:
        new_build = False
        updated: set[str] = set()
        fresh_log: list[LogLine] = []
        for event in batch:
            if isinstance(event, BuildUpdate):
                before = self.rows.get(event.build_id)
                new_build |= before is None
                started = before.started_at if before else None
                if event.status == "running" and started is None:
                    started = event.at
                row = BuildRow(event.build_id, event.app, event.commit, event.status, event.author or (before.author if before else ""),
                               event.subject or (before.subject if before else ""), event.message, started,
                               event.duration, before.log if before else None)
                self.rows[event.build_id] = row
                updated.add(event.build_id)
            elif isinstance(event, OutputLine) and event.host.startswith("build:"):
                line = LogLine(event.source, event.line, "warn" if event.stream == "stderr" else "")
                self._logs.setdefault(event.source, deque(maxlen=LOG_TAIL)).append(line)
                if event.source == self.shown_build:
                    fresh_log.append(line)
        if new_build:
            self.rebuild()
        elif updated:
            styles, now = level_styles(self.app), time.time()
            for build_id in (b for b in updated if b in self.table.rows):
                for (key, value) in zip(("status", "app", "commit", "author", "took", "result"),
                                        self._cells(self.rows[build_id], styles, now)):
                    self.table.update_cell(build_id, key, value)
        if fresh_log:
            self.log.add(fresh_log)

    class BuildChosen(Message):
        """Enter on a build: its full log, in a result view."""

        def __init__(self, build_id: str) -> None:
            super().__init__()
            self.build_id = build_id

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(self.BuildChosen(str(event.row_key.value)))

    # -- the selected build's log -------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            self._show_log(str(event.row_key.value))
        self.post_message(SelectionChanged())

    def _show_log(self, build_id: str | None) -> None:
        if build_id == self.shown_build:
            return
        self.shown_build = build_id
        self.log.ring.clear()
        self.log.clear()
        if build_id is None:
            return
        lines = self._logs.get(build_id)
        if lines is None:
            lines = self._logs[build_id] = deque(self._read_log_tail(self.rows[build_id]), maxlen=LOG_TAIL)
        self.log.add(list(lines))

    def _read_log_tail(self, row: BuildRow) -> list[LogLine]:
        if not row.log:
            return []
        try:
            with Path(row.log).open(encoding="utf-8", errors="replace") as f:
                tail = deque(f, maxlen=LOG_TAIL)
        except OSError:
            return []
        return [LogLine(row.build_id, text.rstrip("\n")) for text in tail]

    # -- focus and filter ----------------------------------------------------
    def open_filter(self) -> None:
        self.query_one(FilterBar).open()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Esc clears a filter in force; with none, the key is not ours (and the footer does not offer it).
        return bool(self.app_filter) if action == "clear_filter" else True

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.app_filter = event.value.strip()
        self.rebuild()

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.table.focus()

    def on_log_view_state_changed(self, event: LogView.StateChanged) -> None:
        event.stop()

    def focus_main(self) -> None:
        self.table.focus()

    def selected_app(self) -> str | None:
        build_id = self.selected_build()
        return self.rows[build_id].app if build_id in self.rows else None

