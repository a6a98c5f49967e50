"""The build queue against real git repositories: polling, coalescing, failures, timeouts, history."""

from __future__ import annotations

import asyncio
from pathlib import Path


from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import BuildUpdate, Message
from tests.conftest import commit_file, git, process_gone, write_config


def _engine(cfg: Path, *, poll: bool = False) -> Engine:
    # `poll`: what the console starts but the heartbeat (the branch pollers and the proxy watch)
    return Engine.open(load_config(cfg), poll=poll, watch_proxy=poll)


def _set(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new, 1))


def _updates(engine: Engine) -> list[BuildUpdate]:
    events: list[BuildUpdate] = []
    engine.bus.subscribe(lambda e: events.append(e) if isinstance(e, BuildUpdate) else None)
    return events


async def _until(predicate, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


async def test_push_to_production_is_built_within_one_poll_and_other_branches_ignored(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    _set(cfg, "branch: production", "branch: production\n    poll_interval: 0.3s")
    engine = _engine(cfg, poll=True)
    updates = _updates(engine)
    await engine.start()
    try:
        repo = tmp_path / "repo"
        first = git(repo, "rev-parse", "HEAD")
        await _until(lambda: any(u.commit == first and u.status == "succeeded" for u in updates))
        # Counted in polls, not seconds: the poll under way at the push may have asked before it; the next
        # one must see the new head (and the poller says so in the poll that saw it).
        poller = engine.pollers["itrust"]
        seen_in: list[int] = []
        pushed_at_poll = poller.polls
        sha = commit_file(repo, "message.txt", "second\n", "second version")  # (no await: no poll in between)
        engine.bus.subscribe(lambda e: seen_in.append(poller.polls)
                             if isinstance(e, Message) and f"moved to {sha[:7]}" in e.text else None)
        await _until(lambda: any(u.commit == sha and u.status == "running" for u in updates))
        assert seen_in and seen_in[0] - pushed_at_poll <= 1, (seen_in, pushed_at_poll)
        await _until(lambda: any(u.commit == sha and u.status == "succeeded" for u in updates))
        done = [u for u in updates if u.commit == sha and u.status == "succeeded"][-1]
        assert done.author == "Test Author" and done.subject == "second version"
        record = engine.builds.artifact_for("itrust", sha)
        assert record is not None and record.sha256 and Path(record.artifact).is_file()
        # a push to another branch builds nothing
        count = len(updates)
        other = commit_file(repo, "message.txt", "dev\n", "dev work", branch="dev")
        # Poll N may have read the head before the push; poll N+1 starts after it and ends before N+2 starts.
        poller = engine.pollers["itrust"]
        after = poller.polls + 2
        await _until(lambda: poller.polls >= after)
        assert not any(u.commit == other for u in updates)
        assert len(updates) == count
    finally:
        await engine.close()


async def test_three_quick_pushes_build_newest_and_list_two_skipped(tmp_path: Path) -> None:
    engine = _engine(write_config(tmp_path, count=1))
    try:
        poller = engine.pollers["itrust"]
        await poller.poll_once()
        await _until(lambda: any(r.status == "succeeded" for r in engine.builds.records()))
        repo = tmp_path / "repo"
        shas = [commit_file(repo, "message.txt", f"v{i}\n", f"push {i}") for i in range(3)]
        await poller.poll_once()
        await _until(lambda: any(r.commit == shas[2] and r.status == "succeeded" for r in engine.builds.records()))
        by_commit = {}
        for r in engine.builds.records():
            by_commit.setdefault(r.commit, []).append(r.status)
        assert by_commit[shas[0]] == ["skipped"] and by_commit[shas[1]] == ["skipped"]
        assert by_commit[shas[2]] == ["succeeded"]
    finally:
        await engine.close()


async def test_queued_build_is_superseded_by_newer_push(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    _set(cfg, "commands: [sh build.sh]", "commands: [sleep 1, sh build.sh]")
    engine = _engine(cfg)
    try:
        app = engine.config.apps["itrust"]
        repo = tmp_path / "repo"
        await engine.builder.resolve(app, None)
        a = git(repo, "rev-parse", "HEAD")
        b = commit_file(repo, "message.txt", "b\n", "b")
        c = commit_file(repo, "message.txt", "c\n", "c")
        await engine.builder.resolve(app, None)
        fa = await engine.build_queue.submit(app, a)
        await _until(lambda: any(r.status == "running" for r in engine.build_queue.active()))
        fb = await engine.build_queue.submit(app, b)
        fc = await engine.build_queue.submit(app, c)
        ra, rb, rc = await asyncio.gather(fa, fb, fc)
        assert (ra.status, rb.status, rc.status) == ("succeeded", "skipped", "succeeded")
        assert "superseded by" in rb.message
    finally:
        await engine.close()


async def test_failing_build_deploys_nothing_and_keeps_its_log(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=2)
    _set(cfg, "playbook:", "on_build: rolling\n      playbook:")
    engine = _engine(cfg)
    try:
        repo = tmp_path / "repo"
        (repo / "build.sh").write_text("echo compiling the thing\necho 'error: it broke' >&2\nexit 3\n")
        git(repo, "commit", "-qam", "broken build")
        await engine.pollers["itrust"].poll_once()
        await _until(lambda: any(r.status == "failed" for r in engine.builds.records()))
        # The queue is done with it and no deploy was started for it (one would be a background task).
        await _until(lambda: not engine.build_queue.active() and not engine._background)
        record = [r for r in engine.builds.records() if r.status == "failed"][0]
        assert "exit code 3" in record.message and "it broke" in record.message
        log = Path(record.log).read_text()
        assert "compiling the thing" in log and "error: it broke" in log
        assert not any(e.get("command", "").startswith("deploy") for e in engine.journal.entries())
        assert not list((tmp_path / "state").glob("hosts/*/releases"))
    finally:
        await engine.close()


async def test_build_timeout_kills_its_children(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    _set(cfg, "commands: [sh build.sh]", "commands: ['sleep 300 & echo $! > {pid}; wait']".format(pid=tmp_path / "child.pid"))
    _set(cfg, "timeout: 60s", "timeout: 1s")
    engine = _engine(cfg)
    try:
        outcome = await engine.execute(engine.parse("build itrust"))
        assert not outcome.ok and "timed_out" in outcome.message
        child = int((tmp_path / "child.pid").read_text())
        assert process_gone(child)
        assert [r.status for r in engine.builds.records()] == ["timed_out"]
    finally:
        await engine.close()


async def test_cancel_build(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    _set(cfg, "commands: [sh build.sh]", "commands: ['sleep 30']")
    engine = _engine(cfg)
    try:
        build = asyncio.ensure_future(engine.execute(engine.parse("build itrust")))
        await _until(lambda: any(r.status == "running" for r in engine.build_queue.active()))
        build_id = engine.build_queue.active()[0].build_id
        outcome = await engine.execute(engine.parse(f"cancel build {build_id}"))
        assert outcome.ok, outcome.message
        result = await asyncio.wait_for(build, 10)
        assert not result.ok and "cancelled" in result.message
        assert [r.status for r in engine.builds.records()] == ["cancelled"]
        bad = await engine.execute(engine.parse("cancel build nosuch"))
        assert not bad.ok and "no build 'nosuch'" in bad.message
    finally:
        await engine.close()


async def test_history_survives_restart(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    engine = _engine(cfg)
    outcome = await engine.execute(engine.parse("build itrust"))
    await engine.close()
    assert outcome.ok, outcome.message
    again = _engine(cfg)
    records = again.builds.records()
    assert [r.status for r in records] == ["succeeded"]
    assert records[0].artifact and Path(records[0].artifact).is_file() and records[0].duration > 0
    await again.close()


async def test_unreachable_repo_reported_once_and_other_apps_keep_polling(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    text = cfg.read_text()
    app_block = text[text.index("  itrust:\n    group:"):]
    broken = app_block.replace("  itrust:\n", "  broken:\n", 1).replace(str(tmp_path / "repo"), str(tmp_path / "nowhere")).replace("demo_repo: true", "demo_repo: false")
    cfg.write_text(text + broken)
    _set(cfg, "branch: production", "branch: production\n    poll_interval: 0.2s")
    _set(cfg, "repo: " + str(tmp_path / "nowhere"), "poll_interval: 0.2s\n    repo: " + str(tmp_path / "nowhere"))
    engine = _engine(cfg, poll=True)
    messages: list[Message] = []
    engine.bus.subscribe(lambda e: messages.append(e) if isinstance(e, Message) else None)
    updates = _updates(engine)
    await engine.start()
    try:
        await _until(lambda: engine.pollers["broken"].polls >= 4 and engine.pollers["itrust"].polls >= 2)
        warnings = [m for m in messages if m.level == "warning" and "broken" in m.text]
        assert len(warnings) == 1 and "cannot poll" in warnings[0].text
        assert any(u.app == "itrust" and u.status == "succeeded" for u in updates) or \
            any(u.app == "itrust" and u.status == "running" for u in updates)
    finally:
        await engine.close()


async def test_missing_branch_reported(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    _set(cfg, "branch: production", "branch: nosuch")
    from opsconsole.demo.repo import ensure_demo_repo

    ensure_demo_repo(tmp_path / "repo", "production")  # a repo that has no branch `nosuch`
    engine = _engine(cfg)
    messages: list[Message] = []
    engine.bus.subscribe(lambda e: messages.append(e) if isinstance(e, Message) else None)
    try:
        for _ in range(3):
            assert await engine.pollers["itrust"].poll_once() is None
        warnings = [m.text for m in messages if m.level == "warning"]
        assert len(warnings) == 1 and "branch 'nosuch' does not exist" in warnings[0]
    finally:
        await engine.close()
