"""A path forward after a stop (issue 15, item 4): after `a`, the status line says what is left, `r` plans only
the hosts not yet on the target, and `roll resume` finishes the aborted rollout. Real local fleet, real build."""

from __future__ import annotations

from pathlib import Path

from opsconsole.rollouts.record import DONE
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.testing import screen_text
from test_ui import until
from test_ui_rollout import SIZE, confirm, ended, fleet_dir, slow_engine, watch_fleet  # noqa: F401 (fixture)


async def test_after_abort_roll_plans_only_hosts_left_and_resume_finishes(fleet_dir: Path) -> None:
    engine = slow_engine(fleet_dir, count=3, pause=1.5)
    app = OpsConsoleApp(engine)
    async with app.run_test(size=(170, 30)) as pilot:
        what = await confirm(pilot, app, "r")
        version = what.split("version ")[1].split()[0]
        fleet = app.query_one(FleetPane)

        def first_done_second_deploying() -> bool:
            state = engine.rollouts.journal.latest("itrust")
            return (state is not None and state.hosts.get("itrust-1") == DONE
                    and str(fleet.table.get_cell("itrust-2", "activity")) == "⟳ deploying")

        await watch_fleet(app, pilot, first_done_second_deploying, timeout=90)
        await confirm(pilot, app, "a")
        seen = await watch_fleet(app, pilot, lambda: bool(ended(engine, "roll itrust")), timeout=60)
        # The host the abort caught mid-deploy is not FAILED: nothing failed on it; it says it was stopped.
        await until(pilot, lambda: str(fleet.table.get_cell("itrust-2", "activity")) == "■ aborted",
                    what="itrust-2 shown aborted")
        assert all("✘ FAILED" not in states for states in seen.values()), seen
        # The status line names what is left and the command that finishes it.
        await until(pilot, lambda: "`roll resume itrust` finishes" in screen_text(app), what="the way on")
        assert f"2 host(s) of itrust not on {version} (itrust-2, itrust-3)" in screen_text(app)

        # `r` now plans only the hosts not yet on the target, and says which it leaves alone.
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the roll dialog")
        what = app.screen.what
        assert what.startswith(f"roll itrust: 2 hosts, 1 at a time, version {version}"), what
        assert f"itrust-1 left alone: already on {version}" in what, what
        assert "itrust-1 (" not in what  # no batch re-deploys it
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))

        # `roll resume` works on the aborted rollout and finishes it.
        what = await confirm(pilot, app, "colon", *"roll resume itrust", "enter")
        assert "was aborted" in what and "2 hosts left: itrust-2, itrust-3" in what, what
        await watch_fleet(app, pilot, lambda: bool(ended(engine, "roll resume itrust")), timeout=120)
        [end] = ended(engine, "roll resume itrust")
        assert end["ok"], end
        assert engine.rollouts.journal.latest("itrust").hosts == {h: DONE for h in ("itrust-1", "itrust-2", "itrust-3")}
        await until(pilot, lambda: all(engine.views[h].version == version for h in ("itrust-1", "itrust-2", "itrust-3")),
                    what="every host on the version")
