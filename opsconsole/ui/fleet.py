"""The fleet pane: one row per host, read from the engine's host views.

Rows are drawn from `engine.views` (the engine's truth), never from event
payloads, so a batch that lost events to a flood still shows every host right.
The table is virtual (opsconsole/ui/virtual_table.py): a row is a host name and
its cells are made only when the row is painted, so the work of a paint, a
filter key or a sort follows the ~40 rows on screen, not the 2,000 hosts.
Hosts touched by events are only marked; a slower timer repaints the screen
when one of the marked hosts is on it. Nobody reads a latency column faster
than 2 Hz, and a key press must not wait behind 20 repaints a second.

A fleet of more than GROUPED_FROM hosts gets a summary row per group, and big
groups start folded (see opsconsole/ui/fleet_groups.py for the sizes and why).
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
from opsconsole.ui.fleet_groups import FOLD_FROM, GROUPED_FROM, group_key, group_of_key, summarize, summary_cells
from opsconsole.ui.style import activity_cell, health_cell, latency_text, level_styles, styled
from opsconsole.ui.virtual_table import VirtualTable

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine, HostView
    from opsconsole.hosts import Host

COLUMNS: tuple[tuple[str, str], ...] = (
    ("host", "host"), ("health", "health"), ("ms", "ms"), ("version", "version"),
    ("activity", "now"), ("role", "group/role"), ("address", "address"),
)
# Fixed widths: the virtual table never measures content (that would need every row's cells).
FIXED_WIDTHS = {"health": 9, "ms": 5, "version": 7, "activity": 11}


def address_text(host: "Host") -> str:
    """Where the host answers; for an EC2 host also which instance it is and of what type."""
    text = host.address + (f":{host.port}" if host.port else "")
    instance = host.vars.get("instance_id")
    if instance:
        text += f" {instance} {host.vars.get('instance_type', '')}".rstrip()
    return text


# Sort orders the `s` key cycles through; problems first where that makes sense.
# In a grouped fleet the order applies within each group.
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
        self._styles: dict[str, str] = {}
        self._members: dict[str, list[str]] = {}  # group -> its hosts, in config order (for summary rows)
        self._matching: dict[str, int] = {}  # group -> hosts a filter in force lets through
        self._shown_set: set[str] = set()  # host rows in the table now
        self._was_grouped = False  # whether the rows listed last had group rows
        self.folded: set[str] = set()
        self._fold_decided: set[str] = set()  # groups given their default fold state already
        self.sort_key = "host"
        self._column_widths: dict[str, int] = {}  # as the table has them now (see _fit_columns)
        self.filter_text = ""
        self.border_title = "Fleet (1)"

    def compose(self) -> ComposeResult:
        table = VirtualTable(self._row_cells, cursor_type="row", zebra_stripes=False, id="fleet-table")
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
            "host": max([len(h.name) for h in hosts] + [4]
                        + ([len(g) + 2 for g in self.engine.config.groups] if self.grouped else [])),  # "▸ web"
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
    def table(self) -> VirtualTable:
        return self.query_one("#fleet-table", VirtualTable)

    def on_mount(self) -> None:
        self.rebuild()
        self.set_interval(self.refresh_seconds, self._apply_dirty)

    # -- what is shown -----------------------------------------------------
    @property
    def grouped(self) -> bool:
        return len(self.engine.views) > GROUPED_FROM

    def rows(self) -> list[str]:
        """The table's row keys in order: host names, and group summary rows in a grouped fleet."""
        views = self.engine.views
        order = SORTS[self.sort_key]
        if not self.grouped:
            return [v.host.name for v in sorted(filter(self._matches, views.values()), key=order)]  # type: ignore[arg-type]
        members: dict[str, list["HostView"]] = {}
        for view in views.values():
            members.setdefault(view.host.group, []).append(view)
        for group, hosts in members.items():  # a group seen for the first time gets its default fold state
            if group not in self._fold_decided:
                self._fold_decided.add(group)
                if len(hosts) > FOLD_FROM:
                    self.folded.add(group)
        self._members = {group: [v.host.name for v in hosts] for group, hosts in members.items()}
        self._matching.clear()
        keys: list[str] = []
        for group, hosts in members.items():
            matching = [v for v in hosts if self._matches(v)]
            if self.filter_text:
                if not matching:
                    continue
                self._matching[group] = len(matching)
            keys.append(group_key(group))
            # A filter shows its matches in folded groups too: they are what the operator asked to see.
            if group not in self.folded or self.filter_text:
                keys.extend(v.host.name for v in sorted(matching, key=order))  # type: ignore[arg-type]
        return keys

    def shown_hosts(self) -> list[str]:
        """The hosts with a row in the table, in table order (not those inside a folded group)."""
        return [key for key in self.rows() if group_of_key(key) is None]

    def _matches(self, view: "HostView") -> bool:
        if not self.filter_text:
            return True
        haystack = " ".join((view.host.name, view.host.group, view.host.role, view.activity, view.version or "",
                             health_cell(view.health)[0], view.host.address)).lower()
        return all(word in haystack for word in self.filter_text.lower().split())

    def _row_cells(self, key: str) -> list[object]:
        """The cells of one row, made when the table paints (or a test reads) it."""
        group = group_of_key(key)
        if group is not None:
            views = self.engine.views
            summary = summarize(group, (views[name] for name in self._members.get(group, ()) if name in views))
            folded = group in self.folded and not self.filter_text
            return summary_cells(summary, folded, self._matching.get(group), self._styles)
        view = self.engine.views.get(key)
        if view is None:  # gone since the rows were listed; the next refresh tick drops its row
            return [Text(key)] + [Text("")] * (len(COLUMNS) - 1)
        return self._cells(view, self._styles)

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
        """Re-list the rows (filter, sort, fold, theme or the fleet changed); keeps the cursor on the same row."""
        table = self.table
        keep = self._selected_key()
        self._styles = level_styles(self.app)
        self._fit_columns()
        keys = self.rows()
        self._shown_set = {key for key in keys if group_of_key(key) is None}
        self._was_grouped = self.grouped
        self._dirty.clear()
        table.set_rows(keys)
        if keep is not None and keep not in table.rows:  # a host folded away: stay on its group's row
            view = self.engine.views.get(keep)
            keep = group_key(view.host.group) if view is not None else None
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep), animate=False)
        self._describe()

    def refresh_hosts(self, names: set[str]) -> None:
        """Some hosts changed: re-list the rows when one comes, goes or crosses the filter; else repaint."""
        if self._membership_changed(names):
            self.rebuild()
            return
        self.table.redraw()
        self._describe()

    def _membership_changed(self, names: set[str]) -> bool:
        if self.grouped != self._was_grouped:
            return True
        views = self.engine.views
        for name in names:
            view = views.get(name)
            listed = name in self._shown_set
            if view is None:
                if listed:  # gone from the fleet (a pod deleted, an instance terminated)
                    return True
                continue
            folded_away = self._was_grouped and view.host.group in self.folded and not self.filter_text
            if listed != (self._matches(view) and not folded_away):
                return True
        return False

    def on_events(self, batch: list[Event]) -> None:
        self._dirty.update(e.host for e in batch if isinstance(e, _TOUCHING))  # type: ignore[union-attr]

    def _apply_dirty(self) -> None:
        """Repaint when a changed host is on screen (or its group's row is); off-screen rows are drawn fresh anyway."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        if self._membership_changed(dirty):
            self.rebuild()
            return
        table = self.table
        top = int(table.scroll_y)
        on_screen = {str(row.key.value) for row in table.ordered_rows[top:top + table.size.height]}
        groups = {group for key in on_screen if (group := group_of_key(key)) is not None}
        views = self.engine.views
        if any(name in on_screen or (name in views and views[name].host.group in groups) for name in dirty):
            table.redraw()
        self._describe()

    def _describe(self) -> None:
        views = self.engine.views.values()
        # Verdicts, counted as the heartbeat's summary counts them; a FAILED deploy is counted too, so the
        # border never says ✘0 beside a row that says FAILED.
        up = sum(1 for v in views if v.healthy)
        down = sum(1 for v in views if v.healthy is False)
        failed = sum(1 for v in views if v.activity == "failed")
        parts = [f"{len(views)} hosts", f"✔{up} up", f"✘{down} down"] + ([f"{failed} FAILED"] if failed else [])
        if self.filter_text:
            parts.append(f"/{self.filter_text} {len(self._shown_set)} shown")
        if self.folded and self.grouped and not self.filter_text:
            parts.append(f"{len(self.folded)} folded (o)")
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

    # -- selection, sorting, folding, filter -----------------------------------
    def _selected_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value)

    def selected_host(self) -> str | None:
        """The host under the cursor; None on a group's summary row."""
        key = self._selected_key()
        return None if key is None or group_of_key(key) is not None else key

    def selected_group(self) -> str | None:
        """The group of the row under the cursor (a summary row's, or its host's)."""
        key = self._selected_key()
        if key is None:
            return None
        group = group_of_key(key)
        if group is not None:
            return group
        view = self.engine.views.get(key)
        return view.host.group if view is not None else None

    def action_sort(self) -> None:
        keys = list(SORTS)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.rebuild()

    def action_fold(self) -> None:
        """Fold the group under the cursor, or unfold it (the cursor lands on its summary row)."""
        group = self.selected_group()
        if group is None or not self.grouped:
            return
        self.folded.symmetric_difference_update({group})
        self.rebuild()
        table = self.table
        if group_key(group) in table.rows:
            table.move_cursor(row=table.get_row_index(group_key(group)), animate=False)

    def action_fold_all(self) -> None:
        """Fold every group; when all are folded already, unfold them all."""
        if not self.grouped:
            return
        groups = set(self._members)
        self.folded = set() if groups <= self.folded else groups
        self.rebuild()

    def action_details(self) -> None:
        key = self._selected_key()
        if key is not None and group_of_key(key) is not None:
            self.action_fold()
        elif key is not None:
            self.post_message(self.HostChosen(key))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = str(event.row_key.value)
        if group_of_key(key) is not None:
            self.action_fold()
        else:
            self.post_message(self.HostChosen(key))

    def open_filter(self) -> None:
        self.query_one(FilterBar).open()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Esc clears a filter in force; with none, the key is not ours (and the footer does not offer it).
        if action == "clear_filter":
            return bool(self.filter_text)
        if action in ("fold", "fold_all"):
            return self.grouped  # a small fleet has no group rows to fold
        return True

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
