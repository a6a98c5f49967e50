"""k9s-style actions on the selection (issue 15): `d` describes it, `l` shows its logs, Enter on a rollout
drills into its timeline. Real engine, real builds (a failing build step), the embedded proxy for the canary."""

from __future__ import annotations

from pathlib import Path

from conftest import kill_services, write_config
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Message, OutputLine, RolloutStep
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.describe import DescribeScreen
from opsconsole.ui.event_log import EventLogScreen
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.host_detail import HostDetailScreen
from opsconsole.ui.log_view import LogView
from opsconsole.ui.result_view import ResultScreen
from opsconsole.ui.testing import screen_text
from failed_build import failed_build_engine
from test_ui import make_engine, until
from test_ui_scope import two_app_config


async def test_d_on_a_build_describes_its_record_and_l_shows_its_log(tmp_path: Path) -> None:
    engine = await failed_build_engine(tmp_path)
    [record] = engine.builds.records()
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("2", "d")
            await until(pilot, lambda: isinstance(app.screen, DescribeScreen), what="the build's description")
            rows = dict(app.screen.rows)  # type: ignore[attr-defined]
            assert rows["build"] == record.build_id and rows["commit"] == record.commit
            assert rows["app"] == "itrust" and rows["state"] == "failed" and rows["exit code"] == "3"
            assert "`echo linking; exit 3` failed (exit code 3)" in rows["result"]
            assert rows["author"] == record.author and rows["message"] == record.subject
            assert rows["duration"].endswith("s") and "artifact" in rows and "sha256" in rows
            text = screen_text(app)
            assert record.build_id in text and "exit code  3" in text
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1, what="back to the panes")
            # `l` on the build: its build log, in the result view (not the event log of everything)
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, ResultScreen), what="the build's log")
            view = app.screen
            await until(pilot, lambda: view.outcome is not None, what="the log to load")
            assert view.command.text() == f"log build {record.build_id}"
            assert any(line.endswith("| linking") for line in view.lines())
    finally:
        kill_services(tmp_path / "state")


async def test_d_and_l_on_a_host_and_l_with_nothing_selected(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            fleet = app.query_one(FleetPane)
            await until(pilot, lambda: fleet.selected_host() == "itrust-1", what="the fleet's first host")
            engine.bus.emit(OutputLine(host="itrust-1", line="Linux itrust-1 6.1"))
            engine.bus.emit(OutputLine(host="itrust-2", line="Linux itrust-2 6.1"))
            engine.bus.emit(Message(text="rollout of itrust started", level="info"))
            await until(pilot, lambda: len(app.event_lines) >= 3, what="the events")
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), what="the host's detail")
            assert app.screen.host_name == "itrust-1"  # type: ignore[attr-defined]
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1)
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen), what="the host's log")
            log = app.screen.query_one(LogView)
            await until(pilot, lambda: len(log.visible()) == 1, what="only itrust-1's lines")
            assert "Linux itrust-1 6.1" in log.visible()[0].text and "Events of host itrust-1" in log.border_title
            engine.bus.emit(OutputLine(host="itrust-1", line="later on itrust-1"))
            engine.bus.emit(OutputLine(host="itrust-3", line="later on itrust-3"))
            await until(pilot, lambda: len(log.visible()) == 2, what="itrust-1's next line, live")
            assert "later on itrust-1" in log.visible()[1].text
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1)
            # The heartbeat pane has no selection: `d` is off (not in the footer, opens nothing), `l` is the event
            # log of everything.
            await pilot.press("3")
            await until(pilot, lambda: "describe" not in screen_text(app).splitlines()[-1], what="d leaving the footer")
            await pilot.press("d", "l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen), what="the event log")
            assert len(app.screen_stack) == 2, app.screen_stack  # `d` pushed nothing underneath
            assert len(app.screen.query_one(LogView).visible()) >= 5
    finally:
        kill_services(tmp_path / "state")


async def test_d_and_l_on_the_canary_pane_act_on_its_app(tmp_path: Path) -> None:
    from tests.test_zero_drop import start_proxy, stop

    cfg = two_app_config(tmp_path)
    engine = Engine(load_config(cfg))
    engine.prepare()
    proxy, _runtime = start_proxy(cfg, tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            engine.bus.emit(Message(text="canary checkbox weight 0 → 10", level="info"))
            engine.bus.emit(Message(text="rollout of itrust started", level="info"))
            await until(pilot, lambda: len(app.event_lines) >= 2, what="the events")
            await pilot.press("4", "d")
            await until(pilot, lambda: isinstance(app.screen, ResultScreen), what="the canary app's description")
            view = app.screen
            assert view.command.text() == "traffic checkbox"
            await until(pilot, lambda: view.outcome is not None, timeout=20, what="the proxy's answer")
            lines = "\n".join(view.lines())
            assert view.outcome.ok, lines
            # pools with their weights, members with their health, request counts
            assert "stable" in lines and "canary" in lines and "weight" in lines and "requests" in lines, lines
            assert "checkbox-canary-1" in lines and "checkbox-1" in lines, lines
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1)
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, EventLogScreen), what="the app's traffic events")
            shown = [line.text for line in app.screen.query_one(LogView).visible()]
            assert any("canary checkbox weight 0 → 10" in t for t in shown), shown
            assert all("checkbox" in t for t in shown), shown
    finally:
        stop(proxy)
        kill_services(tmp_path / "state")


async def test_enter_on_a_host_in_a_running_rollout_drills_into_its_timeline(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            fleet = app.query_one(FleetPane)
            await until(pilot, lambda: fleet.selected_host() == "itrust-1", what="the fleet's first host")
            emit = engine.bus.emit
            emit(RolloutStep(rollout_id="r-1", app="itrust", host=None, state="running", detail="3 hosts, 2 batches"))
            for host, state, detail in (("itrust-1", "draining", ""), ("itrust-1", "deploying", ""),
                                        ("itrust-1", "gating", ""), ("itrust-1", "done", ""),
                                        ("itrust-2", "draining", ""), ("itrust-2", "failed", "health gate: 503")):
                emit(RolloutStep(rollout_id="r-1", app="itrust", host=host, state=state, detail=detail, batch=1))
            await until(pilot, lambda: app.rollouts.running_for("itrust-1") == "r-1", what="the rollout's steps")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DescribeScreen), what="the rollout's timeline")
            rows = dict(app.screen.rows)  # type: ignore[attr-defined]
            assert rows["rollout"] == "r-1" and rows["app"] == "itrust" and rows["status"] == "running"
            assert rows["itrust-1"].startswith("[batch 1] "), rows
            assert [m.split()[-1] for m in rows["itrust-1"].split(" → ")] == ["draining", "deploying", "gating",
                                                                              "done"], rows
            assert rows["itrust-2"].endswith("failed (health gate: 503)"), rows
            # live: the rollout goes on while the timeline is open
            emit(RolloutStep(rollout_id="r-1", app="itrust", host="itrust-3", state="deploying", batch=2))
            await until(pilot, lambda: "itrust-3" in dict(app.screen.rows), what="the next host, live")
            assert "itrust-2" in screen_text(app) and "health gate: 503" in screen_text(app)
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1)
            # once the rollout is over, Enter on the host is its detail again
            emit(RolloutStep(rollout_id="r-1", app="itrust", host=None, state="failed", detail="itrust-2: 503"))
            await until(pilot, lambda: app.rollouts.running_for("itrust-1") is None)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), what="the host's detail")
    finally:
        kill_services(tmp_path / "state")


async def test_enter_the_moment_a_host_starts_deploying_opens_the_timeline(tmp_path: Path) -> None:
    """The fleet table reads the engine's host views as it paints, the timeline tracker reads the events a
    timer hands over: Enter pressed between the two (the row already says deploying) once opened the host's
    detail instead of the rollout (seen in CI). No flush here for a minute: Enter must not depend on one."""
    engine = make_engine(tmp_path)
    app = OpsConsoleApp(engine, flush_seconds=60)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            fleet = app.query_one(FleetPane)
            await until(pilot, lambda: fleet.selected_host() == "itrust-1", what="the fleet's first host")
            engine.bus.emit(RolloutStep(rollout_id="r-9", app="itrust", host=None, state="running"))
            engine.bus.emit(RolloutStep(rollout_id="r-9", app="itrust", host="itrust-1", state="deploying"))
            assert str(fleet.table.get_cell("itrust-1", "activity")) == "⟳ deploying"
            assert app.rollouts.running_for("itrust-1") is None  # the tracker has not been handed the events
            await pilot.press("enter")
            await until(pilot, lambda: len(app.screen_stack) == 2, what="a screen for the host")
            assert isinstance(app.screen, DescribeScreen), type(app.screen).__name__
            assert dict(app.screen.rows)["rollout"] == "r-9"  # type: ignore[attr-defined]
    finally:
        kill_services(tmp_path / "state")


async def test_apps_without_a_canary_take_one_short_line_in_the_canary_pane(tmp_path: Path) -> None:
    """Issue 15 item 10: apps that have no canary don't take space (at 80x24, many apps, no proxy)."""
    cfg = write_config(tmp_path)
    head, app_block = cfg.read_text().split("apps:\n", 1)
    names = ["itrust"] + [f"payments-service-{n}" for n in range(1, 9)]
    blocks = [app_block] + [app_block.replace("  itrust:\n", f"  {name}:\n", 1) for name in names[1:]]
    cfg.write_text(head + "apps:\n" + "".join(blocks))
    engine = Engine(load_config(cfg))
    engine.prepare()
    assert list(engine.config.apps) == names
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            body = app.query_one("#canary-body")
            await until(pilot, lambda: "no proxy configured: " in screen_text(app), what="the canary pane")
            await pilot.pause()
            # one line of the pane's 27 columns: the names do not fit, so it counts them
            rows = [row for row in screen_text(app).splitlines() if "no proxy configured" in row]
            assert len(rows) == 1 and "no proxy configured: 9 apps" in rows[0], rows
            assert "payments-service" not in screen_text(app)  # not wrapped onto the pane's rows
            assert str(body.render()).strip() == "no proxy configured: 9 apps"
        engine = Engine(load_config(cfg))
        engine.prepare()
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(200, 50)) as pilot:  # wide: the names that fit, then how many more
            body = app.query_one("#canary-body")
            await until(pilot, lambda: "no proxy configured: itrust, payments-service-1" in str(body.render()),
                        what="the names at 200 columns")
            line = str(body.render()).strip()
            assert "\n" not in line and line.endswith(" more") and len(line) <= body.size.width, line
    finally:
        kill_services(tmp_path / "state")


async def test_the_footer_shows_the_keys_that_act_on_the_focused_pane(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            fleet = app.query_one(FleetPane)
            await until(pilot, lambda: fleet.selected_host() == "itrust-1", what="the fleet's first host")

            def footer() -> str:
                return screen_text(app).splitlines()[-1]

            await until(pilot, lambda: "d describe" in footer(), what="the fleet's footer")
            assert "/ filter" in footer() and "q quit" in footer() and "l log" in footer(), footer()
            await pilot.press("3")  # the heartbeat log filters by host; it has no selection to describe
            await until(pilot, lambda: "describe" not in footer(), what="the heartbeat pane's footer")
            assert "/ filter" in footer() and "l log" in footer() and "q quit" in footer(), footer()
            await pilot.press("4")  # the canary pane, no app behind a proxy: nothing to filter or describe
            await until(pilot, lambda: "filter" not in footer(), what="the canary pane's footer")
            assert "describe" not in footer() and "l log" in footer() and "q quit" in footer(), footer()
            await pilot.press("2")  # the build queue: filter by app; no build yet, so nothing to describe
            await until(pilot, lambda: "/ filter" in footer(), what="the build queue's footer")
            assert "describe" not in footer(), footer()
            await pilot.press("1")
            await until(pilot, lambda: "d describe" in footer() and "/ filter" in footer(), what="the fleet again")
    finally:
        kill_services(tmp_path / "state")


async def test_enter_during_a_real_rollout_shows_its_timeline_live(tmp_path: Path) -> None:
    """The real engine rolls a local fleet (a slow task per host); Enter on the host being deployed opens the
    rollout's timeline, which follows the rollout to its end."""
    from test_ui_rollout import confirm, release, slow_engine, watch_fleet

    engine = slow_engine(tmp_path, count=2, pause=0.2, hold=("itrust-1",))
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            fleet = app.query_one(FleetPane)
            await confirm(pilot, app, "r")
            await watch_fleet(app, pilot, lambda: str(fleet.table.get_cell("itrust-1", "activity")) == "⟳ deploying",
                              timeout=90)
            assert fleet.selected_host() == "itrust-1"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DescribeScreen), what="the rollout's timeline")
            timeline = app.screen
            rows = dict(timeline.rows)  # type: ignore[attr-defined]
            assert rows["app"] == "itrust" and rows["status"] == "running", rows
            assert "deploying" in rows["itrust-1"] and "drain" in rows["itrust-1"], rows
            assert "Rollout " in screen_text(app) and "itrust-1" in screen_text(app)
            release(tmp_path)  # seen while it ran: now let it finish
            await until(pilot, lambda: dict(timeline.rows)["status"] == "succeeded", timeout=120,  # type: ignore[attr-defined]
                        what="the rollout's end, live on the timeline")
            rows = dict(timeline.rows)  # type: ignore[attr-defined]
            assert "deploying" in rows["itrust-2"], rows
            assert app.screen is timeline
    finally:
        release(tmp_path)
        kill_services(tmp_path / "state")
