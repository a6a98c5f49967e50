"""The heartbeat log: like a `monitor` printing each server's status every interval, but readable.

By default it shows changes (a host's first answer, a flip of health or status
code, the monitor's up/down verdicts after fall/rise) and one rolling line per
monitor cycle with every host's status; `v` adds every single probe.
Filtering on one host shows every probe of that host, monitor-style.
The lines are the heartbeat log's own (opsconsole/heartbeat/log.py): the monitor
writes every one of them to `<state_dir>/logs/heartbeat.log`, whichever front end
runs, so the view only displays and keeps the last few thousand.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical

from opsconsole.events import Event, HealthChanged, HealthSample, HeartbeatCycle
from opsconsole.heartbeat.log import change_line, clock, cycle_body, cycle_line, cycle_summary, sample_line
from opsconsole.ui.bindings import bindings
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.log_view import LogLine, LogView


CYCLE_KEY = "\0cycle"
# The lines kept (a ring: the oldest goes); every line is in heartbeat.log on disk anyway. At 2,000 hosts
# that is the changes of the last few cycles, and the console's memory stays flat however long it runs.
LOG_CAPACITY = 3000


class HeartbeatPane(Vertical):
    BINDINGS = bindings("heartbeat")
    can_focus = False

    def __init__(self, log_file: Path | None = None, id: str | None = None) -> None:
        # `log_file` names where the heartbeat writes these lines; the pane writes nothing.
        super().__init__(id=id, classes="pane")
        self.border_title = "Heartbeat log (3)"
        self.all_probes = False
        self.host_filter = ""
        self._last: dict[str, tuple[bool, int | None]] = {}
        self._last_cycle = ""
        self.cycle_note = ""  # the last monitor cycle, in the border: proof the heartbeat is alive
        self.log_file = log_file

    def compose(self) -> ComposeResult:
        yield LogView(capacity=LOG_CAPACITY, id="heartbeat-log")
        yield FilterBar("filter by host", id="heartbeat-filter")

    @property
    def log(self) -> LogView:  # type: ignore[override]
        return self.query_one(LogView)

    def on_mount(self) -> None:
        self._apply_filter()

    def line_for(self, event: Event) -> LogLine | None:
        match event:
            case HealthSample(host=host, ok=ok, status=status):
                before = self._last.get(host)
                self._last[host] = (ok, status)
                changed = before is None or before != (ok, status)
                return LogLine(host, sample_line(event), "ok" if ok else "bad", important=changed)
            case HealthChanged(host=host, healthy=healthy):
                return LogLine(host, change_line(event), "ok" if healthy else "bad")
            case HeartbeatCycle(down=down):
                # The monitor's rolling line; the key matches no host, so a host filter hides it.
                # A cycle like the one before is routine: the subtitle says the monitor is alive,
                # the log only gets a line when the picture changed (or in every-probe mode).
                body = cycle_body(event)
                changed = body != self._last_cycle
                self._last_cycle = body
                self.cycle_note = f"{clock(event.at)} {cycle_summary(event)}"
                return LogLine(CYCLE_KEY, cycle_line(event), "bad" if down else "dim", important=changed)
        return None

    def on_events(self, batch: list[Event]) -> None:
        lines = [line for line in map(self.line_for, batch) if line is not None]
        if not lines:
            return
        self.log.add(lines)
        if self.cycle_note:
            self._describe()

    def _apply_filter(self) -> None:
        wanted, every = self.host_filter.lower(), self.all_probes

        def show(line: LogLine) -> bool:
            if wanted and wanted not in line.key.lower():
                return False
            return every or bool(wanted) or line.important

        self.log.set_filter(show)
        self._describe()

    def _describe(self) -> None:
        parts = ([self.cycle_note] if self.cycle_note else []) + [
            self.log.description, "every probe" if self.all_probes else "changes"]
        if self.host_filter:
            parts.append(f"/{self.host_filter}")
        self.border_subtitle = " · ".join(parts)

    def on_log_view_state_changed(self, event: LogView.StateChanged) -> None:
        event.stop()
        self._describe()

    def action_all_probes(self) -> None:
        self.all_probes = not self.all_probes
        self._apply_filter()

    def open_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.host_filter = event.value.strip()
        self._apply_filter()

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.log.focus()

    def focus_main(self) -> None:
        self.log.focus()
