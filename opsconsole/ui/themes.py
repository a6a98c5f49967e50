"""The console's themes: Textual colour themes plus per-theme rules in `themes/<name>.tcss`.

Colours live in Textual themes so that every `$variable` in the stylesheets
follows a switch (from the config, `--theme`, or the command palette); the
tcss files hold what colours cannot say, e.g. the mono theme's double border
on the focused pane. Each file scopes its rules under `App.-theme-<name>`, so
all of them can be loaded at once and switching needs no reload.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.theme import Theme

from opsconsole.bundled import bundled_path

THEMES_DIR = bundled_path("themes")  # package data (the top-level themes/ of the repository)
NAMES = ("dark", "light", "mono")

TEXTUAL_THEMES: dict[str, Theme] = {
    "dark": Theme(
        name="opsconsole-dark", dark=True, primary="#5FA8E8", secondary="#8FA5D8", accent="#E5C07B",
        warning="#E5C07B", error="#F0717E", success="#8FCF6F", foreground="#D8DEE9",
        background="#16181D", surface="#1E2128", panel="#2A2F3A",
    ),
    "light": Theme(
        name="opsconsole-light", dark=False, primary="#0B5CAD", secondary="#4B5E8A", accent="#8A5A00",
        warning="#8A5A00", error="#B42335", success="#1B7A33", foreground="#1F2328",
        background="#FBFBFC", surface="#F0F1F4", panel="#DADDE3",
    ),
    # High contrast, no hue: meaning is carried by symbols, words, bold and reverse video.
    "mono": Theme(
        name="opsconsole-mono", dark=True, primary="#FFFFFF", secondary="#FFFFFF", accent="#FFFFFF",
        warning="#FFFFFF", error="#FFFFFF", success="#FFFFFF", foreground="#FFFFFF",
        background="#000000", surface="#000000", panel="#000000", luminosity_spread=0.0,
    ),
}


def css_paths() -> list[Path]:
    return [THEMES_DIR / "base.tcss", *(THEMES_DIR / f"{name}.tcss" for name in NAMES)]


def choose(configured: str) -> str:
    """NO_COLOR (https://no-color.org) wins over the configured theme: any non-empty value."""
    return "mono" if os.environ.get("NO_COLOR") else configured


def short_name(textual_name: str) -> str | None:
    for name, theme in TEXTUAL_THEMES.items():
        if theme.name == textual_name:
            return name
    return None
