"""One line above the footer: what is running now, and how the last command ended.

On an 80x24 screen inside SSH this is where the eye goes after a key press, so
it always names the command, in the command grammar.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from opsconsole.events import CommandFinished, CommandStarted, Event, Message
from opsconsole.ui.style import level_styles


class StatusLine(Static):
    def __init__(self, readonly: bool, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.readonly = readonly
        self.running: dict[str, str] = {}  # command id -> text
        self.last: tuple[str, str] = ("ready · ? for help · : for commands", "dim")
        self.scope: tuple[str | None, str] = (None, "")  # the app the keys act on, and whose selection it is

    def set_scope(self, app: str | None, where: str) -> None:
        if (app, where) != self.scope:
            self.scope = (app, where)
            self.redraw()

    def on_mount(self) -> None:
        self.redraw()

    def on_events(self, batch: list[Event]) -> None:
        changed = False
        for event in batch:
            if isinstance(event, CommandStarted):
                self.running[event.command_id] = event.text
            elif isinstance(event, CommandFinished):
                self.running.pop(event.command_id, None)
                mark = "✔" if event.ok else "✘"
                self.last = (f"{mark} {event.text} ({event.duration:.1f}s)" + (f": {event.message}" if event.message else ""),
                             "ok" if event.ok else "bad")
            elif isinstance(event, Message) and event.host is None:
                self.last = (event.text, {"error": "bad", "warning": "warn"}.get(event.level, ""))
            else:
                continue
            changed = True
        if changed:
            self.redraw()

    def say(self, text: str, level: str = "") -> None:
        self.last = (text, level)
        self.redraw()

    def redraw(self) -> None:
        styles = level_styles(self.app)
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.readonly:
            line.append(" READ-ONLY ", style="bold reverse")
            line.append(" ")
        app, where = self.scope
        if app is not None:
            # First on the line: which app r/b/+/-/0/p act on must be visible before a key is pressed.
            line.append(f" {app} ", style="bold reverse")
            line.append(f" {where} │ ", style=styles["dim"])
        if self.running:
            line.append("▶ " + ", ".join(self.running.values()), style=styles["busy"])
            line.append("  ")
        text, level = self.last
        line.append(text, style=styles.get(level, ""))
        # No layout pass: the line is one row high and as wide as the screen whatever it says (themes CSS), and
        # a layout re-arranges the whole screen; this runs on every cursor move (the scope follows the row).
        self.update(line, layout=False)
