"""A scrolling log over a bounded ring buffer: follow mode, pause on scroll-up, wrap, filter.

Lines are kept as (key, text, level) rather than rendered text so that a new
filter, wrap mode or theme can re-render them; the ring is bounded so a day of
probes does not grow memory (the full text is on disk where the owner keeps it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import RichLog

from opsconsole.ui.bindings import bindings
from opsconsole.ui.style import level_styles


@dataclass(frozen=True)
class LogLine:
    key: str  # what a filter matches on, e.g. the host name
    text: str
    level: str = ""  # see style.level_styles
    important: bool = True  # shown when the view hides the routine lines
    kind: str = ""  # the event log's kind filter: command, output, task, rollout, build, message, host


RENDER_CACHE_LINES = 128  # a tall terminal's rows, with room for a scroll
LineFilter = Callable[[LogLine], bool]


def words_filter(text: str) -> LineFilter | None:
    """A filter keeping lines with every word of `text` in their key or text; None when `text` is blank."""
    words = text.lower().split()
    if not words:
        return None
    return lambda line: all(w in f"{line.key} {line.text}".lower() for w in words)


class LogView(RichLog):
    BINDINGS = bindings("log")

    class StateChanged(Message):
        """Follow or wrap changed; the pane around the log shows it in its border."""

        def __init__(self, log: "LogView", description: str) -> None:
            super().__init__()
            self.log = log
            self.description = description

    follow: reactive[bool] = reactive(True)
    wrap_lines: reactive[bool] = reactive(False)

    def __init__(self, *, capacity: int = 2000, scrollback: int = 500, id: str | None = None,
                 classes: str | None = None) -> None:
        # Rendered lines (scrollback) cost a dozen objects each and slow every garbage collection,
        # so fewer are kept rendered than raw: the ring re-renders when a filter reaches further back.
        super().__init__(max_lines=min(scrollback, capacity), wrap=False, auto_scroll=True, id=id, classes=classes,
                         min_width=20)
        # RichLog caches cropped lines keyed by their position, which moves with every write: under a flood its
        # default 1,024 entries were stale strips (a dozen tracked objects each) kept for the collector to walk.
        self._line_cache = LRUCache(RENDER_CACHE_LINES)
        self.ring: deque[LogLine] = deque(maxlen=capacity)
        self.line_filter: LineFilter | None = None
        self.description = "follow"

    # -- content -----------------------------------------------------------
    def add(self, lines: Iterable[LogLine]) -> None:
        fresh = list(lines)
        if not fresh:
            return
        self.ring.extend(fresh)
        self._write(fresh)

    def set_filter(self, line_filter: LineFilter | None) -> None:
        self.line_filter = line_filter
        self.rebuild()

    def visible(self) -> list[LogLine]:
        """The lines the view shows now, oldest first (tests assert on this, not on pixels)."""
        return [line for line in self.ring if self.line_filter is None or self.line_filter(line)]

    def rebuild(self) -> None:
        self.clear()
        self._write(list(self.ring))

    def _write(self, lines: list[LogLine]) -> None:
        shown = [line for line in lines if self.line_filter is None or self.line_filter(line)]
        if self.max_lines is not None:
            shown = shown[-self.max_lines:]
        if not shown:
            return
        styles = level_styles(self.app)
        # One write per batch: RichLog trims and re-measures per write, so a line-at-a-time flood is slow.
        text = Text("\n").join(Text(line.text, style=styles.get(line.level, "")) for line in shown)
        self.write(text, scroll_end=self.follow)

    # -- follow and wrap ---------------------------------------------------
    def watch_follow(self, follow: bool) -> None:
        self.auto_scroll = follow
        if follow:
            self.scroll_end(animate=False)
        self._describe()

    def watch_wrap_lines(self, wrap: bool) -> None:
        self.wrap = wrap
        if self.is_mounted:
            self.rebuild()
        self._describe()

    def _describe(self) -> None:
        flags = ["follow" if self.follow else "paused"] + (["wrap"] if self.wrap_lines else [])
        self.description = " ".join(flags)
        self.post_message(self.StateChanged(self, self.description))

    def action_follow(self) -> None:
        self.follow = not self.follow

    def action_wrap(self) -> None:
        self.wrap_lines = not self.wrap_lines

    # Scrolling back to read something must not be yanked away by the next line.
    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self.follow = False
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.follow = True

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.follow = False
        super()._on_mouse_scroll_up(event)
