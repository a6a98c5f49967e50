"""The fleet pane: one row per host, read from the engine's host views.

Rows are rendered from `engine.views` (the engine's truth), never from event
payloads, so a batch that lost events to a flood still shows every host right.
Only rows of hosts touched by a batch are rewritten, cell by cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable

from opsconsole.events import Event, HealthChanged, HealthSample, HostState, TaskFinished, TaskStarted
from opsconsole.ui.bindings import bindings
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.style import activity_cell, health_cell, latency_text, level_styles, styled

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine, HostView

COLUMNS: tuple[tuple[str, str], ...] = (
    ("host", "host"), ("health", "health"), ("ms", "ms"), ("version", "version"),
    ("activity", "now"), ("role", "group/role"), ("address", "address"),
)

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


class FleetPane(Vertical):
    BINDINGS = bindings("fleet")
    can_focus = False  # focus lives on the table inside

    class HostChosen(Message):
        def __init__(self, host: str) -> None:
            super().__init__()
            self.host = host

    def __init__(self, engine: "Engine", id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.engine = engine
        self.sort_key = "host"
        self.filter_text = ""
        self.border_title = "Fleet (1)"

    def compose(self) -> ComposeResult:
        table: DataTable[object] = DataTable(cursor_type="row", zebra_stripes=False, id="fleet-table")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield FilterBar("filter hosts: name, group, role, state…", id="fleet-filter")

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#fleet-table", DataTable)

    def on_mount(self) -> None:
        self.rebuild()

    # -- what is shown -----------------------------------------------------
    def shown_hosts(self) -> list[str]:
        views = [v for v in self.engine.views.values() if self._matches(v)]
        views.sort(key=SORTS[self.sort_key])  # type: ignore[arg-type]
        return [v.host.name for v in views]

    def _matches(self, view: "HostView") -> bool:
        if not self.filter_text:
            return True
        haystack = " ".join((view.host.name, view.host.group, view.host.role, view.activity, view.version or "",
                             health_cell(view.healthy)[0], view.host.address)).lower()
        return all(word in haystack for word in self.filter_text.lower().split())

    def _cells(self, view: "HostView", styles: dict[str, str]) -> list[object]:
        host = view.host
        health, health_level = health_cell(view.healthy)
        activity, activity_level = activity_cell(view.activity)
        role = host.group + (f"/{host.role}" if host.role else "")
        address = host.address + (f":{host.port}" if host.port else "")
        return [host.name, styled(health, health_level, styles), latency_text(view.latency), view.version or "-",
                styled(activity, activity_level, styles), role, address]

    def rebuild(self) -> None:
        """Re-create every row (filter, sort or theme changed); keeps the cursor on the same host."""
        table = self.table
        keep = self.selected_host()
        styles = level_styles(self.app)
        table.clear()
        for name in self.shown_hosts():
            table.add_row(*self._cells(self.engine.views[name], styles), key=name)
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
            for (key, _), value in zip(COLUMNS, self._cells(view, styles)):
                table.update_cell(name, key, value, update_width=True)
        if changed_membership:
            self.rebuild()
        else:
            self._describe()

    def on_events(self, batch: list[Event]) -> None:
        touched = {e.host for e in batch if isinstance(e, _TOUCHING)}  # type: ignore[union-attr]
        if touched:
            self.refresh_hosts(touched)

    def _describe(self) -> None:
        views = self.engine.views.values()
        up = sum(1 for v in views if v.healthy)
        down = sum(1 for v in views if v.healthy is False)
        shown = self.table.row_count
        parts = [f"{len(views)} hosts", f"✔{up}", f"✘{down}"]
        if self.filter_text:
            parts.append(f"/{self.filter_text} {shown} shown")
        parts.append(f"sort {self.sort_key}")
        self.border_subtitle = " · ".join(parts)

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

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        self.rebuild()

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.table.focus()

    def focus_main(self) -> None:
        self.table.focus()
