"""Policy that lives in the engine, once, for every front end: read-only, what can be aborted, what a confirm says.

A third front end (or a test) driving `Engine.execute` directly gets the same answers the console and
`--script` give, because they ask the engine instead of deciding by themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.engine.commands import Canary, RollResume, command_classes
from opsconsole.events import CommandFinished, Event, EventBus, Message
from tests.conftest import kill_services, write_config
from tests.test_canary_console import canary_config


def _engine(cfg: Path) -> Engine:
    engine = Engine(load_config(cfg))
    engine.prepare()
    return engine


async def test_readonly_is_enforced_by_execute_not_only_by_the_front_ends(tmp_path: Path) -> None:
    engine = _engine(write_config(tmp_path, extra="readonly: true\n"))
    events: list[Event] = []
    engine.bus.subscribe(events.append)
    marker = tmp_path / "touched"
    try:
        for line in (f"run itrust -- touch {marker}", "deploy itrust", "stop itrust", "abort"):
            outcome = await engine.execute(engine.parse(line))
            assert not outcome.ok and "read-only" in outcome.message, (line, outcome)
        assert not marker.exists()
        assert not list((tmp_path / "state").glob("hosts/*/releases/*"))
        refused = [e for e in events if isinstance(e, CommandFinished)]
        assert [e.ok for e in refused] == [False] * 4 and all("read-only" in e.message for e in refused)
        # What changes nothing still runs; a refusal is journaled as one, never as a command that ran.
        assert (await engine.execute(engine.parse("sleep 0s"))).ok
        assert (await engine.execute(engine.parse("roll itrust --plan"))).ok
        kinds = [(e["kind"], e["command"]) for e in engine.journal.entries()]
        assert [c for k, c in kinds if k == "command.start"] == ["sleep 0s", "roll itrust --plan"]
        assert [c for k, c in kinds if k == "command.refused"] == [
            f"run itrust -- touch {marker}", "deploy itrust", "stop itrust", "abort"]
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


def test_abortable_is_a_property_of_the_command() -> None:
    abortable = {cls.verb for cls in command_classes() if cls.abortable}
    assert abortable == {"deploy", "roll", "roll resume", "rollback", "playbook"}
    assert RollResume(app="itrust").abortable and not Canary(app="itrust", action="weight", weight=10).abortable


async def test_preview_of_deploy_names_the_resolved_version(tmp_path: Path) -> None:
    engine = _engine(write_config(tmp_path))
    try:
        sha = await engine.builder.resolve(engine.config.apps["itrust"], None)
        what = await engine.preview(engine.parse("deploy itrust"))
        assert what.startswith(f"deploy itrust: 3 hosts, 1 at a time, version {sha[:7]} (built first)"), what
        assert "not resolved" not in what and what.endswith("command: deploy itrust")
        what = await engine.preview(engine.parse("deploy itrust --hosts itrust-2 --version nosuch"))
        assert what.startswith("deploy itrust: 1 host, 1 at a time, version nosuch (not resolved: commit 'nosuch' "
                               "is not in"), what
    finally:
        await engine.close()


async def test_preview_of_stop_and_start_counts_the_canary_hosts(tmp_path: Path) -> None:
    engine = _engine(canary_config(tmp_path))
    try:
        hosts = [h.name for h in engine.app_hosts(engine.config.apps["itrust"])]
        assert hosts == ["itrust-1", "itrust-2", "itrust-canary-1"]
        what = await engine.preview(engine.parse("stop itrust"))
        assert what.startswith("stop itrust: its service stops on 3 hosts: itrust-1, itrust-2, itrust-canary-1"), what
        assert what.endswith("command: stop itrust")
    finally:
        await engine.close()


async def test_preview_of_abort_names_every_abortable_command_running(tmp_path: Path) -> None:
    engine = _engine(write_config(tmp_path))
    try:
        what = await engine.preview(engine.parse("abort"))
        assert what.startswith("abort: nothing to abort"), what
    finally:
        await engine.close()


def test_a_failing_subscriber_never_fails_the_work(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[Event] = []
    calls = []

    def broken(event: Event) -> None:
        calls.append(event)
        raise BrokenPipeError(32, "Broken pipe")

    bus.subscribe(seen.append)
    bus.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="opsconsole.events"):
        bus.emit(Message(text="one"))
        bus.emit(Message(text="two"))
    assert len(calls) == 1  # dropped after its first failure
    assert [e.text for e in seen if isinstance(e, Message) and e.level == "info"] == ["one", "two"]
    assert any("BrokenPipeError" in e.text for e in seen if isinstance(e, Message) and e.level == "error")
    assert len([r for r in caplog.records if r.name == "opsconsole.events"]) == 1


def test_events_emitted_by_a_subscriber_wait_their_turn() -> None:
    bus = EventBus()
    order: list[tuple[str, str]] = []

    def track(event: Event) -> None:  # like the engine's host views: an event causes another
        if isinstance(event, Message) and event.text == "draining":
            bus.emit(Message(text="drained"))

    bus.subscribe(track)
    bus.subscribe(lambda e: order.append(("a", e.text)))  # type: ignore[attr-defined]
    bus.subscribe(lambda e: order.append(("b", e.text)))  # type: ignore[attr-defined]
    bus.emit(Message(text="draining"))
    assert order == [("a", "draining"), ("b", "draining"), ("a", "drained"), ("b", "drained")]
