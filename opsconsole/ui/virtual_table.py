"""A row table whose rows hold only a key: a row's cells are made when it is drawn, or read.

A DataTable keeps every cell of every row and, when rows are added, measures each
of them: at 2,000 hosts that was ~1.5 s per filter key or sort. Here a row is a key
and the cells come from `cells(key)` at the moment the table paints that line, so
the cost of a paint, a filter or a sort follows the rows on screen, not the fleet.
Because nothing is stored, nothing goes stale either: `redraw()` repaints what is on
screen from the source, and a row scrolled into view is drawn fresh.

Columns must have fixed widths (measuring content would need every cell again).
This leans on DataTable internals, named here so a Textual upgrade that moves
them shows up in tests/test_ui_fleet_scale.py: `_update_count` (the key of its
render caches), `_update_dimensions` (the measuring pass on new rows) and the
row registry `set_rows` fills (`_row_locations`, `_data`, `rows`); its render caches
(`_line_cache`, `_row_render_cache`, `_cell_render_cache`, `_row_renderable_cache`) are only resized.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from textual.cache import LRUCache
from textual.geometry import Size
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, DuplicateKey, Row, RowDoesNotExist, RowKey

from opsconsole.ui.log_view import RENDER_CACHE_LINES
from opsconsole.ui.row_table import RowTable

CellSource = Callable[[str], Sequence[object]]


def _key(row_key: RowKey | str) -> str:
    return str(row_key.value) if isinstance(row_key, RowKey) else row_key


class VirtualTable(RowTable):
    def __init__(self, cells: CellSource, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.cells = cells
        # DataTable's render caches are keyed on `_update_count`, which every redraw bumps, so past a screen's
        # worth their entries are dead; at their default sizes (1,000 lines, 10,000 cells) under a flood they
        # kept ~30,000 stale segments and strips alive for each full garbage collection to walk.
        self._line_cache = LRUCache(RENDER_CACHE_LINES)
        self._row_render_cache = LRUCache(RENDER_CACHE_LINES)
        self._cell_render_cache = LRUCache(RENDER_CACHE_LINES * 10)
        # Its row renderables too (keyed on `_update_count` as well): 1,000 by default, each a row's Text cells,
        # ~20,000 dead objects for every full collection to walk, the stall a key press could land behind.
        self._row_renderable_cache = LRUCache(RENDER_CACHE_LINES)

    def set_rows(self, keys: Iterable[str]) -> None:
        """Replace every row by one per key, in this order; no cell is made here.

        `add_row` costs ~0.3 ms a row (it re-validates the cursor and wakes its watchers each
        time): 0.7 s for 2,000 hosts on every filter key. This registers the rows the way
        `add_row` does and settles the cursor once.
        """
        self.clear()
        for index, key in enumerate(keys):
            row_key = RowKey(key)
            if row_key in self._row_locations:
                raise DuplicateKey(f"The row key {row_key!r} already exists.")
            self._row_locations[row_key] = index
            self._data[row_key] = {}
            self.rows[row_key] = Row(row_key, 1, None, False)
        self._require_update_dimensions = True
        self.cursor_coordinate = self.cursor_coordinate
        if self.row_count and self.columns and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self._update_count += 1
        self.check_idle()

    def redraw(self) -> None:
        """Paint the rows on screen again from the source (their data changed)."""
        self._update_count += 1  # every render cache of the DataTable is keyed on it
        self.refresh()

    # -- cells come from the source, never from storage --------------------------
    def get_row(self, row_key: RowKey | str) -> list[object]:
        if row_key not in self._row_locations:
            raise RowDoesNotExist(f"Row key {row_key!r} is not valid.")
        return list(self.cells(_key(row_key)))

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> object:
        if column_key not in self._column_locations:
            raise CellDoesNotExist(f"No cell exists for row_key={row_key!r}, column_key={column_key!r}.")
        try:
            row = self.get_row(row_key)
        except RowDoesNotExist:
            raise CellDoesNotExist(f"No cell exists for row_key={row_key!r}, column_key={column_key!r}.") from None
        return row[self.get_column_index(column_key)]

    def _update_dimensions(self, new_rows: Iterable[object]) -> None:
        # The DataTable would render every new row to measure it; with fixed widths and one line a row
        # there is nothing to learn, only the scrollable size to set.
        assert not any(column.auto_width for column in self.columns.values()), "VirtualTable needs fixed widths"
        width = sum(column.get_render_width(self) for column in self.columns.values()) + self._row_label_column_width
        self.virtual_size = Size(width, self.row_count + (self.header_height if self.show_header else 0))
