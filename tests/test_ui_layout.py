"""Layout at 80x24 (issue 15, item 10): nothing lost silently. The fleet says which columns are cut off and
`z` zooms a pane to the whole screen; toasts leave the status line readable; the footer shows the keys of
the focused pane (+ - 0 p in the canary pane)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import kill_services
from opsconsole.engine.engine import Engine
from opsconsole.events import CommandFinished
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.testing import screen_text
from test_ui import make_engine, until

SIZE = (80, 24)


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(tmp_path)
    yield engine
    kill_services(tmp_path / "state")


async def test_cut_columns_are_marked_and_z_zooms_the_fleet(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: fleet.hidden_columns() != [], what="the fleet laid out")
        assert fleet.hidden_columns() == ["now", "group/role", "address"]
        await until(pilot, lambda: "+3 cols → z" in fleet.border_subtitle, what="the marker")
        assert "group/role" not in screen_text(app)
        await pilot.press("z")
        await until(pilot, lambda: "group/role" in screen_text(app), what="the zoomed fleet")
        text = screen_text(app)
        assert "Heartbeat log (3)" not in text and "Build queue (2)" not in text
        assert "itrust/app" in text and "· idle" in text
        await pilot.press("z")
        await until(pilot, lambda: "Heartbeat log (3)" in screen_text(app), what="the grid back")


async def test_toasts_leave_the_status_line_visible(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        engine.bus.emit(CommandFinished(command_id="x", text="deploy itrust", ok=False, message="itrust-2: exit code 1"))
        # The toast shows at the top of the screen …
        await until(pilot, lambda: any("▌ ✘ deploy itrust" in line for line in screen_text(app).splitlines()[:6]),
                    what="the toast at the top")
        # … and the status line, where the eye goes after a key, stays readable under it.
        status = screen_text(app).splitlines()[-2]
        assert "✘ deploy itrust" in status and "itrust-2: exit code 1" in status, status


async def test_the_footer_shows_the_canary_keys_in_the_canary_pane(tmp_path: Path) -> None:
    from tests.test_zero_drop import proxy_section

    engine = make_engine(tmp_path, extra=proxy_section(tmp_path))
    try:
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            footer = screen_text(app).splitlines()[-1]
            assert "canary+" not in footer, footer
            await pilot.press("4")
            await until(pilot, lambda: "canary+" in screen_text(app).splitlines()[-1], what="the canary keys")
            footer = screen_text(app).splitlines()[-1]
            assert "+ canary+" in footer and "- canary-" in footer and "0 stable" in footer and "p promote" in footer
    finally:
        kill_services(tmp_path / "state")
