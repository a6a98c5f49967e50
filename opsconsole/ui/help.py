"""`?` / F1: every key with its binding id (for `keymap:` in the config) and the command language."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from opsconsole.engine.commands import help_text
from opsconsole.ui.bindings import KEYS, key_for

SCOPES = {"app": "anywhere", "fleet": "fleet pane", "log": "logs", "heartbeat": "heartbeat log", "canary": "canary pane", "table": "fleet, build queue", "screen": "screens"}


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 96; max-width: 100%; height: 100%; border: round $primary; background: $surface; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss_help", "close", id="back")]

    def __init__(self, keymap: dict[str, str], readonly: bool) -> None:
        super().__init__()
        self.keymap, self.readonly = keymap, readonly

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(keys, binding id, what it does, where) for every binding; tests read this."""
        result = []
        for spec in KEYS:
            keys = " ".join(self.app.get_key_display(Binding(k.strip(), "")) for k in key_for(spec, self.keymap).split(","))
            what = spec.description + (" (off: read-only)" if self.readonly and spec.mutating else "")
            result.append((keys, spec.id, what, SCOPES.get(spec.scope, spec.scope)))
        result.append(("ctrl+p", "-", "command palette: every command and key", "anywhere"))
        return result

    def compose(self) -> ComposeResult:
        keys = Table(title="Keys (rebind with `keymap: {id: key}` in the config)", expand=True, box=None,
                     title_justify="left", padding=(0, 1))
        for column in ("key", "id", "does", "where"):
            keys.add_column(column, no_wrap=column != "does")
        for row in self.rows():
            keys.add_row(*row)
        commands = Text("\nCommands (`:` prompt, --script files and keys all use these)\n\n", style="bold")
        commands.append(help_text())
        with VerticalScroll() as scroll:
            scroll.border_title = "Help · esc closes"
            yield Static(keys, id="help-keys")
            yield Static(commands, id="help-commands")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
