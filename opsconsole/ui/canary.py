"""The canary split: per app, configured and effective weights as a bar, requests and errors, alerts.

The numbers come from the proxy, which arrives with its own issue. Until the
engine reports canary state, each app shows its pool and says plainly that no
proxy is configured (or that it has not reported yet), rather than a made-up 0%.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from opsconsole.events import CommandFinished, Event
from opsconsole.ui.style import level_styles

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine


def weight_bar(canary_percent: int, width: int) -> str:
    """`stable` as full blocks, canary as light shade, so the split reads without colour."""
    canary_cells = round(width * canary_percent / 100)
    return "█" * (width - canary_cells) + "░" * canary_cells


class CanaryPane(VerticalScroll):
    def __init__(self, engine: "Engine", id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.engine = engine
        self.border_title = "Canary split (4)"
        self.weights: dict[str, int] = {}  # app -> canary weight last set by a command that succeeded

    def compose(self) -> ComposeResult:
        yield Static(id="canary-body")

    def on_mount(self) -> None:
        self.render_split()

    def render_split(self) -> None:
        styles = level_styles(self.app)
        config = self.engine.config
        text = Text()
        if not config.apps:
            text.append("no apps configured", style=styles["dim"])
        for name, app in config.apps.items():
            hosts = len(self.engine.inventory.group(app.group))
            text.append(f"{name}", style="bold")
            text.append(f"  {hosts} host{'s' if hosts != 1 else ''}" + (f" in {app.group}" if app.group != name else "") + "\n")
            weight = self.weights.get(name, 0)
            text.append("stable ")
            text.append(weight_bar(weight, 16), style=styles["ok"])
            text.append(f" {100 - weight}%" + (f" · canary {weight}%" if weight else "") + "\n")
            if config.proxy is None:
                text.append("no proxy configured\n", style=styles["dim"])
            else:
                text.append("proxy configured; no weights reported yet\n", style=styles["warn"])
        self.query_one("#canary-body", Static).update(text)
        self.border_subtitle = f"step {config.canary_step}%"

    def on_events(self, batch: list[Event]) -> None:
        """No engine event carries canary state yet, so the weights come from the commands that set them."""
        changed = False
        for event in batch:
            if isinstance(event, CommandFinished) and event.ok and event.text.startswith("canary "):
                words = event.text.split()
                if len(words) == 4 and words[2] == "weight" and words[3].isdigit():
                    self.weights[words[1]] = int(words[3])
                    changed = True
                elif len(words) == 3 and words[2] in ("promote", "rollback", "clear"):
                    self.weights[words[1]] = 0
                    changed = True
        if changed:
            self.render_split()

    def focus_main(self) -> None:
        self.focus()
