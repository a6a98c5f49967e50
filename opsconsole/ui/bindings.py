"""Every key of the console, in one table.

Widgets take their BINDINGS from here so that the help screen, the footer and
the config's `keymap:` (binding id -> key) all see the same list. Ids are the
public, documented names an operator rebinds; never rename one casually.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class KeySpec:
    id: str
    key: str  # Textual key names, comma-separated for several
    action: str
    short: str  # the footer's label
    description: str  # the help screen's line
    scope: str  # "app" or the widget that owns the key (shown in help)
    footer: bool = False
    mutating: bool = False  # hidden and refused when the console is read-only


KEYS: tuple[KeySpec, ...] = (
    KeySpec("help", "question_mark,f1", "help", "help", "help: every key", "app", footer=True),
    KeySpec("command_line", "colon", "command_line", "cmd", "command line (same grammar as --script)", "app", footer=True),
    KeySpec("roll", "r", "roll", "roll", "roll the selected app to its branch head", "app", footer=True, mutating=True),
    KeySpec("abort", "a", "abort", "abort", "abort the running rollout", "app", footer=True, mutating=True),
    KeySpec("pause", "space", "pause", "pause", "pause / resume the running rollout", "app", mutating=True),
    KeySpec("build", "b", "build", "build", "build the selected app now", "app", footer=True, mutating=True),
    KeySpec("canary_up", "plus", "canary_step(1)", "canary+", "canary weight up one step", "app",
            mutating=True),
    KeySpec("canary_down", "minus", "canary_step(-1)", "canary-", "canary weight down one step", "app",
            mutating=True),
    KeySpec("canary_stable", "0", "canary_stable", "stable", "send all traffic to stable", "app",
            mutating=True),
    KeySpec("promote", "p", "promote", "promote", "promote the canary to stable", "app", mutating=True),
    KeySpec("filter", "slash", "filter", "filter", "filter the focused pane", "app", footer=True),
    KeySpec("next_pane", "tab", "next_pane(1)", "pane", "next pane", "app"),
    KeySpec("zoom", "z", "zoom", "zoom", "zoom the focused pane to the whole screen / back", "app", footer=True),
    KeySpec("prev_pane", "shift+tab", "next_pane(-1)", "pane", "previous pane", "app"),
    KeySpec("focus_fleet", "1", "focus_pane('fleet')", "fleet", "focus the fleet pane", "app"),
    KeySpec("focus_builds", "2", "focus_pane('builds')", "builds", "focus the build queue", "app"),
    KeySpec("focus_heartbeat", "3", "focus_pane('heartbeat')", "heartbeat", "focus the heartbeat log", "app"),
    KeySpec("focus_canary", "4", "focus_pane('canary')", "canary", "focus the canary pane", "app"),
    KeySpec("event_log", "l", "event_log", "log",
            "the selection's logs (host, build, canary app); with none, every event and command output", "app",
            footer=True),
    KeySpec("describe", "d", "describe", "describe", "describe the selection (host, build, canary app)", "app",
            footer=True),
    KeySpec("quit", "q", "quit", "quit", "quit (asks if work is running)", "app", footer=True),
    KeySpec("follow", "f", "follow", "follow", "follow the log on/off", "log"),
    KeySpec("wrap", "w", "wrap", "wrap", "wrap long lines on/off", "log"),
    KeySpec("all_probes", "v", "all_probes", "all", "heartbeat: every probe / only changes", "heartbeat"),
    KeySpec("sort", "s", "sort", "sort", "fleet: sort by the next column", "fleet"),
    KeySpec("details", "enter", "details", "detail", "fleet: the selected host's detail", "fleet", footer=True),
    # `o`/`O` (open/close), not `z`: `z` zooms the focused pane, in every pane.
    KeySpec("fold", "o", "fold", "fold", "fleet: fold / unfold the selected group (big fleets)", "fleet"),
    KeySpec("fold_all", "O", "fold_all", "fold all", "fleet: fold every group / unfold them all", "fleet"),
    KeySpec("canary_next", "down,j", "select(1)", "next app", "canary: select the next app behind the proxy", "canary"),
    KeySpec("canary_prev", "up,k", "select(-1)", "prev app", "canary: select the previous app behind the proxy", "canary"),
    KeySpec("clear_filter", "escape", "clear_filter", "clear filter", "fleet / builds: clear the filter", "table"),
    KeySpec("back", "escape", "back", "back", "back / cancel / close", "screen"),
)

BY_ID: dict[str, KeySpec] = {spec.id: spec for spec in KEYS}
MUTATING_ACTIONS: frozenset[str] = frozenset(s.action.split("(")[0] for s in KEYS if s.mutating)


def bindings(scope: str) -> list[Binding]:
    """Textual bindings of one scope, each carrying its id so the keymap can rebind it."""
    return [Binding(s.key, s.action, s.short, show=s.footer, id=s.id, tooltip=s.description)
            for s in KEYS if s.scope == scope]


# The app keys that steer the canary: the canary pane shows them in the footer while it has the focus.
CANARY_KEY_IDS = ("canary_up", "canary_down", "canary_stable", "promote")


def pane_footer_bindings(ids: tuple[str, ...]) -> list[Binding]:
    """App keys a pane shows in the footer while focused (same id, so the keymap rebinds both); they run the
    app's action, which acts on the focused pane's selection."""
    return [Binding(BY_ID[i].key, f"app.{BY_ID[i].action}", BY_ID[i].short, show=True, id=BY_ID[i].id,
                    tooltip=BY_ID[i].description) for i in ids]


def key_for(spec: KeySpec, keymap: dict[str, str]) -> str:
    """The key(s) a binding answers to once the config's keymap is applied."""
    return keymap.get(spec.id, spec.key)


def unknown_ids(keymap: dict[str, str]) -> list[str]:
    return [binding_id for binding_id in keymap if binding_id not in BY_ID]
