"""The canary split: per app, configured and effective weights as a bar, requests and errors, alerts.

The numbers come from the engine's CanaryState events (the proxy's view, on
every change and polled). An app the proxy does not front says so plainly,
rather than showing a made-up 0%.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from opsconsole.events import CanaryState, Event
from opsconsole.ui.bindings import CANARY_KEY_IDS, bindings, pane_footer_bindings
from opsconsole.ui.selection import SelectionChanged
from opsconsole.ui.style import level_styles

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine


def weight_bar(canary_percent: int, width: int) -> str:
    """`stable` as full blocks, canary as light shade, so the split reads without colour."""
    canary_cells = round(width * canary_percent / 100)
    return "█" * (width - canary_cells) + "░" * canary_cells


def names_line(label: str, names: list[str], width: int) -> str:
    """`label: a, b, c` on one line of `width` (0: any): the names that fit, then how many more."""
    for shown in range(len(names), 0, -1):
        rest = len(names) - shown
        line = f"{label}: {', '.join(names[:shown])}" + (f" +{rest} more" if rest else "")
        if width <= 0 or len(line) <= width:
            return line
    return f"{label}: {len(names)} apps"[:width] if width > 0 else f"{label}: {len(names)} apps"


class CanaryPane(VerticalScroll):
    """One block per app the proxy fronts; the selected one (▶) is what the canary keys act on."""

    BINDINGS = bindings("canary") + pane_footer_bindings(CANARY_KEY_IDS)  # + - 0 p in the footer here

    def __init__(self, engine: "Engine", id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.engine = engine
        self.border_title = "Canary split (4)"
        self.states: dict[str, CanaryState] = {}  # app -> the proxy's last report
        fronted = self.fronted_apps()
        self.selected: str | None = fronted[0] if fronted else None

    @property
    def weights(self) -> dict[str, int]:
        """app -> the canary weight as configured now (what +/- step from)."""
        return {app: state.configured_weight for app, state in self.states.items()}

    def fronted_apps(self) -> list[str]:
        """The apps that have a canary: those the proxy fronts, in config order."""
        return [name for name in self.engine.config.apps if self.engine.traffic.fronted(name)]

    def compose(self) -> ComposeResult:
        yield Static(id="canary-body")

    def on_mount(self) -> None:
        self.render_split()

    def action_select(self, step: int) -> None:
        apps = self.fronted_apps()
        if not apps:
            return
        index = apps.index(self.selected) if self.selected in apps else 0
        self.selected = apps[(index + step) % len(apps)]
        self.render_split()
        self.post_message(SelectionChanged())

    def on_focus(self) -> None:
        self.render_split()  # the selection is drawn stronger while the pane has the keys

    def on_blur(self) -> None:
        self.render_split()

    def on_resize(self) -> None:
        self.render_split()  # the line of apps without a canary fits the new width

    def render_split(self) -> None:
        styles = level_styles(self.app)
        config = self.engine.config
        text = Text()
        if not config.apps:
            text.append("no apps configured", style=styles["dim"])
        fronted = self.fronted_apps()
        selected_line = 0
        for name in fronted:
            app = config.apps[name]
            hosts = len(self.engine.inventory.group(app.group))
            if name == self.selected:
                selected_line = text.plain.count("\n")
                text.append("▶ ", style="bold")
                text.append(name, style="bold reverse" if self.has_focus else "bold")
            else:
                text.append(f"  {name}", style="bold")
            text.append(f"  {hosts} host{'s' if hosts != 1 else ''}" + (f" in {app.group}" if app.group != name else ""))
            state = self.states.get(name)
            if state is None:
                text.append("\nproxy configured; no report yet\n", style=styles["warn"])
                continue
            text.append(f"  {state.split} split\n")
            text.append("stable/canary %\n", style=styles["dim"])
            for label, weight in (("set ", state.configured_weight), ("live", state.effective_weight)):
                text.append(f"{label} ")
                text.append(weight_bar(weight, 16), style=styles["ok"] if weight == state.configured_weight else styles["warn"])
                text.append(f" {100 - weight}/{weight}\n")
            requests, errors = dict(state.requests), dict(state.errors)
            for pool in ("stable", "canary"):
                if pool in requests:
                    bad = errors.get(pool, 0)
                    text.append(f"{pool:<7} {requests[pool]:>7} req ")
                    text.append(f"{bad} failed\n", style=styles["bad"] if bad else styles["dim"])
            if state.answers:
                # What the proxy answered itself reached clients too: never let a failure read as "0 failed".
                bad = any(code == "cut" or code.startswith("5") for code, _ in state.answers)
                text.append("proxy answered " + " ".join(f"{code}×{n}" for code, n in state.answers) + "\n",
                            style=styles["bad"] if bad else styles["warn"])
            for pool in state.panic:
                text.append(f"⚠ PANIC {pool}: no healthy member; balancing across all\n", style=styles["bad"])
            if state.tunnels:
                text.append(f"{state.tunnels} WebSocket tunnel{'s' if state.tunnels != 1 else ''} open\n")
            if state.alert:
                text.append(f"⚠ ALERT: {state.alert}\n", style=styles["bad"])
        # Apps without a canary share one line: at 80x24 two lines each would push the numbers out of sight.
        others = [name for name in config.apps if name not in fronted]
        if others:
            why = "no proxy configured" if config.proxy is None else "not behind the proxy"
            width = self.scrollable_content_region.width if self.is_mounted else 0
            text.append(names_line(why, others, width) + "\n", style=styles["dim"])
        self.query_one("#canary-body", Static).update(text)
        self.border_subtitle = f"step {config.canary_step}%"
        if self.is_mounted and not (self.scroll_y <= selected_line < self.scroll_y + self.scrollable_content_region.height):
            self.scroll_to(y=selected_line, animate=False)

    def on_events(self, batch: list[Event]) -> None:
        changed = False
        for event in batch:
            if not isinstance(event, CanaryState):
                continue
            old = self.states.get(event.app)
            if old is None or replace(old, at=event.at) != event:  # a new timestamp alone draws nothing
                self.states[event.app] = event
                changed = True
        if changed:  # redraw only when something the pane shows moved
            self.render_split()

    def focus_main(self) -> None:
        self.focus()

