"""Confirm dialogs say exactly what will happen (issue 15, items 6 and 7): the whole plan, a warning before
rolling a commit whose build failed, promote's version, hosts and batches. Real engine, real git, real builds."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import kill_services
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthSample
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.confirm import ConfirmScreen
from test_ui import make_engine, until
from test_ui_scope import scope_of, two_app_config


async def test_a_five_host_roll_dialog_lists_every_batch(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, count=5)
    try:
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the roll dialog")
            what = app.screen.what
            assert what.startswith("roll itrust: 5 hosts, 1 at a time"), what
            for i in range(1, 6):
                assert f"  batch {i}: itrust-{i} (none → " in what, what
            assert "more" not in what, what  # "… 3 more" hid part of what was being confirmed
            await pilot.press("n")
    finally:
        kill_services(tmp_path / "state")


async def test_r_on_a_commit_whose_build_failed_warns_and_names_the_failure(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    cfg = engine.config.file
    cfg.write_text(cfg.read_text().replace("commands: [sh build.sh]", "commands: [\"sh -c 'echo broken; exit 3'\"]"))
    engine = Engine(load_config(cfg))
    try:
        outcome = await engine.execute(engine.parse("build itrust"))
        assert not outcome.ok, outcome
        [failed] = [r for r in engine.builds.records() if r.status == "failed"]
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the roll dialog")
            what = app.screen.what
            assert f"⚠ build {failed.build_id} of {failed.short} failed" in what, what
            assert f"`log build {failed.build_id}` shows why" in what, what
            await pilot.press("n")
    finally:
        kill_services(tmp_path / "state")


async def test_promote_dialog_names_the_version_the_hosts_and_the_batches(tmp_path: Path) -> None:
    engine = Engine(load_config(two_app_config(tmp_path)))
    engine.prepare()
    try:
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(100, 40)) as pilot:
            # What the heartbeat would report: the canary runs 1a2b3c4, stable still 0f0f0f0.
            for host, version in (("checkbox-canary-1", "1a2b3c4"), ("checkbox-1", "0f0f0f0"), ("checkbox-2", "0f0f0f0")):
                engine.bus.emit(HealthSample(host=host, ok=True, status=200, latency=0.002, version=version,
                                             at=time.time()))
            await until(pilot, lambda: engine.views["checkbox-canary-1"].version == "1a2b3c4", what="the versions")
            await pilot.press("4")
            await until(pilot, lambda: scope_of(app) == ("checkbox", "canary pane"))
            await pilot.press("p")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the promote dialog")
            what = app.screen.what
            assert what.startswith("canary checkbox promote: 1a2b3c4 (the canary's, on checkbox-canary-1) is rolled "
                                   "out to the stable pool (2 hosts)"), what
            assert "  batch 1: checkbox-1 (0f0f0f0 → 1a2b3c4)" in what, what
            assert "  batch 2: checkbox-2 (0f0f0f0 → 1a2b3c4)" in what, what
            await pilot.press("n")
    finally:
        kill_services(tmp_path / "state")


async def test_build_ids_complete_at_the_command_line(tmp_path: Path) -> None:
    """Issue 15 item 6: you typed `log build itrust-20261201-201434-0c00` by hand. Tab completes it now."""
    from opsconsole.ui.command_line import CommandLine

    engine = make_engine(tmp_path)
    try:
        assert (await engine.execute(engine.parse("build itrust"))).ok
        [build] = engine.builds.records()
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("colon", *"log b", "tab")
            line = app.query_one(CommandLine)
            assert line.value == "log build "
            await pilot.press("tab")
            assert line.value == f"log build {build.build_id} "
            await pilot.press("enter")
            await until(pilot, lambda: any(e["kind"] == "command.end" and e["command"] == f"log build {build.build_id}"
                                           for e in engine.journal.entries()), what="the log to show")
    finally:
        kill_services(tmp_path / "state")
