"""Screens and inputs own their keys (issue 15, item 2): typing in the event log fires no global key."""

from __future__ import annotations

from pathlib import Path

from conftest import kill_services
from opsconsole.engine.engine import Engine
from opsconsole.events import Message, OutputLine
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.command_line import CommandLine
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.event_log import EventLogScreen
from opsconsole.ui.filter_bar import FilterBar
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.host_detail import HostDetailScreen
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
            await pilot.press("3", "l")  # the heartbeat pane selects nothing: `l` is every event (a host: its own)
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


async def test_status_shows_every_hosts_line_in_a_result_view_until_esc(tmp_path: Path) -> None:
    from opsconsole.ui.result_view import ResultScreen
    from opsconsole.ui.testing import screen_text

    engine = fresh_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("colon", *"status itrust", "enter")
            await until(pilot, lambda: isinstance(app.screen, ResultScreen), what="the result view")
            view = app.screen
            await until(pilot, lambda: view.outcome is not None and any("hosts healthy" in t for t in view.lines()),
                        what="the status to finish")
            text = screen_text(app)
            for host in ("itrust-1", "itrust-2", "itrust-3"):
                row = next((line for line in text.splitlines() if host in line), "")
                assert "service=" in row and "health=" in row, (host, text)
            assert "✘ status itrust" in text or "✔ status itrust" in text  # the outcome heads the view
            # Searchable: / narrows to the lines with the words, esc clears the search, esc again closes.
            await pilot.press("slash", *"itrust-2")
            await until(pilot, lambda: len(view.lines()) == 1, what="the search")
            assert "itrust-2" in view.lines()[0]
            await pilot.press("escape")
            await until(pilot, lambda: len(view.lines()) > 3, what="the search cleared")
            assert app.screen is view  # the view stays until the operator leaves it
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ResultScreen), what="back to the panes")
    finally:
        kill_services(tmp_path / "state")


async def test_run_output_reaches_the_screen_and_no_other_commands_output_mixes_in(tmp_path: Path) -> None:
    from opsconsole.ui.result_view import ResultScreen

    engine = fresh_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            # Another command's output while `run` runs must not land in run's view.
            engine.bus.emit(Message(text="unrelated line from elsewhere", level="info"))
            await pilot.press("colon", *"run itrust -- echo out-$((6*7))", "enter")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="run's dialog")
            await pilot.press("tab", "enter")  # Tab to the action button, Enter
            await until(pilot, lambda: isinstance(app.screen, ResultScreen), what="the result view")
            view = app.screen
            await until(pilot, lambda: view.outcome is not None, what="run to finish")
            await until(pilot, lambda: sum("| out-42" in t for t in view.lines()) == 3, what="every host's line")
            assert not any("unrelated" in t for t in view.lines())
    finally:
        kill_services(tmp_path / "state")


async def test_log_wrap_sticks_and_canary_refreshes_are_not_events(tmp_path: Path) -> None:
    from opsconsole.events import CanaryState

    engine = fresh_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            for n in range(3):  # what the proxy watch reports every second
                engine.bus.emit(CanaryState(app="itrust", split="request", configured_weight=0, effective_weight=0,
                                            requests=(("stable", n),), errors=(("stable", 0),)))
            engine.bus.emit(Message(text="a real event", level="info"))
            await until(pilot, lambda: any("a real event" in line.text for line in app.event_lines))
            assert not any("CanaryState" in line.text for line in app.event_lines)
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen))
            await pilot.press("w")
            await until(pilot, lambda: app.screen.query_one(LogView).wrap_lines, what="wrap on")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, EventLogScreen))
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen))
            await until(pilot, lambda: app.screen.query_one(LogView).is_mounted)
            assert app.screen.query_one(LogView).wrap_lines, "wrap was reset on reopening the log"
    finally:
        kill_services(tmp_path / "state")


async def test_enter_on_a_failed_build_shows_the_failing_command_and_exit_code(tmp_path: Path) -> None:
    from opsconsole.ui.result_view import ResultScreen
    from opsconsole.ui.testing import screen_text

    from failed_build import failed_build_engine

    engine = await failed_build_engine(tmp_path)
    [record] = engine.builds.records()
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("2", "enter")
            await until(pilot, lambda: isinstance(app.screen, ResultScreen), what="the build's log")
            view = app.screen
            await until(pilot, lambda: view.outcome is not None, what="the log to load")
            first = view.lines()[0]
            assert f"build {record.build_id} of {record.short} FAILED: `echo linking; exit 3` failed (exit code 3)" \
                in first, view.lines()[:3]
            assert any(line.endswith("| linking") for line in view.lines())  # the full log follows
            assert "FAILED: `echo linking; exit 3` failed (exit code 3)" in screen_text(app)
    finally:
        kill_services(tmp_path / "state")


async def test_k_in_the_event_log_filters_by_kind_of_event(tmp_path: Path) -> None:
    """Issue 15 item 3: the event log gets a filter for kinds of event (`k` cycles all → command → output …)."""
    from opsconsole.events import CommandFinished, OutputLine

    engine = fresh_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            engine.bus.emit(Message(text="rollout of itrust started", level="info"))
            engine.bus.emit(OutputLine(host="itrust-1", line="Linux itrust-1 6.1"))
            engine.bus.emit(CommandFinished(command_id="c1", text="run itrust -- uname", ok=True, message="3 hosts"))
            await until(pilot, lambda: len(app.event_lines) >= 3, what="the events")
            await pilot.press("3", "l")  # the heartbeat pane selects nothing: `l` is every event (a host: its own)
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen), what="the event log")
            log = app.screen.query_one(LogView)
            assert len(log.visible()) == 3
            await pilot.press("k")  # all → command
            await until(pilot, lambda: len(log.visible()) == 1, what="commands only")
            assert "run itrust -- uname" in log.visible()[0].text and "kind command" in log.border_title
            await pilot.press("k")  # → output
            await until(pilot, lambda: [line.key for line in log.visible()] == ["itrust-1"], what="output only")
            assert "Linux itrust-1 6.1" in log.visible()[0].text
            await pilot.press(*["k"] * 6)  # round to all again
            await until(pilot, lambda: len(log.visible()) == 3, what="every kind again")
            assert "kind all" in log.border_title
    finally:
        kill_services(tmp_path / "state")


async def test_events_while_a_screen_opens_or_closes_do_not_kill_the_console(tmp_path: Path) -> None:
    """Escape on the event log (or a host's detail) takes its widgets down while the screen is still on top
    for a moment; an event batch flushed then found no LogView and the console died (CI, test_tmux). Here
    the widgets are taken away by hand, the state the race leaves, and events keep coming."""
    engine = fresh_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            engine.bus.emit(Message(text="first", level="info"))
            await until(pilot, lambda: len(app.event_lines) >= 1, what="the first event")
            await pilot.press("3", "l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen), what="the event log")
            log_screen = app.screen
            await log_screen.query_one(LogView).remove()
            engine.bus.emit(Message(text="while closing", level="info"))
            await until(pilot, lambda: any(line.text.endswith("while closing") for line in app.event_lines),
                        what="the event flushed")
            assert app.is_running and app.screen is log_screen
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, EventLogScreen), what="back to the panes")

            await pilot.press("1", "enter")  # the fleet's selected host: its detail
            await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), what="a host's detail")
            detail = app.screen
            await detail.query_one("#host-summary").remove()
            engine.bus.emit(OutputLine(host=detail.host_name, line="while closing too"))
            await until(pilot, lambda: any(line.text.endswith("while closing too") for line in app.event_lines),
                        what="the host's event flushed")
            assert app.is_running and app.screen is detail
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HostDetailScreen), what="back to the panes")
    finally:
        kill_services(tmp_path / "state")
