"""Screens and inputs own their keys (issue 15, item 2): typing in the event log fires no global key."""

from __future__ import annotations

from pathlib import Path

from conftest import kill_services
from opsconsole.engine.engine import Engine
from opsconsole.events import Message
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.command_line import CommandLine
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.event_log import EventLogScreen
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.log_view import LogView
from test_ui import SIZE, journal_commands, make_engine, until


def fresh_engine(tmp_path: Path) -> Engine:
    return make_engine(tmp_path)


async def test_typing_in_the_event_log_fires_no_global_key(tmp_path: Path) -> None:
    engine = fresh_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            engine.bus.emit(Message(text="rollout of itrust started", level="info"))
            engine.bus.emit(Message(text="build of checkbox queued", level="info"))
            await until(pilot, lambda: len(app.event_lines) >= 2, what="the events")
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen), what="the event log")
            log_screen = app.screen
            # Keys that mean something on the main screen mean nothing here: no roll, build, abort or prompt.
            await pilot.press("r", "b", "a", "plus", "0", "p", "colon", "1", "tab")
            assert app.screen is log_screen and app.focused is log_screen.query_one(LogView), app.focused
            await pilot.press("slash")
            bar = log_screen.query_one(FilterBar)
            await until(pilot, lambda: app.focused is bar, what="the event log's own filter")
            await pilot.press(*"rollout")
            await until(pilot, lambda: log_screen.query_one(LogView).visible()
                        and all("rollout" in line.text for line in log_screen.query_one(LogView).visible()),
                        what="the log filtered")
            shown = [line.text for line in log_screen.query_one(LogView).visible()]
            assert len(shown) == 1 and shown[0].endswith(" rollout of itrust started"), shown
            assert app.screen is log_screen and not isinstance(app.screen, ConfirmScreen)
            # Nothing leaked to the main screen: the fleet's filter and the command line stayed closed.
            fleet_bar = app.screen_stack[0].query_one(FleetPane).query_one(FilterBar)
            assert not fleet_bar.has_class("-open") and fleet_bar.value == ""
            assert not app.screen_stack[0].query_one(CommandLine).display or \
                app.screen_stack[0].query_one(CommandLine).value == ""
            await pilot.press("escape")  # clears the filter and gives the keys back to the log
            await until(pilot, lambda: len(log_screen.query_one(LogView).visible()) >= 2, what="the filter cleared")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, EventLogScreen), what="back to the panes")
            # On the main screen the keys work again.
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the roll dialog")
            await pilot.press("escape")
        assert journal_commands(engine) == []
    finally:
        kill_services(tmp_path / "state")
