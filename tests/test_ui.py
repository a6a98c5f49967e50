"""Pilot tests of the console: keys in, widget state and the engine's journal out.

These drive the real engine on a real config (no fakes); events are emitted on
the real bus where a test needs a state the local fleet would take long to reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Button

from conftest import kill_services, write_config
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.engine.commands import Names, verbs
from opsconsole.events import CommandFinished, HealthSample, HostState, OutputLine
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.bindings import KEYS
from opsconsole.ui.command_line import CommandLine, complete
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.heartbeat import HeartbeatPane
from opsconsole.ui.help import HelpScreen
from opsconsole.ui.history import LINES
from opsconsole.ui.host_detail import HostDetailScreen
from opsconsole.ui.log_view import LogLine
from opsconsole.ui.testing import screen_text

SIZE = (80, 24)


def make_engine(tmp_path: Path, *, count: int = 3, extra: str = "") -> Engine:
    engine = Engine(load_config(write_config(tmp_path, count=count, extra=extra)))
    engine.prepare()
    return engine


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(tmp_path)
    yield engine
    kill_services(tmp_path / "state")


def journal_commands(engine: Engine, kind: str = "command.start") -> list[str]:
    return [e["command"] for e in engine.journal.entries() if e["kind"] == kind]


async def until(pilot, condition, timeout: float = 10.0, what: str | Callable[[], str] = "") -> None:
    """Let the app run until `condition()` holds; fail after `timeout` seconds. `what` names the condition;
    a callable is asked only on failure (a message that says the state things were left in)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {_said(what) or condition}")
        await pilot.pause(0.02)


def _said(what: str | Callable[[], str]) -> str:
    """`until`'s `what`, asked if it is a callable; one that breaks still leaves the timeout said."""
    if not callable(what):
        return what
    try:
        return what()
    except Exception as exc:  # noqa: BLE001 - the timeout is the failure to report, not this
        return f"(the description failed: {exc!r})"


async def dialog_for(pilot, app: OpsConsoleApp, line: str) -> str:
    """Type `line` at the command line; the confirm dialog's text, once it is open."""
    await pilot.press("colon", *line, "enter")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what=f"the dialog of {line!r}")
    return app.screen.what  # type: ignore[attr-defined]


async def test_four_panes_and_every_host_fit_80x24(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        # The first frames come in pieces on a loaded machine: wait until the footer is drawn.
        await until(pilot, lambda: "quit" in screen_text(app).splitlines()[-1], what="the footer")
        text = screen_text(app)
        for title in ("Fleet", "Build queue", "Heartbeat log", "Canary split"):
            assert title in text
        for host in ("itrust-1", "itrust-2", "itrust-3"):
            assert host in text
        assert "no proxy configured" in text
        # The footer names the main keys.
        last = text.splitlines()[-1]
        for label in ("help", "roll", "abort", "quit"):
            assert label in last


async def test_help_lists_every_binding_with_its_rebound_key(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, extra="keymap:\n  roll: ctrl+r\n  quit: ctrl+q\n")
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        rows = {binding_id: keys for keys, binding_id, _what, _where in app.screen.rows()}
        assert set(rows) >= {spec.id for spec in KEYS}
        assert rows["roll"] == "^r"
        assert rows["help"] == "? f1"
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # The old key is gone and the new one opens the roll dialog.
        bound = app.screen.active_bindings
        assert "r" not in bound and bound["ctrl+r"].binding.action == "roll"
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the roll dialog")


async def test_roll_dialog_names_what_happens_and_starts_on_cancel(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the roll dialog")
        screen = app.screen
        assert screen.what.startswith("roll itrust: 3 hosts, 1 at a time, version ")
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        await pilot.press("enter")  # on Cancel: nothing runs
        await until(pilot, lambda: "cancelled: roll itrust" in screen_text(app), what="the status line")
        assert not isinstance(app.screen, ConfirmScreen)
        assert journal_commands(engine) == []


async def test_typed_command_is_executed_and_journaled(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon")
        assert isinstance(app.focused, CommandLine)
        await pilot.press(*"sleep 0.1s", "enter")
        await until(pilot, lambda: "✔ sleep 0.1s" in screen_text(app), what="the status line")
        assert journal_commands(engine) == ["sleep 0.1s"]
        assert journal_commands(engine, "command.end") == ["sleep 0.1s"]
        # A bad line names what is valid and runs nothing.
        await pilot.press("colon", *"deploy nosuchapp", "enter")
        await until(pilot, lambda: "unknown app 'nosuchapp'; apps: itrust" in screen_text(app), what="the error")
        assert journal_commands(engine) == ["sleep 0.1s"]


async def test_command_line_completes_and_recalls_history(engine: Engine) -> None:
    engine.journal.append("command.start", id="x", command="status itrust", issuer="t")
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", "d", "e", "p", "tab")
        line = app.query_one(CommandLine)
        assert line.value == "deploy "
        await pilot.press("i", "tab")
        assert line.value == "deploy itrust "
        await pilot.press("escape")
        assert not line.has_class("-open")
        await pilot.press("colon", "up")
        assert line.value == "status itrust"
        await pilot.press("down")
        assert line.value == ""


def test_completion_knows_the_grammar() -> None:
    names = Names(apps=("itrust", "checkbox"), groups=("itrust", "db"), hosts=("itrust-1", "db1"))
    assert complete("", names, verbs()) == sorted(verbs())
    assert complete("wa", names, verbs()) == ["wait"]
    assert complete("wait ", names, verbs()) == ["wait healthy"]
    assert complete("wait healthy c", names, verbs()) == ["wait healthy checkbox"]
    assert complete("run d", names, verbs()) == ["run db", "run db1"]
    assert complete("deploy itrust --hosts i", names, verbs()) == ["deploy itrust --hosts itrust-1"]
    assert complete("deploy itrust --", names, verbs()) == ["deploy itrust --hosts", "deploy itrust --version"]
    assert complete("sleep ", names, verbs()) == []


async def test_readonly_hides_and_refuses_mutating_actions(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, extra="readonly: true\n")
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "READ-ONLY" in text
        footer = text.splitlines()[-1]
        assert "roll" not in footer and "abort" not in footer and "help" in footer
        assert not {"r", "b", "a"} & set(app.screen.active_bindings)  # the keys do nothing at all
        await pilot.press("r", "b", "a")
        await pilot.press("colon", *"deploy itrust", "enter")
        await until(pilot, lambda: any(n.title == "refused" for n in app._notifications), what="the refusal")
        await pilot.press("colon", *"sleep 0s", "enter")
        await until(pilot, lambda: journal_commands(engine, "command.end") == ["sleep 0s"], what="sleep to run")
        assert journal_commands(engine) == ["sleep 0s"]
        assert not isinstance(app.screen, ConfirmScreen)


async def test_canary_and_pause_keys_run_their_command(tmp_path: Path) -> None:
    """Each key becomes its command: the canary's behind the confirm dialog, pause without one."""
    from tests.test_zero_drop import proxy_section

    # The canary keys need an app with a canary; +/- ask only when the config says so (they do here).
    engine = make_engine(tmp_path, extra=proxy_section(tmp_path) + "canary:\n  confirm_steps: true\n")
    app = OpsConsoleApp(engine)
    step = engine.config.canary_step
    keys = (("plus", f"canary itrust weight {step}"), ("0", "canary itrust weight 0"), ("p", "canary itrust promote"),
            ("minus", "canary itrust weight 0"))  # `minus` never goes below 0
    async with app.run_test(size=SIZE) as pilot:
        for key, line in keys:
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what=f"the dialog of {key}")
            assert app.screen.what.endswith(f"command: {line}"), (key, app.screen.what)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.press("space")
        await until(pilot, lambda: journal_commands(engine, "command.end") == ["pause"], what="pause to run")
        assert journal_commands(engine) == ["pause"]
    kill_services(tmp_path / "state")


async def test_events_reach_panes_in_batches(engine: Engine) -> None:
    app = OpsConsoleApp(engine, flush_seconds=0.2)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        heartbeat = app.query_one(HeartbeatPane)
        await pilot.pause()
        for i in range(300):
            engine.bus.emit(OutputLine(host="itrust-1", line=f"line {i}"))
        engine.bus.emit(HealthSample(host="itrust-2", ok=False, status=None, latency=None, error="connection refused"))
        engine.bus.emit(HealthSample(host="itrust-1", ok=True, status=200, latency=0.004, version="abc1234"))
        # Nothing touched a widget yet: the bus callback only queued.
        assert heartbeat.log.visible() == []
        await until(pilot, lambda: len(heartbeat.log.visible()) == 2
                    and str(fleet.table.get_row("itrust-1")[1]) == "✔ up", what="the batch on screen")
        lines = [line.text for line in heartbeat.log.visible()]
        assert len(lines) == 2 and "✘ itrust-2" in lines[0] and "connection refused" in lines[0]
        assert "✔ itrust-1" in lines[1] and "200" in lines[1] and "4ms" in lines[1]
        row = fleet.table.get_row("itrust-1")
        assert [str(cell) for cell in row[1:4]] == ["✔ up", "4ms", "abc1234"]
        assert str(fleet.table.get_row("itrust-2")[1]) == "✘ DOWN"
        assert len(app.hosts_seen.record("itrust-1").lines) == LINES  # bounded per host
        # The pane only displays; the heartbeat log on disk is the monitor's (tests/test_heartbeat_log.py).
        assert not (engine.config.state_dir / "logs" / "heartbeat.log").exists()


async def test_heartbeat_log_changes_all_probes_and_host_filter(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        for ok in (True, True, False, True):
            engine.bus.emit(HealthSample(host="itrust-1", ok=ok, status=200 if ok else 503, latency=0.01))
        engine.bus.emit(HealthSample(host="itrust-2", ok=True, status=200, latency=0.01))
        pane = app.query_one(HeartbeatPane)
        await until(pilot, lambda: len(pane.log.visible()) == 4, what="the heartbeat log")
        assert len(pane.log.visible()) == 4  # first answers and the two flips; the repeat is routine
        await pilot.press("3", "v")
        assert len(pane.log.visible()) == 5
        await pilot.press("v", "slash", *"itrust-2", "enter")
        assert [line.key for line in pane.log.visible()] == ["itrust-2"]
        assert "/itrust-2" in pane.border_subtitle


async def test_log_follow_pauses_when_scrolled_up_and_ring_is_bounded(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        log = app.query_one(HeartbeatPane).log
        log.add(LogLine("h", f"line {i}") for i in range(log.ring.maxlen + 50))
        assert len(log.ring) == log.ring.maxlen and log.ring[0].text == "line 50"
        await pilot.press("3")
        assert app.focused is log and log.follow
        await pilot.press("up")
        assert not log.follow and "paused" in app.query_one(HeartbeatPane).border_subtitle
        await pilot.press("f")
        assert log.follow
        await pilot.press("w")
        assert log.wrap


async def test_fleet_filter_sort_and_host_detail(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        engine.views["itrust-3"].healthy = False
        engine.bus.emit(HostState(host="itrust-2", group="itrust", activity="deploying", detail="unpack"))
        engine.views["itrust-2"].activity = "deploying"
        engine.bus.emit(OutputLine(host="itrust-2", line="unpacking release"))
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: str(fleet.table.get_cell("itrust-2", "activity")) == "⟳ deploying",
                    what="the fleet's refresh")
        await pilot.press("s")  # host -> health: the down host first
        assert fleet.sort_key == "health" and fleet.shown_hosts()[0] == "itrust-3"
        await pilot.press("slash", *"deploying", "enter")
        assert fleet.table.row_count == 1 and fleet.selected_host() == "itrust-2"
        await pilot.press("enter")
        assert isinstance(app.screen, HostDetailScreen)
        text = screen_text(app)
        assert "itrust-2" in text and "⟳ deploying" in text and "| unpacking release" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HostDetailScreen)
        await pilot.press("slash", "escape")
        assert fleet.table.row_count == 3


async def test_quit_asks_while_work_runs_and_the_journal_says_interrupted(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"sleep 30s", "enter")
        await until(pilot, lambda: [c.text() for c in engine.running()] == ["sleep 30s"], what="sleep to start")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit dialog")
        assert "sleep 30s is running" in app.screen.what
        await pilot.press("escape")  # changed my mind: still running
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert app.is_running and [c.text() for c in engine.running()] == ["sleep 30s"]
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit dialog")
        await pilot.press("right", "enter")  # from Cancel over to "Quit anyway"
        await until(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 0
    assert engine.running() == []
    kinds = [(e["kind"], e.get("command")) for e in engine.journal.entries()]
    assert ("command.interrupted", "sleep 30s") in kinds


async def test_quit_with_nothing_running_does_not_ask(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 0


async def test_failed_command_is_notified(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        engine.bus.emit(CommandFinished(command_id="x", text="deploy itrust", ok=False, message="itrust-2: exit code 1"))
        await until(pilot, lambda: any(n.title == "✘ deploy itrust" for n in app._notifications), what="the notice")


async def test_themes_from_config_and_no_color(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, extra="theme: light\n")
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "opsconsole-light" and app.has_class("-theme-light")
        app.theme = "opsconsole-mono"  # e.g. from the command palette
        await pilot.pause()
        assert app.has_class("-theme-mono") and not app.has_class("-theme-light")
    monkeypatch.setenv("NO_COLOR", "1")
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "opsconsole-mono" and app.monochrome


async def test_canary_pane_draws_the_proxy_report_and_keys_step_from_it(tmp_path: Path) -> None:
    from opsconsole.events import CanaryState
    from tests.test_zero_drop import proxy_section

    engine = make_engine(tmp_path, extra=proxy_section(tmp_path) + "canary:\n  confirm_steps: true\n")  # + shows its dialog
    app = OpsConsoleApp(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert "no report yet" in screen_text(app)
        engine.bus.emit(CanaryState(app="itrust", split="request", configured_weight=20, effective_weight=0,
                                    requests=(("stable", 812), ("canary", 41)), errors=(("stable", 0), ("canary", 7)),
                                    alert="no healthy canary member", answers=(("400", 2), ("503", 9050)),
                                    panic=("stable",)))
        await until(pilot, lambda: "PANIC stable" in screen_text(app), what="the canary pane")
        text = screen_text(app)
        assert "80/20" in text and "100/0" in text  # configured 20, live 0 while the alert holds
        assert "812 req" in text and "7 failed" in text and "ALERT: no healthy canary member" in text
        # Answers the proxy made itself are shown too: 9,050 failed requests never read as "0 failed".
        assert "proxy answered 400×2 503×9050" in text and "PANIC stable" in text
        await pilot.press("plus")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the canary dialog")
        assert app.screen.what.endswith("canary itrust weight 30")
        await pilot.press("escape")
    kill_services(tmp_path / "state")


async def test_fleet_shows_ec2_instance_id_type_and_state(tmp_path: Path) -> None:
    from opsconsole.ec2.records import Ec2Instance, write_instances

    cfg = write_config(tmp_path, count=1)
    text = cfg.read_text()
    head, apps = text.split("apps:\n", 1)
    cfg.write_text(head + "  web:\n    provider: ec2\n    role: app\n    count: 2\n"
                          "    ec2: {region: us-east-1, ami: ami-12345678}\n" + "apps:\n" + apps)
    write_instances(tmp_path / "state", "web", "test", "us-east-1", [
        Ec2Instance("i-0aaa", "web", 1, "running", "t3.micro", "10.9.0.11", None, None),
        Ec2Instance("i-0bbb", "web", 2, "stopped", "t3.small", "10.9.0.12", None, None),
    ])
    engine = Engine(load_config(cfg))
    engine.prepare()
    app = OpsConsoleApp(engine)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: "i-0bbb" in screen_text(app), what="the fleet's refresh")
        rows = {line.split()[1]: line for line in screen_text(app).splitlines() if "web-" in line}
        assert "i-0aaa t3.micro" in rows["web-1"] and "■ stopped" not in rows["web-1"]
        assert "i-0bbb t3.small" in rows["web-2"] and "■ stopped" in rows["web-2"]


async def test_deploy_dialog_names_the_resolved_version(engine: Engine) -> None:
    sha = await engine.builder.resolve(engine.config.apps["itrust"], None)
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        what = await dialog_for(pilot, app, "deploy itrust")
        assert what.startswith(f"deploy itrust: 3 hosts, 1 at a time, version {sha[:7]} (built first)"), what
        assert "not resolved" not in what
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
    assert journal_commands(engine) == []


async def test_stop_dialog_counts_the_canary_hosts_the_engine_stops_too(tmp_path: Path) -> None:
    from tests.test_canary_console import canary_config

    engine = Engine(load_config(canary_config(tmp_path)))
    engine.prepare()
    app = OpsConsoleApp(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        what = await dialog_for(pilot, app, "stop itrust")
        assert what.startswith("stop itrust: its service stops on 3 hosts: itrust-1, itrust-2, itrust-canary-1"), what
        assert what == await engine.preview(engine.parse("stop itrust"))  # the engine's words, not the UI's
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
    assert journal_commands(engine) == []
    kill_services(tmp_path / "state")
