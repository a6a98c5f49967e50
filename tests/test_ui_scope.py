"""Keys act on what you see (issue 15, item 1): the scope header, the canary pane's selection, Home/End.

A real config with two apps: itrust (no proxy in front) and checkbox (behind the proxy, with a canary).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import kill_services, write_config, write_secret
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.canary import CanaryPane
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.status_line import StatusLine
from opsconsole.ui.testing import screen_text
from test_ui import journal_commands, until

SIZE = (80, 24)


def two_app_config(tmp: Path, *, count: int = 3, confirm_steps: bool = True) -> Path:
    """itrust on its own; checkbox with a stable pool of 2 and a canary of 1 behind the embedded proxy.

    `confirm_steps`: +/- ask first (these tests read their dialogs); the product's default is not to ask."""
    write_secret(tmp / "token", "t" * 32 + "\n")
    cfg = write_config(tmp, count=count)
    head, apps = cfg.read_text().split("apps:\n", 1)
    groups = ("  checkbox:\n    provider: local\n    role: app\n    count: 2\n"
              "  checkbox-canary:\n    provider: local\n    role: canary\n    count: 1\n")
    checkbox = apps.split("\n", 1)[1].replace("group: itrust", "group: checkbox").replace(
        str(tmp / "repo"), str(tmp / "checkbox-repo"))
    proxy = f"""proxy:
  driver: embedded
  admin: {{listen: "unix:{tmp / 'admin.sock'}", token_file: {tmp / 'token'}}}
  runtime_file: {tmp / 'proxy.json'}
  apps:
    checkbox:
      listen: 127.0.0.1:0
      pools:
        stable: {{group: checkbox, weight: 100}}
        canary: {{group: checkbox-canary, weight: 0}}
      health: {{path: /health, interval: 200ms, timeout: 500ms, fall: 2, rise: 1}}
"""
    canary = f"canary:\n  confirm_steps: {'true' if confirm_steps else 'false'}\n"
    cfg.write_text(head + groups + "apps:\n" + apps + "  checkbox:\n" + checkbox + canary + proxy)  # proxy: last
    return cfg


@pytest.fixture
def engine(tmp_path: Path):
    engine = Engine(load_config(two_app_config(tmp_path)))
    engine.prepare()
    yield engine
    kill_services(tmp_path / "state")


def scope_of(app: OpsConsoleApp) -> tuple[str | None, str]:
    return app.query_one(StatusLine).scope


async def test_plus_in_the_canary_pane_acts_on_its_app_not_the_fleets(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: fleet.selected_host() is not None, what="the fleet's first row")
        while fleet.selected_host() != "itrust-1":  # hosts sort by name: checkbox-… come first
            await pilot.press("down")
        # The header names the app the keys act on, and whose selection chose it.
        await until(pilot, lambda: scope_of(app) == ("itrust", "itrust-1"), what="the fleet's scope")
        assert " itrust  itrust-1 │" in screen_text(app)
        await pilot.press("4")
        await until(pilot, lambda: scope_of(app) == ("checkbox", "canary pane"), what="the canary pane's scope")
        text = screen_text(app)
        assert " checkbox  canary pane │" in text and "▶ checkbox" in text
        # itrust has no canary: one line says so instead of a block of its own.
        assert "not behind the proxy: itrust" in text
        await pilot.press("plus")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the canary dialog")
        assert app.screen.what.endswith("command: canary checkbox weight 10"), app.screen.what
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        # Back in the fleet on an itrust host, + names why nothing runs instead of proposing a doomed command.
        await pilot.press("1")
        await until(pilot, lambda: scope_of(app) == ("itrust", "itrust-1"))
        await pilot.press("plus")
        await until(pilot, lambda: "app itrust has no canary" in screen_text(app), what="the refusal")
        assert not isinstance(app.screen, ConfirmScreen)
    assert journal_commands(engine) == []


async def test_canary_pane_selection_moves_between_apps_behind_the_proxy(tmp_path: Path) -> None:
    cfg = two_app_config(tmp_path)
    # a second app behind the proxy: the pane's selection must be able to reach it
    text = cfg.read_text().replace("      health: {path: /health, interval: 200ms",
                                   "      health: {path: /health, interval: 200ms", 1)
    text = text.rstrip("\n") + "\n    itrust:\n      listen: 127.0.0.1:0\n      pools:\n        stable: {group: itrust, weight: 100}\n"
    cfg.write_text(text)
    engine = Engine(load_config(cfg))
    engine.prepare()
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            canary = app.query_one(CanaryPane)
            await pilot.press("4")
            await until(pilot, lambda: scope_of(app) == ("itrust", "canary pane"), what="the first app behind the proxy")
            await pilot.press("down")
            await until(pilot, lambda: scope_of(app) == ("checkbox", "canary pane"), what="the next app")
            assert canary.selected == "checkbox" and "▶ checkbox" in screen_text(app)
            await pilot.press("up")
            await until(pilot, lambda: scope_of(app) == ("itrust", "canary pane"))
    finally:
        kill_services(tmp_path / "state")


async def test_home_and_end_move_the_fleet_cursor(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: fleet.selected_host() is not None)
        await pilot.press("end")
        await until(pilot, lambda: fleet.selected_host() == fleet.shown_hosts()[-1], what="End to the last host")
        await until(pilot, lambda: scope_of(app) == ("itrust", fleet.shown_hosts()[-1]), what="the scope following")
        await pilot.press("home")
        await until(pilot, lambda: fleet.selected_host() == fleet.shown_hosts()[0], what="Home to the first host")
        await until(pilot, lambda: scope_of(app) == ("checkbox", "checkbox-1"), what="the scope following")
        await pilot.press("down", "down")  # a canary host is its app's too, not the first app's
        await until(pilot, lambda: scope_of(app) == ("checkbox", "checkbox-canary-1"), what="the canary host's app")


async def test_minus_dialog_shows_weights_before_and_after_and_y_confirms(tmp_path: Path) -> None:
    """With the real embedded proxy: `-` says 80/20 → 90/10, `y` runs it, and the result reads before → after."""
    from tests.test_zero_drop import start_proxy

    cfg = two_app_config(tmp_path)
    engine = Engine(load_config(cfg))
    engine.prepare()
    proxy, _runtime = start_proxy(cfg, tmp_path)
    try:
        assert (await engine.execute(engine.parse("canary checkbox weight 20"))).ok
        app = OpsConsoleApp(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: scope_of(app) == ("checkbox", "canary pane"))
            await pilot.press("minus")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the dialog of -")
            assert app.screen.what.startswith("canary checkbox: stable/canary 80/20 → 90/10"), app.screen.what
            await pilot.press("y")  # no Tab, no Enter: y answers
            await until(pilot, lambda: any(e["kind"] == "command.end" and e["command"] == "canary checkbox weight 10"
                                           for e in engine.journal.entries()), what="the weight change to end")
        [end] = [e for e in engine.journal.entries()
                 if e["kind"] == "command.end" and e["command"] == "canary checkbox weight 10"]
        assert end["ok"] and end["message"].startswith("stable/canary 80/20 → 90/10"), end
        assert "%→" not in end["message"]  # configured→effective no longer reads as before→after
    finally:
        proxy.terminate()
        proxy.wait(10)
        kill_services(tmp_path / "state")


async def test_esc_on_a_filtered_table_clears_the_filter(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: fleet.selected_host() is not None)
        await pilot.press("slash", *"itrust-2", "enter")  # enter keeps the filter and gives the keys back
        await until(pilot, lambda: fleet.shown_hosts() == ["itrust-2"] and app.focused is fleet.table,
                    what="the filtered fleet")
        await pilot.press("escape")
        await until(pilot, lambda: len(fleet.shown_hosts()) == 6 and fleet.filter_text == "", what="the filter cleared")
        assert fleet.table.row_count == 6 and app.focused is fleet.table


async def test_small_canary_steps_need_no_confirm_but_0_still_asks(tmp_path: Path) -> None:
    """Issue 15 item 7: confirming every 10% step slowed steering down. By default `-` runs at once (the
    status line says before → after); `0` (all to stable) still asks. Real embedded proxy."""
    from tests.test_zero_drop import start_proxy

    cfg = two_app_config(tmp_path, confirm_steps=False)
    engine = Engine(load_config(cfg))
    engine.prepare()
    proxy, _runtime = start_proxy(cfg, tmp_path)
    try:
        assert (await engine.execute(engine.parse("canary checkbox weight 20"))).ok
        app = OpsConsoleApp(engine)
        dialogs: list[str] = []
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: scope_of(app) == ("checkbox", "canary pane"))
            await pilot.press("minus")
            while not any(e["kind"] == "command.end" and e["command"] == "canary checkbox weight 10"
                          for e in engine.journal.entries()):
                if isinstance(app.screen, ConfirmScreen):
                    dialogs.append(app.screen.what)
                    break
                await pilot.pause(0.02)
            assert dialogs == [], dialogs
            assert await engine.traffic.canary_weight("checkbox") == 10
            await pilot.press("0")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the dialog of 0")
            assert app.screen.what.startswith("canary checkbox: stable/canary 90/10 → 100/0"), app.screen.what
            await pilot.press("n")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert await engine.traffic.canary_weight("checkbox") == 10
    finally:
        proxy.terminate()
        proxy.wait(10)
        kill_services(tmp_path / "state")
