"""`playbook run FILE --check [--diff]` from a script: each host says what would change, the diff shows in the
output and in --json as OutputLine events (stream "diff"), and no host is touched."""

from __future__ import annotations

import json
from pathlib import Path

from test_headless import run_script
from tests.conftest import write_config

PLAY = """\
- name: configure
  hosts: itrust
  tasks:
    - name: the config
      ansible.builtin.copy:
        content: "port=2\\n"
        dest: app.conf
    - name: a marker
      ansible.builtin.copy:
        content: "same\\n"
        dest: marker
    - name: reload
      ansible.builtin.command: touch reloaded
"""


def test_playbook_check_with_diff_tells_each_host_and_touches_none(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (cfg.parent / "conf.yml").write_text(PLAY)
    hosts = tmp_path / "state" / "hosts"
    for name in ("itrust-1", "itrust-2"):
        (hosts / name).mkdir(parents=True, exist_ok=True)
        (hosts / name / "marker").write_text("same\n")
    (hosts / "itrust-1" / "app.conf").write_text("port=2\n")
    (hosts / "itrust-2" / "app.conf").write_text("port=1\n")
    before = {p: p.read_bytes() for p in hosts.rglob("*") if p.is_file()}

    proc = run_script(cfg, "playbook run conf.yml --limit itrust-1,itrust-2 --check --diff\n", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p: p.read_bytes() for p in hosts.rglob("*") if p.is_file()} == before  # nothing touched
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    text = proc.stdout
    assert "itrust-1: nothing would change; not run in check mode (cannot tell): reload" in text, text
    assert "itrust-2: would change 1 task(s): the config; not run in check mode (cannot tell): reload" in text, text
    diff = [e["line"] for e in events if e.get("stream") == "diff" and e.get("host") == "itrust-2"]
    assert "-port=1" in diff and "+port=2" in diff, events
    assert not [e for e in events if e.get("stream") == "diff" and e.get("host") == "itrust-1"]
    finished = [(e["host"], e["task"], e["status"]) for e in events if e.get("status")]
    assert ("itrust-2", "the config", "changed") in finished and ("itrust-2", "reload", "skipped") in finished


async def test_roll_plan_checks_the_deploy_playbook_on_every_host(tmp_path: Path) -> None:
    from test_rollouts import _engine, _deploy_v1, _version_on
    from tests.conftest import commit_file, kill_services
    cfg = write_config(tmp_path, count=3)
    engine = _engine(cfg)
    said: list[str] = []
    try:
        v1 = await _deploy_v1(engine)
        hosts = tmp_path / "state" / "hosts"
        # itrust-3's environment file was edited by hand: only there would the template change it back.
        (hosts / "itrust-3" / "app.env").write_text((hosts / "itrust-3" / "app.env").read_text() + "EDITED=1\n")
        before = {p: p.read_bytes() for p in hosts.rglob("*") if p.is_file() and "log" not in p.parts}
        engine.bus.subscribe(lambda e: said.append(getattr(e, "text", "")))
        same = await engine.execute(engine.parse(f"roll itrust --version {v1} --plan"))
        assert same.ok and "nothing changed" in same.message
        lines = [line.strip() for line in said]
        assert "deploy playbook, checked (--check) on 3 host(s):" in lines, lines
        unknown = "; not run in check mode (cannot tell): health check"
        assert f"itrust-1: nothing would change{unknown}" in lines, "\n".join(lines)
        assert f"itrust-2: nothing would change{unknown}" in lines, "\n".join(lines)
        assert "itrust-3: would change 2 task(s): write the host's environment file, restart the app" + unknown \
            in lines, "\n".join(lines)
        said.clear()
        sha = commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        plan = await engine.execute(engine.parse("roll itrust --plan"))
        assert plan.ok, plan.message
        lines = [line.strip() for line in said]
        for host in ("itrust-1", "itrust-2", "itrust-3"):
            told = next(line for line in lines if line.startswith(f"{host}: "))
            assert "upload the artifact" in told and "point current at the release" in told \
                and "restart the app" in told, told
        after = {p: p.read_bytes() for p in hosts.rglob("*") if p.is_file() and "log" not in p.parts}
        assert after == before  # the plan checked, and touched nothing
        assert all(_version_on(engine, f"itrust-{i}") == v1 for i in (1, 2, 3)) and sha[:7] != v1
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_roll_plan_check_is_bounded_by_deploy_timeout_per_host(tmp_path: Path) -> None:
    import socket
    import time
    from test_rollouts import _engine
    from tests.conftest import kill_services
    with socket.socket() as s:  # a port nothing listens on: the check's wait_for waits on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slow = tmp_path / "slow-deploy.yml"
    slow.write_text(f"""\
- hosts: all
  tasks:
    - name: a wait the check runs too
      ansible.builtin.wait_for: {{port: {port}, host: 127.0.0.1, timeout: 120}}
""")
    cfg = write_config(tmp_path, count=2)
    text = cfg.read_text()
    cfg.write_text(text.replace(next(line for line in text.splitlines() if "itrust-deploy.yml" in line),
                                f"      playbook: {slow}")
                   .replace("    vars:\n", "    rollout:\n      deploy_timeout: 2s\n    vars:\n", 1))
    engine = _engine(cfg)
    said: list[str] = []
    tasks: list[object] = []
    engine.bus.subscribe(lambda e: said.append(getattr(e, "text", "")))
    engine.bus.subscribe(lambda e: tasks.append(e) if type(e).__name__ in ("TaskStarted", "TaskFinished") else None)
    try:
        started = time.monotonic()
        plan = await engine.execute(engine.parse("roll itrust --plan"))
        assert plan.ok, plan.message
        lines = [line.strip() for line in said]
        for host in ("itrust-1", "itrust-2"):
            assert f"{host}: could not check: no answer within 2s (deploy_timeout)" in lines, "\n".join(lines)
        # both hosts at once, each given 2s: not 2 x 2s, nor the wait's 120s (the build comes first: a few s)
        assert time.monotonic() - started < 30
        assert not tasks  # quiet: the plan's check says one line per host, not its tasks' events
    finally:
        await engine.close()
        kill_services(tmp_path / "state")
