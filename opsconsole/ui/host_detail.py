"""One host in full: what it is, what ran on it lately, the journal lines about it, its probe history."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from opsconsole.events import Event
from opsconsole.heartbeat.log import clock
from opsconsole.ui.history import HostHistory
from opsconsole.ui.style import activity_cell, health_cell, latency_text, level_styles

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine

JOURNAL_LINES = 15


class HostDetailScreen(Screen[None]):
    DEFAULT_CSS = """
    HostDetailScreen VerticalScroll { padding: 0 1; }
    HostDetailScreen .section { margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape,q", "app.pop_screen", "back", id="back")]

    def __init__(self, engine: "Engine", history: HostHistory, host: str) -> None:
        super().__init__()
        self.engine, self.history, self.host_name = engine, history, host

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = f"Host {self.host_name}"
            yield Static(id="host-summary", classes="section")
            yield Static(id="host-output", classes="section")
            yield Static(id="host-journal", classes="section")
            yield Static(id="host-heartbeat", classes="section")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#host-journal", Static).update(self._journal())
        self.redraw()

    def on_events(self, batch: list[Event]) -> None:
        if any(getattr(e, "host", None) == self.host_name for e in batch):
            self.redraw()

    def redraw(self) -> None:
        styles = level_styles(self.app)
        view = self.engine.views[self.host_name]
        host = view.host
        health, health_level = health_cell(view.health)
        activity, activity_level = activity_cell(view.activity)
        summary = Text()
        summary.append(f"{host.name}", style="bold")
        summary.append(f"  group {host.group}" + (f" · role {host.role}" if host.role else "")
                       + f" · {host.transport} · {host.address}" + (f":{host.port}" if host.port else "") + "\n")
        summary.append("health ")
        summary.append(health, style=styles[health_level])
        summary.append(f"  latency {latency_text(view.latency)}  version {view.version or '-'}  now ")
        summary.append(activity, style=styles[activity_level])
        if view.detail:
            summary.append(f" — {view.detail}")
        self.query_one("#host-summary", Static).update(summary)

        record = self.history.record(self.host_name)
        output = Text("Recent output and tasks\n", style="bold")
        if not record.lines:
            output.append("(nothing yet in this session)", style=styles["dim"])
        for at, line, level in list(record.lines)[-30:]:
            output.append(f"{clock(at)} ")
            output.append(line + "\n", style=styles.get(level, ""))
        self.query_one("#host-output", Static).update(output)

        beats = Text("Heartbeat history\n", style="bold")
        if not record.samples:
            beats.append("(no probe yet)", style=styles["dim"])
        for sample in list(record.samples)[-20:]:
            mark = "✔" if sample.ok else "✘"
            beats.append(f"{clock(sample.at)} {mark} {sample.status or '---'} {latency_text(sample.latency):>6} "
                         f"{sample.version or ''} {sample.error}\n", style=styles["ok" if sample.ok else "bad"])
        self.query_one("#host-heartbeat", Static).update(beats)

    def _journal(self) -> Text:
        """Journal lines naming this host, its group or an app deployed to its group."""
        view = self.engine.views[self.host_name]
        related = {self.host_name, view.host.group}
        related |= {name for name, app in self.engine.config.apps.items() if app.group == view.host.group}
        lines = []
        for entry in self.engine.journal.entries():
            command = entry.get("command")
            if not command or entry.get("kind") not in ("command.start", "command.end", "command.interrupted"):
                continue
            try:
                words = set(shlex.split(command.partition(" -- ")[0]))
            except ValueError:
                words = set(command.split())
            words |= {w for word in words for w in word.split(",")}
            if words & related:
                state = {"command.start": "start", "command.interrupted": "INTERRUPTED"}.get(
                    entry["kind"], "ok" if entry.get("ok") else "FAILED")
                lines.append(f"{clock(entry.get('ts', 0))} {state:<11} {command} ({entry.get('issuer', '?')})")
        text = Text("Journal\n", style="bold")
        text.append("\n".join(lines[-JOURNAL_LINES:]) if lines else "(no command about this host yet)")
        return text
