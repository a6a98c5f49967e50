"""The rollout's gate begins once the deploy has started the app, not after the deploy's last task; the host is
done only when both are. Local fleet, real processes: the deploy playbook is the bundled one with a slow (or
failing) last task after its health check."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Event, HealthSample, RolloutStep, TaskFinished
from tests.conftest import ROOT, commit_file, kill_services, write_config

SLOW_LAST_TASK = """
    - name: a slow last task
      shell: sleep 1
"""
FAILS_AFTER_THE_START = """
    - name: a slow last task
      shell: sleep 0.5

    - name: breaks after the start
      fail:
        msg: broken after the app started
"""


def _config_with_tail(tmp: Path, tail: str) -> Path:
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
    cfg.write_text(text.replace(bundled, f"playbook: {playbooks / 'deploy.yml'}"))
    return cfg


async def _roll_new_commit(tmp: Path, cfg: Path) -> tuple[Engine, list[Event], str, object]:
    engine = Engine(load_config(cfg))
    engine.prepare()
    events: list[Event] = []
    engine.bus.subscribe(lambda e: events.append(e) if isinstance(e, (HealthSample, TaskFinished, RolloutStep))
                         else None)
    sha = commit_file(tmp / "repo", "message.txt", "v2\n", "v2")
    async with asyncio.timeout(60):
        outcome = await engine.execute(engine.parse("roll itrust"))
    return engine, events, sha[:7], outcome


def _index(events: list[Event], test) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, e in enumerate(events) if test(e))


async def test_the_gate_begins_once_the_app_started_and_the_host_is_done_after_its_deploy(tmp_path: Path) -> None:
    engine, events, version, outcome = await _roll_new_commit(tmp_path, _config_with_tail(tmp_path, SLOW_LAST_TASK))
    try:
        assert outcome.ok, outcome.message
        started = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "restart the app")
        assert events[started].started == "itrust" and events[started].status == "changed"
        slow_done = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "a slow last task")
        done = _index(events, lambda e: isinstance(e, RolloutStep) and e.host == "itrust-1" and e.state == "done")
        # The gate's probes answered by the new release while the deploy's last task still ran: rise (2) of them
        # in a row, so the gate had passed by the time the deploy ended.
        during = [e for e in events[started:slow_done] if isinstance(e, HealthSample) and e.host == "itrust-1"]
        assert len(during) >= 2 and all(s.ok and s.version == version for s in during[-2:]), during
        # Nothing before the start: the gate waited for it.
        assert not [e for e in events[:started] if isinstance(e, HealthSample)]
        # Done (back in the pool) only once the deploy, slow task included, ended.
        assert slow_done < done
        gating = _index(events, lambda e: isinstance(e, RolloutStep) and e.host == "itrust-1" and e.state == "gating")
        assert slow_done < gating < done
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_a_deploy_that_fails_after_the_start_fails_the_host_though_its_gate_passed(tmp_path: Path) -> None:
    engine, events, version, outcome = await _roll_new_commit(tmp_path,
                                                              _config_with_tail(tmp_path, FAILS_AFTER_THE_START))
    try:
        assert not outcome.ok
        assert "itrust-1: deploy:" in outcome.message and "broken after the app started" in outcome.message, \
            outcome.message
        states = [e.state for e in events if isinstance(e, RolloutStep) and e.host == "itrust-1"]
        assert "done" not in states and states[-1] == "failed", states
        assert "gating" not in states  # the gate's verdict was never asked for: the deploy had failed
        # The gate had passed meanwhile (its probes, new version, before the failing task): it changes nothing.
        failed = _index(events, lambda e: isinstance(e, TaskFinished) and e.task == "breaks after the start")
        before = [e for e in events[:failed] if isinstance(e, HealthSample) and e.host == "itrust-1"]
        assert before and before[-1].ok and before[-1].version == version, before
        # And it probes no more: nothing arrives after the rollout ended (a window for something *not* to happen).
        probes = sum(isinstance(e, HealthSample) for e in events)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sum(isinstance(e, HealthSample) for e in events) == probes
        assert engine.rollouts.journal.latest("itrust").hosts["itrust-1"] == "failed"
    finally:
        await engine.close()
        kill_services(tmp_path / "state")
