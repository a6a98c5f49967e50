"""`d`: the focused pane's selection described in full, on a screen of its own, until Esc (k9s' describe).

The fleet has its host detail screen and the canary pane the `traffic APP` report; this screen holds
what the other panes describe as text: a build's record, a rollout's timeline.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from opsconsole.builds.runner import BuildRecord

_EXIT_CODE = re.compile(r"exit code (\d+)")


def _clock(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def exit_code(record: BuildRecord) -> str:
    """The build's exit code as far as the record knows it: 0 on success, the failing step's from its message."""
    if record.status == "succeeded":
        return "0"
    found = _EXIT_CODE.search(record.message or "")
    return found.group(1) if found else "-"


def build_description(record: BuildRecord) -> list[tuple[str, str]]:
    """(label, value) rows of a build's record, in the order an operator investigating it reads them."""
    duration = record.duration
    return [
        ("build", record.build_id), ("app", record.app), ("commit", record.commit),
        ("author", record.author or "-"), ("message", record.subject or "-"), ("state", record.status),
        ("result", record.message or "-"), ("exit code", exit_code(record)),
        ("queued", _clock(record.queued_at or None)), ("started", _clock(record.started_at)),
        ("finished", _clock(record.finished_at)),
        ("duration", "-" if duration is None else f"{duration:.1f}s"),
        ("artifact", record.artifact or "-"), ("sha256", record.sha256 or "-"), ("log", record.log or "-"),
    ]


class DescribeScreen(Screen[None]):
    """Labelled rows, scrollable; Esc (or q, d) leaves."""

    DEFAULT_CSS = """
    DescribeScreen VerticalScroll { padding: 0 1; border: round $accent; border-title-style: bold; }
    """
    BINDINGS = [Binding("escape,q,d", "app.pop_screen", "back", id="back")]

    def __init__(self, title: str, rows: list[tuple[str, str]],
                 live: Callable[[], list[tuple[str, str]]] | None = None) -> None:
        """`live`: rows of something still moving (a running rollout), read again twice a second."""
        super().__init__()
        self.title_text = title
        self.rows = rows
        self.live = live

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = f"{self.title_text} · esc back"
            yield Static(self._render_rows(), id="describe-body")
        yield Footer()

    def on_mount(self) -> None:
        if self.live is not None:
            self.set_interval(0.5, self._refresh_rows)

    def _refresh_rows(self) -> None:
        assert self.live is not None
        rows = self.live()
        if rows != self.rows:
            self.rows = rows
            self.query_one("#describe-body", Static).update(self._render_rows())

    def _render_rows(self) -> Text:
        width = max((len(label) for label, _ in self.rows), default=0)
        text = Text()
        for label, value in self.rows:
            text.append(f"{label:<{width}}  ", style="bold")
            text.append(f"{value}\n")
        return text

