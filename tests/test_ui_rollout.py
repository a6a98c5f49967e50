"""End to end through the console: `r` + confirm rolls the real local fleet; `a` + confirm stops it.

Real engine, real local hosts (directories + processes), real build of the demo
repo, real playbook and health checks. The only thing added is a slow task in
the playbook so that a rollout takes long enough per host to be watched and aborted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import PLAYBOOKS, kill_services, write_config
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.fleet import FleetPane

SIZE = (100, 30)


def slow_engine(tmp_path: Path, count: int, pause: float, hold: tuple[str, ...] = ()) -> Engine:
    """An engine over a local fleet whose deploy takes `pause` seconds more per host. The hosts in `hold`
    then wait for `release(tmp_path)` (at most 120 s): a test that acts while such a host deploys (abort,
    quit, a look at the timeline) has all the time it needs, not a window a busy CI worker may miss."""
    (tmp_path / "templates").symlink_to(PLAYBOOKS / "templates")
    playbook = tmp_path / "slow-deploy.yml"
    text = (PLAYBOOKS / "itrust-deploy.yml").read_text()
    slow = f"    - name: take a while\n      shell: sleep {pause}\n\n"
    if hold:
        gate = tmp_path / "gate"
        slow += ("    - name: wait for the test\n"
                 f"      shell: i=0; while [ ! -e {gate} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done\n"
                 f"      when: inventory_hostname in {list(hold)}\n\n")
    slow += "    - name: release directory\n"
    playbook.write_text(text.replace("    - name: release directory\n", slow, 1))
    cfg = write_config(tmp_path, count=count)
    cfg.write_text(cfg.read_text().replace(str(PLAYBOOKS / "itrust-deploy.yml"), str(playbook)))
    engine = Engine(load_config(cfg))
    engine.prepare()
    return engine


def release(tmp_path: Path) -> None:
    """Let the hosts `slow_engine` holds go on."""
    (tmp_path / "gate").touch()


def ended(engine: Engine, text: str) -> list[dict]:
    return [e for e in engine.journal.entries() if e["kind"] == "command.end" and e["command"].startswith(text)]


async def watch_fleet(app: OpsConsoleApp, pilot, until, timeout: float) -> dict[str, list[str]]:
    """Poll the fleet table's `now` cells until `until()`; returns each host's activities in the order seen."""
    fleet = app.query_one(FleetPane)
    seen: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out; fleet showed {seen}"
        for name in fleet.shown_hosts():
            activity = str(fleet.table.get_cell(name, "activity"))
            if not seen.get(name) or seen[name][-1] != activity:
                seen.setdefault(name, []).append(activity)
        await pilot.pause(0.05)
    return seen


async def confirm(pilot, app: OpsConsoleApp, *keys: str) -> str:
    """Press `keys`, wait for the confirm dialog, confirm; the dialog's text."""
    await pilot.press(*keys)
    for _ in range(100):
        if isinstance(app.screen, ConfirmScreen):
            break
        await pilot.pause(0.05)
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    what = screen.what
    await pilot.press("right", "enter")  # focus starts on Cancel: move to the action on purpose
    return what


@pytest.fixture
def fleet_dir(tmp_path: Path):
    yield tmp_path
    release(tmp_path)  # a held deploy nobody stopped ends now, not in 120 s
    kill_services(tmp_path / "state")


async def test_r_and_confirm_rolls_every_host_to_the_new_version(fleet_dir: Path) -> None:
    engine = slow_engine(fleet_dir, count=3, pause=1.0)
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        what = await confirm(pilot, app, "r")
        assert what.startswith("roll itrust: 3 hosts, 1 at a time, version ")
        version = what.split("version ")[1].split()[0]
        fleet = app.query_one(FleetPane)
        hosts = ("itrust-1", "itrust-2", "itrust-3")
        seen = await watch_fleet(app, pilot, lambda: bool(ended(engine, "roll itrust")) and all(
            [str(c) for c in fleet.table.get_row(h)][3:5] == [version, "· idle"] for h in hosts), timeout=120)
        [end] = ended(engine, "roll itrust")
        assert end["ok"], end
        for name in hosts:
            assert "⟳ deploying" in seen[name], seen
        # Health follows from the heartbeat monitor: give it a cycle to see the restarted services.
        for _ in range(60):
            if all(str(fleet.table.get_cell(h, "health")) == "✔ up" for h in ("itrust-1", "itrust-2", "itrust-3")):
                break
            await pilot.pause(0.1)
        assert [str(fleet.table.get_cell(h, "health")) for h in ("itrust-1", "itrust-2", "itrust-3")] == ["✔ up"] * 3
        # Keyed, confirmed, and journaled in the grammar `--script` replays.
        assert [e["command"] for e in engine.journal.entries() if e["kind"] == "command.start"] == ["roll itrust"]


async def test_a_and_confirm_aborts_and_later_hosts_stay_untouched(fleet_dir: Path) -> None:
    engine = slow_engine(fleet_dir, count=3, pause=0.2, hold=("itrust-1",))
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await confirm(pilot, app, "r")
        fleet = app.query_one(FleetPane)
        await watch_fleet(app, pilot, lambda: str(fleet.table.get_cell("itrust-1", "activity")) == "⟳ deploying",
                          timeout=90)
        what = await confirm(pilot, app, "a")
        assert what.startswith("abort roll itrust")
        seen = await watch_fleet(app, pilot, lambda: bool(ended(engine, "roll itrust")), timeout=60)
        [end] = ended(engine, "roll itrust")
        assert not end["ok"]
        assert "⟳ deploying" not in seen.get("itrust-3", []), seen  # the rollout is over: it never will
        assert engine.views["itrust-3"].version is None
        assert not (fleet_dir / "state" / "hosts" / "itrust-3" / "releases").exists()
        commands = [e["command"] for e in engine.journal.entries() if e["kind"] == "command.start"]
        assert commands == ["roll itrust", "abort"]


async def test_a_during_roll_resume_aborts_it(fleet_dir: Path) -> None:
    """A rollout left interrupted by a dead console is resumed from the console; `a` aborts the resume."""
    from opsconsole.rollouts.plan import make_plan

    engine = slow_engine(fleet_dir, count=2, pause=0.2, hold=("itrust-1",))
    assert (await engine.execute(engine.parse("build itrust"))).ok
    record = engine.builds.records()[-1]
    plan = make_plan("itrust", ["itrust-1", "itrust-2"], version=record.short, commit=record.commit,
                     artifact=record.artifact or "")
    journal = engine.rollouts.journal  # what a console killed while deploying itrust-1 leaves behind
    journal.begin(plan, "alice@elsewhere")
    journal.write(plan.rollout_id, "status", status="running", detail=plan.summary())
    journal.write(plan.rollout_id, "host", host="itrust-1", state="deploying", reason="", batch=1)
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        what = await confirm(pilot, app, "colon", *"roll resume itrust", "enter")
        assert what.startswith(f"roll resume itrust: rollout {plan.rollout_id} to {record.short}"), what
        fleet = app.query_one(FleetPane)
        await watch_fleet(app, pilot, lambda: str(fleet.table.get_cell("itrust-1", "activity")) == "⟳ deploying",
                          timeout=60)
        what = await confirm(pilot, app, "a")
        assert what.startswith("abort roll resume itrust"), what
        await watch_fleet(app, pilot, lambda: bool(ended(engine, "roll resume itrust")), timeout=60)
        [end] = ended(engine, "roll resume itrust")
        assert not end["ok"] and end["message"] == "aborted", end
        assert [e["command"] for e in ended(engine, "abort")] == ["abort"]
        assert engine.rollouts.journal.latest("itrust").hosts["itrust-2"] == "pending"
