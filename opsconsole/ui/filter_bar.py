"""The `/` filter line at the bottom of a pane: typing narrows the pane live, esc clears it."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    DEFAULT_CSS = """
    FilterBar { display: none; height: 1; border: none; padding: 0 1; }
    FilterBar.-open { display: block; }
    """
    BINDINGS = [Binding("escape", "clear", "clear filter", show=False)]

    class Done(Message):
        """The operator finished with the filter (enter keeps it, esc cleared it)."""

        def __init__(self, bar: "FilterBar") -> None:
            super().__init__()
            self.bar = bar

    def __init__(self, placeholder: str, id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, id=id, compact=True)

    def open(self) -> None:
        self.add_class("-open")
        self.focus()

    def action_clear(self) -> None:
        self.value = ""
        self.remove_class("-open")
        self.post_message(self.Done(self))

    async def action_submit(self) -> None:
        if not self.value:
            self.remove_class("-open")
        self.post_message(self.Done(self))
