"""The row table every pane uses: a DataTable whose Home/End go to the first/last row.

Textual's DataTable with a row cursor binds Home/End to horizontal scrolling only,
so in a list of hosts or builds they seemed to do nothing.
"""

from __future__ import annotations

from textual.widgets import DataTable


class RowTable(DataTable[object]):
    def action_scroll_home(self) -> None:
        if self.cursor_type == "row" and self.row_count:
            self.scroll_x = 0
            self.action_scroll_top()
        else:
            super().action_scroll_home()

    def action_scroll_end(self) -> None:
        if self.cursor_type == "row" and self.row_count:
            self.action_scroll_bottom()
        else:
            super().action_scroll_end()
