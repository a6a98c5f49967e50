"""The `:` command line: the `--script` grammar, with completion of verbs, apps, groups and hosts, and history.

History is seeded from the journal, so the commands of the last session (and
of headless runs on this state dir) are one `up` away.
"""

from __future__ import annotations

from typing import Callable, Iterable

from textual.binding import Binding
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input

from opsconsole.engine.commands import Names

HISTORY_LIMIT = 500


def complete(line: str, names: Names, verbs: Iterable[str], builds: Iterable[str] = ()) -> list[str]:
    """Every full line that completes the last word of `line` (empty when nothing fits); `builds`: build ids."""
    head, _, word = line.rpartition(" ")
    words = head.split()
    if not words:
        pool: list[str] = sorted({verb.split()[0] for verb in verbs})  # "wait down" completes as "wait"
    else:
        verb, position = words[0], len(words)
        if verb == "wait":
            pool = ["healthy"] if position == 1 else list(names.apps) if position == 2 else []
        elif verb == "run":
            pool = [*names.groups, *names.hosts] if position == 1 else ["--"] if position == 2 else []
        elif verb == "deploy":
            pool = list(names.hosts) if words[-1] == "--hosts" else \
                list(names.apps) if position == 1 else ["--hosts", "--version"]
        elif verb in ("log", "cancel"):  # `log build ID`, `cancel build ID`: nobody should type an id
            pool = ["build"] if position == 1 else list(builds) if position == 2 and words[1] == "build" else []
        elif verb in ("sleep", "abort", "help"):
            pool = []
        elif position == 1:
            pool = [*names.apps, *[g for g in names.groups if g not in names.apps], *names.hosts]
        else:
            pool = []
    prefix = f"{head} " if head else ""
    return [prefix + c for c in dict.fromkeys(pool) if c.startswith(word) and c != word]


class _Suggest(Suggester):
    def __init__(self, names: Names, verbs: list[str], builds: Callable[[], list[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.names, self.verbs, self.builds = names, verbs, builds

    async def get_suggestion(self, value: str) -> str | None:
        found = complete(value, self.names, self.verbs, self.builds())
        return found[0] if found else None


class CommandLine(Input):
    DEFAULT_CSS = """
    CommandLine { display: none; height: 1; border: none; padding: 0 0; }
    CommandLine.-open { display: block; }
    """
    BINDINGS = [
        Binding("tab", "complete", "complete", show=False),
        Binding("up", "history(-1)", "previous", show=False),
        Binding("down", "history(1)", "next", show=False),
        Binding("escape", "close", "close", show=False),
    ]

    class Entered(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Closed(Message):
        pass

    def __init__(self, names: Names, verbs: list[str], history: list[str], id: str | None = None,
                 mask: Callable[[str], str] = str, builds: Callable[[], list[str]] = list) -> None:
        """`mask` turns a typed line into what history may keep: a credential typed in it is not kept.
        `builds`: the build ids to complete, newest first, asked at each completion (builds come and go)."""
        super().__init__(placeholder="command (tab completes, ↑ history, esc closes)", id=id, compact=True,
                         suggester=_Suggest(names, verbs, builds))
        self.names, self.verbs, self.mask, self.builds = names, verbs, mask, builds
        self.history = history[-HISTORY_LIMIT:]
        self._at = len(self.history)  # position in history; len() = the line being typed
        self._draft = ""
        self._cycle: list[str] = []
        self._cycle_at = 0

    def open(self, text: str = "") -> None:
        self.add_class("-open")
        self.value = text
        self.cursor_position = len(text)
        self._at = len(self.history)
        self.focus()

    def action_close(self) -> None:
        self.value = ""
        self.remove_class("-open")
        self.post_message(self.Closed())

    async def action_submit(self) -> None:
        text = self.value.strip()
        self.value = ""
        self.remove_class("-open")
        if text:
            kept = self.mask(text)
            if not self.history or self.history[-1] != kept:
                self.history.append(kept)
            self.post_message(self.Entered(text))
        else:
            self.post_message(self.Closed())

    def action_complete(self) -> None:
        # Repeated tabs cycle through every candidate of the same starting line.
        if self._cycle and self.value == self._cycle[self._cycle_at]:
            self._cycle_at = (self._cycle_at + 1) % len(self._cycle)
        else:
            self._cycle = complete(self.value, self.names, self.verbs, self.builds())
            self._cycle_at = 0
            if not self._cycle:
                self.app.bell()
                return
        completed = self._cycle[self._cycle_at]
        if len(self._cycle) == 1:
            completed += " "
            self._cycle = []
        self.value = completed
        self.cursor_position = len(completed)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._at == len(self.history):
            self._draft = self.value
        self._at = max(0, min(len(self.history), self._at + step))
        self.value = self._draft if self._at == len(self.history) else self.history[self._at]
        self.cursor_position = len(self.value)
