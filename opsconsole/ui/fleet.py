"""The fleet pane: one row per host, read from the engine's host views.

Rows are rendered from `engine.views` (the engine's truth), never from event
payloads, so a batch that lost events to a flood still shows every host right.
Hosts touched by events are only marked; a slower timer rewrites just the
cells that changed. A table of 500 hosts redrawn 20 times a second would eat
the time a key press needs, and nobody reads a latency column faster than 2 Hz.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable

from opsconsole.events import Event, HealthChanged, HealthSample, HostState, TaskFinished, TaskStarted
from opsconsole.ui.bindings import bindings
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.row_table import RowTable
from opsconsole.ui.style import activity_cell, health_cell, latency_text, level_styles, styled

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine, HostView
    from opsconsole.hosts import Host

COLUMNS: tuple[tuple[str, str], ...] = (
    ("host", "host"), ("health", "health"), ("ms", "ms"), ("version", "version"),
    ("activity", "now"), ("role", "group/role"), ("address", "address"),
)
# Fixed widths: letting the table size columns to content re-measures every row on every
# cell update, which is what made 500 hosts under a flood take seconds per key press.
# Rows out of view are brought up to date every this many refresh ticks; a row scrolled into
# view is on screen, so the next tick updates it. Either way a row is at most ~2 s old.
OFFSCREEN_EVERY = 4
FIXED_WIDTHS = {"health": 9, "ms": 5, "version": 7, "activity": 11}

def address_text(host: "Host") -> str:
    """Where the host answers; for an EC2 host also which instance it is and of what type."""
    text = host.address + (f":{host.port}" if host.port else "")
    instance = host.vars.get("instance_id")
    if instance:
        text += f" {instance} {host.vars.get('instance_type', '')}".rstrip()
    return text


# Sort orders the `s` key cycles through; problems first where that makes sense.
SORTS: dict[str, Callable[["HostView"], object]] = {
    "host": lambda v: v.host.name,
    "health": lambda v: ({False: 0, None: 1, True: 2}[v.healthy], v.host.name),
    "activity": lambda v: (v.activity == "idle", v.activity, v.host.name),
    "version": lambda v: (v.version or "", v.host.name),
    "latency": lambda v: (-(v.latency or 0.0), v.host.name),
    "group": lambda v: (v.host.group, v.host.role, v.host.name),
}

_TOUCHING = (HostState, HealthSample, HealthChanged, TaskStarted, TaskFinished)


def _signature(cell: object) -> str:
    return f"{cell}\0{getattr(cell, 'style', '')}"


class FleetPane(Vertical):
    BINDINGS = bindings("fleet") + bindings("table")
    can_focus = False  # focus lives on the table inside

    class HostChosen(Message):
        def __init__(self, host: str) -> None:
            super().__init__()
            self.host = host

    def __init__(self, engine: "Engine", id: str | None = None, refresh_seconds: float = 0.5) -> None:
        super().__init__(id=id, classes="pane")
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self._dirty: set[str] = set()
        self._ticks = 0
        self._shown: dict[str, list[str]] = {}  # host -> the cells on screen, as plain text + level
        self.sort_key = "host"
        self._column_widths: dict[str, int] = {}  # as the table has them now (see _fit_columns)
        self.filter_text = ""
        self.border_title = "Fleet (1)"

    def compose(self) -> ComposeResult:
        table: DataTable[object] = RowTable(cursor_type="row", zebra_stripes=False, id="fleet-table")
        widths = self._widths()
        for key, label in COLUMNS:
            table.add_column(label, key=key, width=widths[key])
        self._column_widths = widths
        yield table
        yield FilterBar("filter hosts: name, group, role, state…", id="fleet-filter")

    def _widths(self) -> dict[str, int]:
        hosts = [v.host for v in self.engine.views.values()]
        return {
            **FIXED_WIDTHS,
            "host": max([len(h.name) for h in hosts] + [4]),
            "role": max([len(h.group) + len(h.role) + 1 for h in hosts] + [10]),
            "address": max([len(address_text(h)) for h in hosts] + [7]),
        }

    def _fit_columns(self) -> None:
        """Widen the columns for hosts that came after the pane opened (pods from a watch): a name is
        never cut. Only on a rebuild (membership changed), so cell updates keep the fixed widths."""
        wanted = self._widths()
        if all(wanted[k] <= self._column_widths.get(k, 0) for k in wanted):
            return
        self._column_widths = {k: max(wanted[k], self._column_widths.get(k, 0)) for k in wanted}
        self.table.clear(columns=True)
        for key, label in COLUMNS:
            self.table.add_column(label, key=key, width=self._column_widths[key])

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#fleet-table", DataTable)

    def on_mount(self) -> None:
        self.rebuild()
        self.set_interval(self.refresh_seconds, self._apply_dirty)

    # -- what is shown -----------------------------------------------------
    def shown_hosts(self) -> list[str]:
        views = [v for v in self.engine.views.values() if self._matches(v)]
        views.sort(key=SORTS[self.sort_key])  # type: ignore[arg-type]
        return [v.host.name for v in views]

    def _matches(self, view: "HostView") -> bool:
        if not self.filter_text:
            return True
        haystack = " ".join((view.host.name, view.host.group, view.host.role, view.activity, view.version or "",
                             health_cell(view.health)[0], view.host.address)).lower()
        return all(word in haystack for word in self.filter_text.lower().split())

    def _cells(self, view: "HostView", styles: dict[str, str]) -> list[object]:
        host = view.host
        health, health_level = health_cell(view.health)
        activity, activity_level = activity_cell(view.activity)
        role = host.group + (f"/{host.role}" if host.role else "")
        address = address_text(host)
        state = host.vars.get("instance_state")
        if state is not None and state != "running":  # an EC2 host AWS reports stopped, pending …
            activity, activity_level = f"■ {state}", "warn"
        # Text, not str: a str cell is parsed as markup on every render.
        return [Text(host.name), styled(health, health_level, styles), Text(latency_text(view.latency)),
                Text(view.version or "-"), styled(activity, activity_level, styles), Text(role), Text(address)]

    def rebuild(self) -> None:
        """Re-create every row (filter, sort or theme changed); keeps the cursor on the same host."""
        table = self.table
        keep = self.selected_host()
        styles = level_styles(self.app)
        self._fit_columns()
        table.clear()
        self._shown.clear()
        self._dirty.clear()
        for name in self.shown_hosts():
            cells = self._cells(self.engine.views[name], styles)
            self._shown[name] = [_signature(cell) for cell in cells]
            table.add_row(*cells, key=name)
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep), animate=False)
        self._describe()

    def refresh_hosts(self, names: set[str]) -> None:
        table = self.table
        styles = level_styles(self.app)
        changed_membership = False
        for name in names:
            view = self.engine.views.get(name)
            if view is None:
                continue
            if name not in table.rows:
                changed_membership |= self._matches(view)
                continue
            if not self._matches(view):
                changed_membership = True
                continue
            shown = self._shown[name]
            for index, ((key, _), value) in enumerate(zip(COLUMNS, self._cells(view, styles))):
                signature = _signature(value)
                if shown[index] != signature:  # every update_cell invalidates the whole table's render cache
                    shown[index] = signature
                    table.update_cell(name, key, value)
        if changed_membership:
            self.rebuild()
        else:
            self._describe()

    def on_events(self, batch: list[Event]) -> None:
        self._dirty.update(e.host for e in batch if isinstance(e, _TOUCHING))  # type: ignore[union-attr]

    def _apply_dirty(self) -> None:
        """Rewrite the rows on screen now; rows scrolled out of view only every few ticks."""
        if not self._dirty:
            return
        self._ticks += 1
        if self._ticks % OFFSCREEN_EVERY == 0:
            dirty, self._dirty = self._dirty, set()
        else:
            table = self.table
            top = int(table.scroll_y)
            on_screen = {str(row.key.value) for row in table.ordered_rows[top:top + table.size.height]}
            dirty = self._dirty & on_screen
            self._dirty -= dirty
        if dirty:
            self.refresh_hosts(dirty)

    def _describe(self) -> None:
        views = self.engine.views.values()
        # Verdicts, counted as the heartbeat's summary counts them; a FAILED deploy is counted too, so the
        # border never says ✘0 beside a row that says FAILED.
        up = sum(1 for v in views if v.healthy)
        down = sum(1 for v in views if v.healthy is False)
        failed = sum(1 for v in views if v.activity == "failed")
        shown = self.table.row_count
        parts = [f"{len(views)} hosts", f"✔{up} up", f"✘{down} down"] + ([f"{failed} FAILED"] if failed else [])
        if self.filter_text:
            parts.append(f"/{self.filter_text} {shown} shown")
        if hidden := self.hidden_columns():  # cut off at 80x24: say so, and how to see them (issue 15)
            parts.append(f"+{len(hidden)} cols → z")
        parts.append(f"sort {self.sort_key}")
        self.border_subtitle = " · ".join(parts)

    def hidden_columns(self) -> list[str]:
        """The columns that do not fit the table's width from the left edge: out of sight unless scrolled."""
        table = self.table
        room = table.scrollable_content_region.width
        if room <= 0:
            return []  # not laid out yet
        used, hidden = 0, []
        for column in table.ordered_columns:
            used += column.get_render_width(table)
            if used > room:
                hidden.append(str(column.label))
        return hidden

    def on_resize(self) -> None:
        self.call_after_refresh(self._describe)  # the table has its new width after the refresh

    # -- selection, sorting, filter ------------------------------------------
    def selected_host(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value)

    def action_sort(self) -> None:
        keys = list(SORTS)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.rebuild()

    def action_details(self) -> None:
        host = self.selected_host()
        if host is not None:
            self.post_message(self.HostChosen(host))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.HostChosen(str(event.row_key.value)))

    def open_filter(self) -> None:
        self.query_one(FilterBar).open()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Esc clears a filter in force; with none, the key is not ours (and the footer does not offer it).
        return bool(self.filter_text) if action == "clear_filter" else True

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        self.rebuild()

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.table.focus()

    def focus_main(self) -> None:
        self.table.focus()
