"""How health and activity look: a symbol and a word always, a colour when there is one.

The symbol and word carry the meaning, so the mono theme, NO_COLOR and a
colour-blind operator read the same thing; colour only speeds reading up.
Colours come from the running Textual theme, so switching themes recolours.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import App
from textual.color import Color

from opsconsole.units import format_latency

# level -> (theme variable, extra style). "" is plain text.
_LEVELS: dict[str, tuple[str, str]] = {
    "ok": ("success", ""),
    "bad": ("error", "bold"),
    "warn": ("warning", "bold"),
    "busy": ("accent", ""),
    "dim": ("foreground-muted", ""),
}


_cache: dict[tuple[int, str, bool], dict[str, str]] = {}


def level_styles(app: App[object]) -> dict[str, str]:
    """Rich styles for each level under the app's current theme (no colour at all under NO_COLOR)."""
    # Resolving the theme's variables takes about a millisecond; panes ask on every batch.
    key = (id(app), app.theme, bool(app.no_color or getattr(app, "monochrome", False)))
    if key not in _cache:
        _cache[key] = _resolve(app)
    return _cache[key]


def _resolve(app: App[object]) -> dict[str, str]:
    variables = app.get_css_variables()
    background = Color.parse(variables.get("background", "#000000"))
    styles = {"": ""}
    for level, (variable, extra) in _LEVELS.items():
        if app.no_color or getattr(app, "monochrome", False):
            styles[level] = extra or ("dim" if level == "dim" else "")
            continue
        # Theme colours may carry alpha (e.g. foreground-muted); Rich needs them blended onto the background.
        colour = (background + Color.parse(variables.get(variable, "white"))).hex
        styles[level] = f"{extra} {colour}".strip()
    return styles


def styled(text: str, level: str, styles: dict[str, str]) -> Text:
    return Text(text, style=styles.get(level, ""), no_wrap=True, overflow="ellipsis")


_HEALTH: dict[str, tuple[str, str]] = {
    "unknown": ("? n/a", "dim"),
    "up": ("✔ up", "ok"),
    "down": ("✘ DOWN", "bad"),
    "flapping": ("~ flap", "warn"),  # up: fall not reached, but the last probe failed
    "rising": ("▲ rise", "warn"),  # down: rise not reached, but the last probe answered
    "restarting": ("⟳ restart", "busy"),
}


def health_cell(health: str) -> tuple[str, str]:
    """(text, level) of a host's health word (HostView.health): the symbol reads without colour."""
    return _HEALTH.get(health, (health, ""))


_ACTIVITY: dict[str, tuple[str, str]] = {
    "idle": ("· idle", ""),
    "deploying": ("⟳ deploying", "busy"),
    "drained": ("◌ drained", "warn"),
    "failed": ("✘ FAILED", "bad"),
    "stopped": ("■ stopped", "warn"),
    "aborted": ("■ aborted", "warn"),
}


def activity_cell(activity: str) -> tuple[str, str]:
    return _ACTIVITY.get(activity, (f"• {activity}", "busy"))


def latency_text(latency: float | None) -> str:
    return format_latency(latency)
