"""The confirm dialog for destructive actions: says what will happen; focus starts on Cancel.

Starting on Cancel means a stray `enter` (or a key meant for the pane behind)
never rolls a fleet; the operator has to move to the action on purpose, or say `y`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class _PlanText(VerticalScroll):
    # Not focusable: left/right and Tab move between the two buttons only, as before the text could scroll.
    can_focus = False


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 70; max-width: 100%; height: auto; border: thick $warning; padding: 0 1; background: $surface;
    }
    ConfirmScreen #confirm-scroll { height: auto; max-height: 80vh; margin: 1 0 0 0; }
    ConfirmScreen #confirm-what { margin: 0 0 1 0; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; min-width: 10; }
    """
    BINDINGS = [
        Binding("escape,n", "answer(False)", "cancel", id="back"),
        Binding("y", "answer(True)", "yes", id="confirm_yes"),
        Binding("left,right", "app.focus_previous", "other button", show=False),
        Binding("up", "scroll(-1)", "scroll", show=False),
        Binding("down", "scroll(1)", "scroll", show=False),
        Binding("pageup", "scroll(-10)", "page", show=False),
        Binding("pagedown", "scroll(10)", "page", show=False),
    ]

    def __init__(self, what: str, action_label: str = "Do it", title: str = "Confirm") -> None:
        super().__init__()
        self.what = what
        self.action_label = action_label
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.title_text
            # A whole plan can be longer than the screen: it scrolls (↑/↓, PgUp/PgDn) instead of being cut.
            with _PlanText(id="confirm-scroll"):
                yield Static(self.what, id="confirm-what", markup=False)
            with Horizontal():
                yield Button("Cancel (n)", id="cancel", variant="default")
                yield Button(f"{self.action_label} (y)", id="confirm", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_scroll(self, lines: int) -> None:
        # Focus stays on the buttons (y/n/Enter answer); the keys scroll the text above them.
        self.query_one("#confirm-scroll", _PlanText).scroll_relative(y=lines, animate=False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
