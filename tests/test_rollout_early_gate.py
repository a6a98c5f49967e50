"""The rollout's look-ahead: once the deploy has started the app, the new release's good answers are counted while
the deploy's last tasks run, and the gate after the deploy goes on from that count (one more answer, not `rise`
of them a pace apart). The gate's rule stays: `rise` in a row from the new version, the last after the deploy,
with a full timeout of its own. Local fleet, real processes: the deploy playbook is the bundled one with more
tasks after its health check (slow, failing, or stopping the app)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Event, HealthChanged, HealthSample, RolloutStep, TaskFinished
from tests.conftest import ROOT, commit_file, kill_services, roll_then_abort, write_config

SLOW_LAST_TASK = """
    - name: a slow last task
      shell: sleep 1
"""
STOPS_THE_APP_AFTER_THE_START = """
    - name: a slow last task
      shell: sleep 0.5

    - name: stops the app
      opsconsole.builtin.service:
        name: "{{ service_name }}"
        state: stopped
"""
# A release whose /health says 500 for its first 0.4 s, then 200: the look-ahead meets it still starting.
SLOW_TO_BE_HEALTHY = '''
import time as _time
_BORN = _time.monotonic()
_get = Handler.do_GET


def do_GET(self):
    if self.path.startswith("/health") and _time.monotonic() - _BORN < 0.4:
        self._respond(500, b'{"status": "starting"}\\n')
        return
    _get(self)


Handler.do_GET = do_GET
'''
FAILS_AFTER_THE_START = """
    - name: a slow last task
      shell: sleep 0.5

    - name: breaks after the start
      fail:
        msg: broken after the app started
"""


def _config_with_tail(tmp: Path, tail: str, rollout: str = "") -> Path:
    """A one-host local fleet whose deploy playbook is the bundled one with `tail` as its last tasks."""
    playbooks = tmp / "playbooks"
    playbooks.mkdir()
    shutil.copytree(ROOT / "playbooks" / "templates", playbooks / "templates")
    (playbooks / "deploy.yml").write_text((ROOT / "playbooks" / "itrust-deploy.yml").read_text().rstrip("\n")
                                          + "\n" + tail)
    cfg = write_config(tmp, count=1)
    text = cfg.read_text()
    bundled = f"playbook: {ROOT / 'playbooks' / 'itrust-deploy.yml'}"
    assert bundled in text
    text = text.replace(bundled, f"playbook: {playbooks / 'deploy.yml'}")
    if rollout:
        text = text.replace("    vars:\n", f"    rollout:\n      {rollout}\n    vars:\n", 1)
    cfg.write_text(text)
    return cfg


async def _roll_new_commit(tmp: Path, cfg: Path, app_patch: str = "") -> tuple[Engine, list[Event], str, object]:
    engine = Engine(load_config(cfg))
    engine.prepare()
    events: list[Event] = []
    engine.bus.subscribe(lambda e: events.append(e) if isinstance(e, (HealthSample, HealthChanged, TaskFinished,
                                                                      RolloutStep)) else None)
    if app_patch:
        app = (tmp / "repo" / "app.py").read_text()
        main = app.index("\ndef main()")
        sha = commit_file(tmp / "repo", "app.py", app[:main] + app_patch + app[main:], "v2")
    else:
        sha = commit_file(tmp / "repo", "message.txt", "v2\n", "v2")
    async with asyncio.timeout(60):
        outcome = await engine.execute(engine.parse("roll itrust"))
    return engine, events, sha[:7], outcome


async def _no_more_probes(events: list[Event]) -> None:
    """No probe arrives for 0.3 s from now: a window for something *not* to happen, which no condition can
    stand in for."""
    probes = sum(isinstance(e, HealthSample) for e in events)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sum(isinstance(e, HealthSample) for e in events) == probes


def _index(events: list[Event], test) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, e in enumerate(events) if test(e))


async def test_answers_counted_during_the_deploy_leave_the_gate_one_answer_to_ask(tmp_path: Path) -> None:
    engine, events, version, outcome = await _roll_new_commit(tmp_path, _config_with_tail(tmp_path, SLOW_LAST_TASK))
    try:
        assert outcome.ok, outcome.message
        started = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "restart the app")
        assert events[started].started == "itrust" and events[started].status == "changed"
        slow_done = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "a slow last task")
        done = _index(events, lambda e: isinstance(e, RolloutStep) and e.host == "itrust-1" and e.state == "done")
        # Counted while the deploy's last task ran: rise (2) and more good answers from the new release.
        during = [e for e in events[started:slow_done] if isinstance(e, HealthSample)]
        assert len(during) >= 2 and all(s.ok and s.version == version for s in during), during
        assert not [e for e in events[:started] if isinstance(e, HealthSample)]  # none before the start
        # After the deploy: the gate asked once more (not zero times: the answers must go on after the deploy;
        # not rise times: those counted), then the host was done.
        after = [e for e in events[slow_done:done] if isinstance(e, HealthSample)]
        assert len(after) == 1 and after[0].ok and after[0].version == version, after
        gating = _index(events, lambda e: isinstance(e, RolloutStep) and e.host == "itrust-1" and e.state == "gating")
        assert slow_done < gating < done
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_an_app_stopped_after_the_answers_were_counted_fails_the_gate(tmp_path: Path) -> None:
    """Good answers counted during the deploy are no pass: a later task that breaks the app (here: stops it)
    fails the gate that follows, which asks after the deploy, with its own full timeout."""
    cfg = _config_with_tail(tmp_path, STOPS_THE_APP_AFTER_THE_START, rollout="health_timeout: 2s")
    engine, events, version, outcome = await _roll_new_commit(tmp_path, cfg)
    try:
        assert not outcome.ok
        assert "itrust-1: health gate: not healthy after 2s" in outcome.message, outcome.message
        stopped = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "stops the app")
        counted = [e for e in events[:stopped] if isinstance(e, HealthSample)]
        assert len(counted) >= 2 and all(s.ok and s.version == version for s in counted), counted
        states = [e.state for e in events if isinstance(e, RolloutStep) and e.host == "itrust-1"]
        assert "done" not in states and states[-1] == "failed", states
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_a_release_still_starting_during_its_deploy_is_no_host_down(tmp_path: Path) -> None:
    """The look-ahead records only good answers: a release that says 500 for its first moments while its deploy
    runs is not reported down (no alert, no down/up flap of a drained host), and the roll goes through."""
    engine, events, version, outcome = await _roll_new_commit(
        tmp_path, _config_with_tail(tmp_path, SLOW_LAST_TASK), app_patch=SLOW_TO_BE_HEALTHY)
    try:
        assert outcome.ok, outcome.message
        assert not [e for e in events if isinstance(e, HealthChanged) and not e.healthy]
        samples = [e for e in events if isinstance(e, HealthSample)]
        assert samples and all(s.ok and s.version == version for s in samples), samples
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_a_deploy_that_fails_after_the_start_fails_the_host_whatever_was_counted(tmp_path: Path) -> None:
    engine, events, version, outcome = await _roll_new_commit(tmp_path,
                                                              _config_with_tail(tmp_path, FAILS_AFTER_THE_START))
    try:
        assert not outcome.ok
        assert "itrust-1: deploy:" in outcome.message and "broken after the app started" in outcome.message, \
            outcome.message
        states = [e.state for e in events if isinstance(e, RolloutStep) and e.host == "itrust-1"]
        assert "done" not in states and states[-1] == "failed", states
        assert "gating" not in states  # the gate was never asked: the deploy had failed
        # The look-ahead had counted good answers meanwhile (new version, before the failing task): no matter.
        failed = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "breaks after the start")
        before = [e for e in events[:failed] if isinstance(e, HealthSample) and e.host == "itrust-1"]
        assert before and before[-1].ok and before[-1].version == version, before
        await _no_more_probes(events)  # the look-ahead stopped with the rollout
        assert engine.rollouts.journal.latest("itrust").hosts["itrust-1"] == "failed"
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_with_no_start_in_the_deploy_the_gate_asks_rise_times_after_it(tmp_path: Path) -> None:
    """The same release rolled again: the playbook restarts nothing (the app runs it already), so nothing is
    counted during the deploy and the gate asks its `rise` (2) answers after it, a pace apart."""
    engine, events, version, outcome = await _roll_new_commit(tmp_path, _config_with_tail(tmp_path, SLOW_LAST_TASK))
    try:
        assert outcome.ok, outcome.message
        events.clear()
        async with asyncio.timeout(60):
            again = await engine.execute(engine.parse(f"roll itrust --version {version}"))
        assert again.ok, again.message
        assert not [e for e in events if isinstance(e, TaskFinished) and e.started]
        slow_done = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "a slow last task")
        done = _index(events, lambda e: isinstance(e, RolloutStep) and e.host == "itrust-1" and e.state == "done")
        assert not [e for e in events[:slow_done] if isinstance(e, HealthSample)]
        after = [e for e in events[slow_done:done] if isinstance(e, HealthSample)]
        assert len(after) == 2 and all(s.ok and s.version == version for s in after), after
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_an_abort_while_answers_are_counted_stops_the_counting_and_leaves_the_host_drained(
        tmp_path: Path) -> None:
    """Aborted while the look-ahead probes (the deploy's slow last task runs): the rollout stops, the host stays
    as the abort found it (deploying, drained: never put back), and nothing probes it afterwards."""
    cfg = _config_with_tail(tmp_path, SLOW_LAST_TASK.replace("sleep 1", "sleep 30"))
    engine = Engine(load_config(cfg))
    engine.prepare()
    events: list[Event] = []
    engine.bus.subscribe(lambda e: events.append(e) if isinstance(e, (HealthSample, RolloutStep)) else None)
    try:
        commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        # aborted once the look-ahead is counting
        outcome = await roll_then_abort(engine, lambda: sum(isinstance(e, HealthSample) for e in events) >= 2)
        assert not outcome.ok and outcome.message == "aborted"
        state = engine.rollouts.journal.latest("itrust")
        assert state.status == "aborted" and state.hosts["itrust-1"] == "deploying", state.hosts
        assert not [e for e in events if isinstance(e, RolloutStep) and e.state in ("gating", "done")]
        await _no_more_probes(events)
    finally:
        await engine.close()
        kill_services(tmp_path / "state")
