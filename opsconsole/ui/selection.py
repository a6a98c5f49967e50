"""The message a pane posts when its selection moves, so the app can show what the keys act on."""

from __future__ import annotations

from textual.message import Message


class SelectionChanged(Message):
    """A pane's selected row (host, build, canary app) changed."""
