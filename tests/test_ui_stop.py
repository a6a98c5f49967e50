"""A path forward after a stop (issue 15, item 4): after `a`, the status line says what is left, `r` plans only
the hosts not yet on the target, and `roll resume` finishes the aborted rollout. Real local fleet, real build."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from opsconsole.rollouts.record import DONE
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.testing import screen_text
from test_ui import until
from test_ui_rollout import SIZE, confirm, ended, fleet_dir, release, slow_engine, watch_fleet  # noqa: F401 (fixture)


async def roll_until_second_host_deploys(pilot, app: OpsConsoleApp, engine) -> str:
    """`r` + confirm, then wait until itrust-1 is done and itrust-2 is deploying; the version rolled."""
    what = await confirm(pilot, app, "r")
    fleet = app.query_one(FleetPane)

    def first_done_second_deploying() -> bool:
        state = engine.rollouts.journal.latest("itrust")
        return (state is not None and state.hosts.get("itrust-1") == DONE
                and str(fleet.table.get_cell("itrust-2", "activity")) == "⟳ deploying")

    await watch_fleet(app, pilot, first_done_second_deploying, timeout=90)
    return what.split("version ")[1].split()[0]


async def test_after_abort_roll_plans_only_hosts_left_and_resume_finishes(fleet_dir: Path) -> None:
    engine = slow_engine(fleet_dir, count=3, pause=0.2, hold=("itrust-2",))
    app = OpsConsoleApp(engine)
    async with app.run_test(size=(170, 30)) as pilot:
        version = await roll_until_second_host_deploys(pilot, app, engine)
        fleet = app.query_one(FleetPane)
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
        release(fleet_dir)  # the resumed deploys go straight on
        what = await confirm(pilot, app, "colon", *"roll resume itrust", "enter")
        assert "was aborted" in what and "2 hosts left: itrust-2, itrust-3" in what, what
        # The plan of what is left, batch by batch (issue 15 item 7: resume showed no plan).
        assert f"  batch 1: itrust-2 (none → {version})\n  batch 2: itrust-3 (none → {version})" in what, what
        await watch_fleet(app, pilot, lambda: bool(ended(engine, "roll resume itrust")), timeout=120)
        [end] = ended(engine, "roll resume itrust")
        assert end["ok"], end
        assert engine.rollouts.journal.latest("itrust").hosts == {h: DONE for h in ("itrust-1", "itrust-2", "itrust-3")}
        await until(pilot, lambda: all(engine.views[h].version == version for h in ("itrust-1", "itrust-2", "itrust-3")),
                    what="every host on the version")


async def test_quit_during_a_rollout_says_per_host_what_happens_and_leaves_it_resumable(fleet_dir: Path) -> None:
    """Issue 15 item 9: the dialog said "Quitting cancels it", yet a host ended up on the new version, and the
    screen went blank with no summary. Now the dialog says per host what quitting does, and the summary printed
    after the console closes says what it did, probing the host the stop caught."""
    engine = slow_engine(fleet_dir, count=3, pause=0.2, hold=("itrust-2",))
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        version = await roll_until_second_host_deploys(pilot, app, engine)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit dialog")
        what = app.screen.what
        assert "roll itrust is running" in what, what
        assert f"done, stay on {version}: itrust-1" in what, what
        assert "stopped where they are, drained, not rolled back: itrust-2" in what, what
        assert "never reached, left untouched: itrust-3" in what, what
        assert "`roll resume itrust` finishes it" in what, what
        await pilot.press("y")
        # The app stops its own message loop on the way out, so poll without the pilot.
        deadline = time.monotonic() + 60
        while app.return_code is None:
            assert time.monotonic() < deadline, "the console did not close"
            await asyncio.sleep(0.05)
    summary = "\n".join(app.exit_summary)
    assert summary.startswith("opsconsole: quit while work ran; stopped: roll itrust"), summary
    assert "roll itrust to " + version + ": aborted" in summary, summary
    assert f"  itrust-1: done, on {version}" in summary, summary
    # The caught host is asked what it runs: whatever the stop left, the summary says it, not a promise.
    assert "  itrust-2: stopped while deploying, left drained; " in summary, summary
    assert "  itrust-3: untouched (still no version)" in summary, summary
    assert "`roll resume itrust` finishes" in summary, summary
    state = engine.rollouts.journal.latest("itrust")
    assert state.resumable and state.hosts["itrust-3"] == "pending"
    assert not (fleet_dir / "state" / "hosts" / "itrust-3" / "releases").exists()
