"""Rolling updates on the local fleet with real processes: gates, abort, pause, rollback, lock, crash + resume."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import RolloutProgress, RolloutStep
from tests.conftest import ROOT, commit_file, kill_services, kill_strays, roll_then_abort, write_config


def _engine(cfg: Path) -> Engine:
    engine = Engine(load_config(cfg))
    engine.prepare()
    return engine


def _with_settle(cfg: Path, seconds: float | str) -> None:
    text = cfg.read_text()
    cfg.write_text(text.replace("    vars:\n", f"    vars:\n      settle_seconds: {seconds}\n", 1))


def _version_on(engine: Engine, host: str) -> str | None:
    h = engine.inventory.get(host)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/health", timeout=2) as r:
            return json.loads(r.read())["version"]
    except OSError:
        return None


def _steps(engine: Engine) -> list[RolloutStep]:
    steps: list[RolloutStep] = []
    engine.bus.subscribe(lambda e: steps.append(e) if isinstance(e, RolloutStep) else None)
    return steps


@pytest.fixture
def fleet(tmp_path: Path):
    cfg = write_config(tmp_path, count=3)
    yield cfg
    kill_services(tmp_path / "state")


async def _deploy_v1(engine: Engine) -> str:
    outcome = await engine.execute(engine.parse("deploy itrust"))
    assert outcome.ok, outcome.message
    return engine.views["itrust-1"].version


async def test_roll_updates_every_host_and_plan_changes_nothing(fleet: Path, tmp_path: Path) -> None:
    engine = _engine(fleet)
    try:
        v1 = await _deploy_v1(engine)
        sha = commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        plan = await engine.execute(engine.parse("roll itrust --plan"))
        assert plan.ok and "nothing changed" in plan.message
        assert all(_version_on(engine, f"itrust-{i}") == v1 for i in (1, 2, 3))
        steps = _steps(engine)
        outcome = await engine.execute(engine.parse("roll itrust"))
        assert outcome.ok, outcome.message
        assert all(_version_on(engine, f"itrust-{i}") == sha[:7] for i in (1, 2, 3))
        # one host at a time: host 2 starts draining only after host 1 is done
        order = [(s.host, s.state) for s in steps if s.host]
        assert order.index(("itrust-1", "done")) < order.index(("itrust-2", "draining"))
        assert order.index(("itrust-2", "done")) < order.index(("itrust-3", "draining"))
        state = engine.rollouts.journal.latest("itrust")
        assert state.status == "succeeded" and set(state.hosts.values()) == {"done"}
    finally:
        await engine.close()


async def test_unhealthy_build_stops_at_first_host(fleet: Path, tmp_path: Path) -> None:
    engine = _engine(fleet)
    try:
        v1 = await _deploy_v1(engine)
        commit_file(tmp_path / "repo", "HEALTHY", "no\n", "a build that fails its health check")
        outcome = await engine.execute(engine.parse("roll itrust"))
        assert not outcome.ok
        assert "itrust-1" in outcome.message and "not touched: itrust-2, itrust-3" in outcome.message
        state = engine.rollouts.journal.latest("itrust")
        assert state.hosts == {"itrust-1": "failed", "itrust-2": "pending", "itrust-3": "pending"}
        assert _version_on(engine, "itrust-2") == v1 and _version_on(engine, "itrust-3") == v1
    finally:
        await engine.close()


async def test_abort_leaves_later_hosts_untouched(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=3)
    engine = _engine(cfg)
    try:
        v1 = await _deploy_v1(engine)
        await engine.close()
        # From now on itrust-2's restart waits a minute first: it is still settling whenever the abort lands,
        # however busy the machine (the abort kills the wait).
        _with_settle(cfg, "\"{{ 60 if inventory_hostname == 'itrust-2' else 0 }}\"")
        engine = _engine(cfg)
        commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        steps = _steps(engine)
        outcome = await roll_then_abort(engine, lambda: any(s.host == "itrust-2" and s.state == "deploying"
                                                             for s in steps))
        assert not outcome.ok and outcome.message == "aborted"
        state = engine.rollouts.journal.latest("itrust")
        assert state.status == "aborted"
        assert state.hosts["itrust-1"] == "done" and state.hosts["itrust-3"] == "pending"
        assert state.hosts["itrust-2"] == "deploying"  # left drained, never put back half-deployed
        assert _version_on(engine, "itrust-3") == v1
        assert not (Path(engine.inventory.get("itrust-3").root) / "releases" / state.plan.version).exists()
        # the lock was released: a new rollout may start
        assert (await engine.execute(engine.parse("lock status itrust"))).message.endswith("not locked")
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_pause_and_resume_between_batches(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=3)
    _with_settle(cfg, 0.5)
    engine = _engine(cfg)
    try:
        await _deploy_v1(engine)
        commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        steps = _steps(engine)
        roll = asyncio.ensure_future(engine.execute(engine.parse("roll itrust")))
        while not any(s.host == "itrust-1" and s.state == "deploying" for s in steps):
            await asyncio.sleep(0.02)
        assert (await engine.execute(engine.parse("pause"))).ok
        while not any(s.host is None and s.state == "paused" for s in steps):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert not any(s.host == "itrust-2" for s in steps)  # nothing moves while paused
        assert (await engine.execute(engine.parse("resume"))).ok
        outcome = await roll
        assert outcome.ok, outcome.message
        bad = await engine.execute(engine.parse("resume"))
        assert not bad.ok and "nothing to resume" in bad.message
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_rollback_returns_previous_version(fleet: Path, tmp_path: Path) -> None:
    engine = _engine(fleet)
    try:
        v1 = await _deploy_v1(engine)
        commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        assert (await engine.execute(engine.parse("roll itrust"))).ok
        outcome = await engine.execute(engine.parse("rollback itrust"))
        assert outcome.ok, outcome.message
        assert all(_version_on(engine, f"itrust-{i}") == v1 for i in (1, 2, 3))
        history = await engine.execute(engine.parse("history itrust"))
        assert history.ok and history.message == "2 rollout(s)"
    finally:
        await engine.close()


async def test_on_failure_rollback_keeps_fleet_on_one_version(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=3)
    engine = _engine(cfg)
    try:
        v1 = await _deploy_v1(engine)
        repo = tmp_path / "repo"
        commit_file(repo, "message.txt", "v2\n", "v2")
        outcome = await engine.execute(engine.parse("roll itrust --max-fail 0 --on-failure rollback --batch 1"))
        assert outcome.ok, outcome.message
        commit_file(repo, "HEALTHY", "no\n", "bad")
        outcome = await engine.execute(engine.parse("roll itrust --on-failure rollback"))
        assert not outcome.ok and "rollback of itrust" in outcome.message
        versions = {_version_on(engine, f"itrust-{i}") for i in (1, 2, 3)}
        assert len(versions) == 1 and versions != {v1}  # back on v2, the previous good one
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_deploy_is_refused_while_another_console_holds_the_deploy_lock(fleet: Path) -> None:
    """`deploy` took no lock: run while another console rolled, both said done and the fleet ended on
    whichever version wrote last. Now it takes the roll's lock, and is refused while someone holds it."""
    from opsconsole.rollouts.lock import FleetLock

    engine = _engine(fleet)
    try:
        v1 = await _deploy_v1(engine)
        app = engine.config.apps["itrust"]
        other = FleetLock(engine.rollouts.lock_for(app).transport, "itrust", "alice@elsewhere")
        await other.acquire("roll itrust to abc1234")
        outcome = await engine.execute(engine.parse("deploy itrust"))
        assert not outcome.ok and "held by alice@elsewhere" in outcome.message, outcome.message
        assert _version_on(engine, "itrust-1") == v1
        await other.release()
        again = await engine.execute(engine.parse("deploy itrust"))
        assert again.ok, again.message
        assert (await engine.execute(engine.parse("lock status itrust"))).message.endswith("not locked")
    finally:
        await engine.close()


def _opsconsole(cfg: Path, script: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, **kw)


def test_lock_keeps_out_a_second_console(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=2)
    _with_settle(cfg, 2.0)
    try:
        first = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                               input="deploy itrust\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert first.returncode == 0, first.stdout + first.stderr
        commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        a = _opsconsole(cfg, "", env={**os.environ, "USER": "alice"})
        a.stdin.write("roll itrust\n")
        a.stdin.close()
        a.stdin = None
        lock_file = Path(tmp_path / "state" / "hosts" / "itrust-1" / "locks" / "itrust.lock")
        deadline = time.time() + 60
        while not lock_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        b = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                           input="lock status itrust\nroll itrust\n", capture_output=True, text=True, timeout=60,
                           cwd=ROOT)
        assert b.returncode == 1
        assert "held by" in b.stdout and "deploy lock of itrust" in b.stdout
        # No plan is printed for a rollout that will not run (it read as if it would, "left alone: …" and all).
        assert "at a time" not in b.stdout and "left alone" not in b.stdout, b.stdout
        out, _ = a.communicate(timeout=120)
        assert a.returncode == 0, out
    finally:
        kill_services(tmp_path / "state")


def test_kill_mid_rollout_then_status_and_resume(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=3)
    try:
        first = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                               input="deploy itrust\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert first.returncode == 0, first.stdout
        sha = commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        # itrust-2's restart waits a minute first: it is still deploying whenever the kill lands, however busy
        # the machine. Taken out again before the resume.
        settle = "\"{{ 60 if inventory_hostname == 'itrust-2' else 0 }}\""
        _with_settle(cfg, settle)
        proc = _opsconsole(cfg, "")
        proc.stdin.write("roll itrust\n")
        proc.stdin.close()
        proc.stdin = None
        journal_dir = tmp_path / "state" / "rollouts"
        deadline = time.time() + 60
        while time.time() < deadline:
            files = list(journal_dir.glob("*.jsonl")) if journal_dir.exists() else []
            if files and '"host": "itrust-2", "kind": "host", "reason": "", "state": "deploying"' in files[0].read_text():
                break
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no cleanup at all
        proc.wait()
        kill_strays(tmp_path / "state", "sleep")  # its settling `sleep` lives on, orphaned
        cfg.write_text(cfg.read_text().replace(f"settle_seconds: {settle}", "settle_seconds: 0"))
        status = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                                input="status itrust\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert "INTERRUPTED" in status.stdout
        assert "itrust-1: done" in status.stdout and "itrust-3: pending" in status.stdout
        assert "itrust-2: deploying" in status.stdout
        # A headless run says first what the killed one left, as the console does (it once never did, and
        # `history` kept a start with no end).
        assert "was interrupted" in status.stdout and "`roll itrust` by" in status.stdout, status.stdout
        assert "never finished" in status.stdout, status.stdout
        # a console opened now says the interruption again, and the unfinished command no more: told once
        notices = _engine(cfg).startup_notices()
        assert any("of itrust" in n and "was interrupted" in n and "roll resume itrust" in n for n in notices)
        assert not any("never finished" in n for n in notices)
        resume = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                                input="roll resume itrust\nwait healthy itrust 30s\nstatus itrust\n",
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert resume.returncode == 0, resume.stdout
        # The killed console's lock is taken over at once, and said plainly (it once read "last renewed
        # 1796300239s ago": the epoch).
        assert "took over a stale deploy lock" in resume.stdout, resume.stdout
        assert "its console on this machine is gone" in resume.stdout, resume.stdout
        assert resume.stdout.count(f"version={sha[:7]}") == 3
        assert "INTERRUPTED" not in resume.stdout.split("status itrust")[-1]
    finally:
        kill_strays(tmp_path / "state")
        kill_services(tmp_path / "state")


async def test_rollout_timing_comes_from_the_apps_rollout_config(tmp_path: Path) -> None:
    """`apps.X.rollout` sets the health gate's wait (and the drain shown in the plan), not a code constant."""
    cfg = write_config(tmp_path, count=2)
    text = cfg.read_text()
    # A build that comes up healthy but reports another version: only the rollout's health gate catches it.
    text = text.replace("commands: [sh build.sh]", "commands: ['OPSCONSOLE_VERSION=elsewhere sh build.sh']")
    cfg.write_text(text.replace("    vars:\n", "    rollout:\n      health_timeout: 1s\n      drain_timeout: 2s\n"
                                               "      lock_ttl: 20s\n      lock_renew: 4s\n    vars:\n", 1))
    engine = _engine(cfg)
    lines: list[str] = []
    engine.bus.subscribe(lambda e: lines.append(getattr(e, "text", "")))
    try:
        started = time.monotonic()
        async with asyncio.timeout(40):
            outcome = await engine.execute(engine.parse("roll itrust"))
        took = time.monotonic() - started
        assert not outcome.ok
        assert "itrust-1: health gate: reports version elsewhere after 1s" in outcome.message, outcome.message
        assert "not touched: itrust-2" in outcome.message
        assert any("drain (≤2.0s)" in line and "(≤1.0s)" in line for line in lines), lines
        assert took < 30, f"the gate waited {took:.0f}s, not the 1s the config asks for"
        assert engine.rollouts.lock_for(engine.config.apps["itrust"]).ttl == 20.0
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_a_host_past_its_deploy_timeout_fails_with_a_clear_reason_and_progress_counts_it(tmp_path: Path) -> None:
    """A deploy that does not finish within `rollout.deploy_timeout` fails that host at the timeout, not later."""
    cfg = write_config(tmp_path, count=2)
    _with_settle(cfg, 30)  # every host's deploy now hangs 30s before its restart
    cfg.write_text(cfg.read_text().replace("    vars:\n", "    rollout:\n      deploy_timeout: 2s\n    vars:\n", 1))
    engine = _engine(cfg)
    progress: list[RolloutProgress] = []
    engine.bus.subscribe(lambda e: progress.append(e) if isinstance(e, RolloutProgress) else None)
    try:
        started = time.monotonic()
        outcome = await engine.execute(engine.parse("roll itrust --batch 100% --max-fail 1"))
        took = time.monotonic() - started
        assert not outcome.ok
        for host in ("itrust-1", "itrust-2"):
            assert (f"{host}: deploy: {host} did not finish within the deploy timeout of 2s (unreachable or "
                    "stalled)") in outcome.message, outcome.message
        assert took < 2 + 8, f"the rollout took {took:.1f}s for a 2s deploy timeout"
        assert progress[0].line() == "batch 1/1 · 0/2 done · 0 failed · ETA …"
        assert progress[-1].line().startswith("batch 1/1 · 0/2 done · 2 failed · ETA 0s"), progress[-1].line()
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_lock_release_will_not_pull_the_lock_from_under_this_consoles_own_deploy(tmp_path: Path) -> None:
    """It refused only for a rollout: released under a running deploy, the deploy's next renewal failed and
    cancelled it mid-playbook. Now it says what holds the lock, and `abort` is the way."""
    cfg = write_config(tmp_path, count=2)
    _with_settle(cfg, "\"{{ 60 if inventory_hostname == 'itrust-1' else 0 }}\"")  # the deploy holds a while
    engine = _engine(cfg)
    try:
        deploy = asyncio.ensure_future(engine.execute(engine.parse("deploy itrust")))
        async with asyncio.timeout(60):
            while "held by" not in (await engine.execute(engine.parse("lock status itrust"))).message:
                await asyncio.sleep(0.05)
        refused = await engine.execute(engine.parse("lock release itrust"))
        assert not refused.ok and "`deploy itrust" in refused.message and "abort" in refused.message, refused.message
        assert (await engine.execute(engine.parse("abort"))).ok
        assert not (await deploy).ok
        assert (await engine.execute(engine.parse("lock status itrust"))).message.endswith("not locked")
    finally:
        await engine.close()
        kill_services(tmp_path / "state")
