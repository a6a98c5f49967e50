"""Rolling updates at fleet size over a 20-host SSH lab: `roll --batch 10%`, a host lost mid-rollout, --max-fail.

The lab's size is a parameter (`fleet_lab`, OPSCONSOLE_FLEET_LAB_APPS, default 20); bench/bench_scale.py
runs the same rollout over 100 hosts against ansible-playbook.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Event, RolloutProgress, RolloutStep, TaskFinished
from tests.conftest import commit_file
from tests.lab import Lab
from tests.lab.config import write_lab_config
from tests.lab.lab import LAB_UID

pytest_plugins = ["tests.lab.fixtures"]

DEPLOY_TIMEOUT = 6.0


def _engine(tmp_path: Path, lab: Lab) -> tuple[Engine, list[Event]]:
    engine = Engine.open(load_config(write_lab_config(tmp_path, lab, rollout=f"{{deploy_timeout: {DEPLOY_TIMEOUT:g}s}}")))
    seen: list[Event] = []
    engine.bus.subscribe(lambda e: seen.append(e) if isinstance(e, (RolloutProgress, RolloutStep, TaskFinished)) else None)
    return engine, seen


def _on_disk(lab: Lab, name: str) -> str:
    """The release a host's `current` points at, read from its files (not from opsconsole's views)."""
    return (Path(lab.hosts[name].files) / "current").readlink().name


def _steps(seen: list[Event], host: str) -> dict[str, float]:
    return {e.state: e.at for e in seen if isinstance(e, RolloutStep) and e.host == host}


def _stopped(seen: list[Event]) -> str:
    """Why the rollout as a whole failed (its last status step)."""
    return [e.detail for e in seen if isinstance(e, RolloutStep) and e.host is None and e.state == "failed"][-1]


async def test_roll_batch_10_percent_brings_every_host_to_the_new_version(fleet_lab: Lab, tmp_path: Path) -> None:
    names = [h.name for h in fleet_lab.apps]
    assert len(names) == 20
    engine, seen = _engine(tmp_path, fleet_lab)
    try:
        sha = commit_file(tmp_path / "repo", "message.txt", "fleet v1\n", "fleet v1")
        outcome = await engine.execute(engine.parse("roll itrust --batch 10%"))
        assert outcome.ok, outcome.message
        assert all(engine.views[n].version == sha[:7] for n in names)
        assert all(_on_disk(fleet_lab, n) == sha[:7] for n in names)
        # 10% of 20: ten batches of two, each host's gate its own
        batches = {e.batch for e in seen if isinstance(e, RolloutStep) and e.host and e.state == "done"}
        assert batches == set(range(1, 11))
        progress = [e for e in seen if isinstance(e, RolloutProgress)]
        assert progress[-1].line().startswith("batch 10/10 · 20/20 done · 0 failed · ETA 0s"), progress[-1].line()
        assert any(p.batch == 3 and p.eta is not None and p.eta > 0 for p in progress)
        # within a batch hosts run side by side: the second host starts deploying before the first is done
        one, two = _steps(seen, names[0]), _steps(seen, names[1])
        assert two["deploying"] < one["done"] and one["deploying"] < two["done"]
    finally:
        await engine.close()


async def test_a_host_lost_mid_rollout_fails_alone_within_its_deploy_timeout(fleet_lab: Lab, tmp_path: Path) -> None:
    names = [h.name for h in fleet_lab.apps]
    victim, mate = "app-6", "app-5"  # batch 3 of 10 (app-1 holds the deploy lock: not that one)
    engine, seen = _engine(tmp_path, fleet_lab)
    cut: list[float] = []

    def cut_link_once_deploying(event: Event) -> None:
        # Its connection is up and its first task done: from now on its commands hang, as on a host that died.
        if isinstance(event, TaskFinished) and event.host == victim and not cut:
            fleet_lab.cut_link(victim)
            cut.append(time.time())

    engine.bus.subscribe(cut_link_once_deploying)
    try:
        sha = commit_file(tmp_path / "repo", "message.txt", "fleet v2\n", "fleet v2")
        outcome = await engine.execute(engine.parse("roll itrust --batch 10%"))
        assert not outcome.ok
        assert cut, "the victim's deploy never started"
        assert f"{victim}: deploy: {victim} did not finish within the deploy timeout of {DEPLOY_TIMEOUT:g}s" in outcome.message
        assert _stopped(seen).endswith("stopped after 1 failed host(s)")
        steps = _steps(seen, victim)
        assert steps["failed"] - steps["deploying"] < DEPLOY_TIMEOUT + 2
        # only its batch: its batch-mate and the batches before are on the new version, later ones untouched
        assert all(_on_disk(fleet_lab, n) == sha[:7] for n in names[:5])
        assert engine.views[mate].version == sha[:7] and _steps(seen, mate).get("done")
        assert not any(_steps(seen, n) for n in names[6:])
        assert "not touched: " + ", ".join(names[6:]) in outcome.message
    finally:
        fleet_lab.cut_link(victim, up=True)
        await asyncio.wait_for(engine.close(), 30)


async def test_max_fail_2_stops_at_the_third_failed_host(fleet_lab: Lab, tmp_path: Path) -> None:
    names = [h.name for h in fleet_lab.apps]
    engine, seen = _engine(tmp_path, fleet_lab)
    try:
        sha = commit_file(tmp_path / "repo", "message.txt", "fleet v3\n", "fleet v3")
        broken = ["app-3", "app-8", "app-13"]  # batches 2, 4 and 7 of 10
        for name in broken:  # a file where the release directory goes: the deploy's first task fails there
            releases = Path(fleet_lab.hosts[name].files) / "releases"
            releases.mkdir(exist_ok=True)
            os.chown(releases, LAB_UID, LAB_UID)
            (releases / sha[:7]).write_text("in the way\n")
        outcome = await engine.execute(engine.parse("roll itrust --batch 10% --max-fail 2"))
        assert not outcome.ok
        assert _stopped(seen).endswith("stopped after 3 failed host(s)")
        failed = [e.host for e in seen if isinstance(e, RolloutStep) and e.host and e.state == "failed"]
        assert failed == broken
        done = [n for n in names if _steps(seen, n).get("done")]
        assert done == [n for n in names[:14] if n not in broken]  # through batch 7, the third failure's
        assert not any(_steps(seen, n) for n in names[14:])
        assert all(_on_disk(fleet_lab, n) != sha[:7] for n in names[14:])
        last = [e for e in seen if isinstance(e, RolloutProgress)][-1]
        assert (last.batch, last.done, last.failed, last.total) == (7, 11, 3, 20)
    finally:
        await engine.close()
