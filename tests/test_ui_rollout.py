"""End to end through the console: `r` + confirm rolls the real local fleet; `a` + confirm stops it.

Real engine, real local hosts (directories + processes), real build of the demo
repo, real playbook and health checks. The only thing added is a slow task in
the playbook so that a rollout takes long enough per host to be watched and aborted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conftest import PLAYBOOKS, kill_services, write_config
from opsconsole.config import load_config
from opsconsole.engine import Engine
from opsconsole.engine.commands import verbs
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.fleet import FleetPane

SIZE = (100, 30)
ROLL = "roll" if "roll" in verbs() else "deploy"


def slow_engine(tmp_path: Path, count: int, pause: float) -> Engine:
    (tmp_path / "templates").symlink_to(PLAYBOOKS / "templates")
    playbook = tmp_path / "slow-deploy.yml"
    text = (PLAYBOOKS / "itrust-deploy.yml").read_text()
    slow = f"    - name: take a while\n      shell: sleep {pause}\n\n    - name: release directory\n"
    playbook.write_text(text.replace("    - name: release directory\n", slow, 1))
    cfg = write_config(tmp_path, count=count)
    cfg.write_text(cfg.read_text().replace(str(PLAYBOOKS / "itrust-deploy.yml"), str(playbook)))
    engine = Engine(load_config(cfg))
    engine.prepare()
    return engine


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


async def confirm(pilot, app: OpsConsoleApp, key: str) -> str:
    await pilot.press(key)
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
    kill_services(tmp_path / "state")


async def test_r_and_confirm_rolls_every_host_to_the_new_version(fleet_dir: Path) -> None:
    engine = slow_engine(fleet_dir, count=3, pause=1.0)
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        what = await confirm(pilot, app, "r")
        assert what.startswith(f"{ROLL} itrust: 3 hosts, 1 at a time, version ")
        version = what.split("version ")[1].split()[0]
        seen = await watch_fleet(app, pilot, lambda: bool(ended(engine, f"{ROLL} itrust")), timeout=120)
        await pilot.pause(app.query_one(FleetPane).refresh_seconds + 0.2)
        [end] = ended(engine, f"{ROLL} itrust")
        assert end["ok"], end
        fleet = app.query_one(FleetPane)
        for name in ("itrust-1", "itrust-2", "itrust-3"):
            assert "⟳ deploying" in seen[name], seen
            row = [str(cell) for cell in fleet.table.get_row(name)]
            assert row[3] == version and row[4] == "· idle", row
        # Health follows from the heartbeat monitor: give it a cycle to see the restarted services.
        for _ in range(60):
            if all(str(fleet.table.get_cell(h, "health")) == "✔ up" for h in ("itrust-1", "itrust-2", "itrust-3")):
                break
            await pilot.pause(0.1)
        assert [str(fleet.table.get_cell(h, "health")) for h in ("itrust-1", "itrust-2", "itrust-3")] == ["✔ up"] * 3
        # Keyed, confirmed, and journaled in the grammar `--script` replays.
        assert [e["command"] for e in engine.journal.entries() if e["kind"] == "command.start"] == [f"{ROLL} itrust"]


async def test_a_and_confirm_aborts_and_later_hosts_stay_untouched(fleet_dir: Path) -> None:
    engine = slow_engine(fleet_dir, count=3, pause=3.0)
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await confirm(pilot, app, "r")
        fleet = app.query_one(FleetPane)
        await watch_fleet(app, pilot, lambda: str(fleet.table.get_cell("itrust-1", "activity")) == "⟳ deploying",
                          timeout=90)
        what = await confirm(pilot, app, "a")
        assert what.startswith(f"abort {ROLL} itrust")
        seen = await watch_fleet(app, pilot, lambda: bool(ended(engine, f"{ROLL} itrust")), timeout=60)
        [end] = ended(engine, f"{ROLL} itrust")
        assert not end["ok"]
        await asyncio.sleep(0.2)
        assert "⟳ deploying" not in seen.get("itrust-3", []), seen
        assert engine.views["itrust-3"].version is None
        assert not (fleet_dir / "state" / "hosts" / "itrust-3" / "releases").exists()
        commands = [e["command"] for e in engine.journal.entries() if e["kind"] == "command.start"]
        assert commands == [f"{ROLL} itrust", "abort"]
