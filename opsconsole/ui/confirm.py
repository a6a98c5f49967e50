"""The confirm dialog for destructive actions: says what will happen; focus starts on Cancel.

Starting on Cancel means a stray `enter` (or a key meant for the pane behind)
never rolls a fleet; the operator has to move to the action on purpose, or say `y`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 70; max-width: 100%; height: auto; border: thick $warning; padding: 0 1; background: $surface;
    }
    ConfirmScreen #confirm-what { margin: 1 0; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; min-width: 10; }
    """
    BINDINGS = [
        Binding("escape,n", "answer(False)", "cancel", id="back"),
        Binding("y", "answer(True)", "yes", id="confirm_yes"),
        Binding("left,right", "app.focus_previous", "other button", show=False),
    ]

    def __init__(self, what: str, action_label: str = "Do it", title: str = "Confirm") -> None:
        super().__init__()
        self.what = what
        self.action_label = action_label
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.title_text
            yield Static(self.what, id="confirm-what", markup=False)
            with Horizontal():
                yield Button("Cancel (n)", id="cancel", variant="default")
                yield Button(f"{self.action_label} (y)", id="confirm", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
