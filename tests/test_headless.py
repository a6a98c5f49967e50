"""Headless `--script` end to end against real processes on loopback, and its bad-input refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, commit_file, kill_services, process_gone, write_config


def run_script(cfg: Path, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-", *args],
                          input=script, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def journal(tmp_path: Path) -> list[dict]:
    path = tmp_path / "state" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_deploy_wait_status_end_to_end(demo_config: Path, tmp_path: Path) -> None:
    proc = run_script(demo_config, "deploy itrust\nwait healthy itrust 30s\nstatus\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ports = json.loads((tmp_path / "state" / "inventory" / "local-ports.json").read_text())
    versions = set()
    for name in ("itrust-1", "itrust-2", "itrust-3"):
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/health", timeout=5) as r:
            versions.add(json.loads(r.read())["version"])
        assert f"{name}" in proc.stdout
    assert len(versions) == 1
    version = versions.pop()
    assert proc.stdout.count(f"version={version}") == 3
    assert "3/3 hosts healthy" in proc.stdout
    # serial: 1 — each host's play finished before the next began
    lines = proc.stdout.splitlines()
    first_done_2 = next(i for i, l in enumerate(lines) if "itrust-2" in l and "health check" in l)
    first_start_3 = next(i for i, l in enumerate(lines) if "itrust-3" in l and "release directory" in l)
    assert first_done_2 < first_start_3
    entries = journal(tmp_path)
    started = [e["command"] for e in entries if e["kind"] == "command.start"]
    ended = [(e["command"], e["ok"]) for e in entries if e["kind"] == "command.end"]
    assert started == ["deploy itrust", "wait healthy itrust 30s", "status"]
    assert ended == [("deploy itrust", True), ("wait healthy itrust 30s", True), ("status", True)]
    assert all("@" in e["issuer"] for e in entries)
    history = subprocess.run([sys.executable, "-m", "opsconsole", "history", "--as-script", "--config", str(demo_config)],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert history.stdout.splitlines() == started


def test_json_output_and_exit_code_on_failure(demo_config: Path, tmp_path: Path) -> None:
    proc = run_script(demo_config, "run itrust -- echo hello from $PWD\nrun itrust-2 -- exit 4\nstatus\n", "--json")
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    outputs = [e for e in events if e["event"] == "OutputLine"]
    assert {e["host"] for e in outputs} == {"itrust-1", "itrust-2", "itrust-3"}
    assert all(e["line"].startswith("hello from ") and e["line"].endswith(e["host"]) for e in outputs)
    finished = [e for e in events if e["event"] == "CommandFinished"]
    assert [f["ok"] for f in finished] == [True, False]  # stopped at the first failure
    assert "itrust-2: exit code 4" in finished[1]["message"]
    keep = run_script(demo_config, "run itrust-2 -- exit 4\nrun itrust-1 -- true\n", "--keep-going")
    assert keep.returncode == 1 and "✔ run itrust-1 -- true" in keep.stdout


@pytest.mark.parametrize("script, words, line", [
    ("status\ndeploi itrust\n", "unknown command 'deploi' (did you mean deploy?)", 2),
    ("status\n\n# comment\nwait healthy itrust\n", "a timeout is required", 4),
    ("deploy nosuch\n", "unknown app 'nosuch'; apps: itrust", 1),
])
def test_bad_script_refused_before_anything_runs(demo_config: Path, tmp_path: Path, script: str, words: str,
                                                 line: int) -> None:
    proc = run_script(demo_config, script)
    assert proc.returncode == 2
    assert f"<stdin>:{line}:" in proc.stderr and words in proc.stderr
    # Nothing was made: no state directory (journal, port book), no demo repo.
    assert not (tmp_path / "state").exists() and not (tmp_path / "repo").exists()


def test_bad_playbook_refused_before_anything_runs(tmp_path: Path) -> None:
    playbook = tmp_path / "bad.yml"
    playbook.write_text("- hosts: itrust\n  tasks:\n    - name: oops\n      shel: echo hi\n")
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace(str(ROOT / "playbooks" / "itrust-deploy.yml"), str(playbook)))
    proc = run_script(cfg, "status\n")
    assert proc.returncode == 2
    assert f"{playbook}:4" in proc.stderr and "shel" in proc.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "repo").exists()


def test_check_writes_nothing_and_reads_the_names_the_state_holds(demo_config: Path, tmp_path: Path) -> None:
    """`--check` once made the state directory, the port book and the demo repos: a check changed the machine."""
    check = [sys.executable, "-m", "opsconsole", "--config", str(demo_config), "--check"]
    proc = subprocess.run(check, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "is valid" in proc.stdout, proc.stderr
    proc = subprocess.run(check + ["--script", "-"], input="status\nrun itrust-2 -- true\n", capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "are valid" in proc.stdout, proc.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "repo").exists()
    # Once the console has run, a check reads the state as it is and leaves it as it was; what else lies
    # beside the inventory (another console's temp file mid-save, a link, a pipe) is none of its business.
    assert run_script(demo_config, "status\n").returncode == 0
    inventory = tmp_path / "state" / "inventory"
    (inventory / ".ec2-web.json.0a1b2c.tmp").symlink_to(tmp_path / "gone")
    (inventory / "ec2-web.json").symlink_to("/dev/zero")
    os.mkfifo(inventory / "ec2-db.json")
    before = sorted((p.relative_to(tmp_path), p.lstat().st_mtime_ns) for p in (tmp_path / "state").rglob("*"))
    proc = subprocess.run(check + ["--script", "-"], input="run itrust-3 -- true\nrun itrust-4 -- true\n",
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "<stdin>:2:" in proc.stderr and "itrust-4" in proc.stderr, proc.stderr
    assert sorted((p.relative_to(tmp_path), p.lstat().st_mtime_ns) for p in (tmp_path / "state").rglob("*")) == before


def test_ctrl_c_cancels_and_journals_interruption(demo_config: Path, tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    # SIGINT as a terminal delivers it: a suite started in the background (`make test &` from a script) runs with
    # SIGINT ignored, which its children inherit, and then no Ctrl-C can reach the console (as POSIX says a
    # background job's should not); this test once hung so. faulthandler: were Ctrl-C ever not obeyed, SIGABRT
    # makes the console print every thread's stack, and the failure says where it was stuck.
    proc = subprocess.Popen([sys.executable, "-m", "opsconsole", "--config", str(demo_config), "--script", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(f"run itrust-1 -- sleep 300 & echo $! > {marker}; wait\n")
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() must not flush it
    deadline = time.time() + 30
    while not (marker.exists() and marker.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)  # until the child runs and its pid is written whole
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"Ctrl-C not obeyed in 30 s; where the console was:\n{err}\n{out}") from None
    assert proc.returncode == 130, out + err
    child = int(marker.read_text())
    assert process_gone(child), "the command's child was orphaned"
    kinds = [e["kind"] for e in journal(tmp_path)]
    assert kinds == ["command.start", "command.interrupted"]


def test_provision_runs_the_groups_playbook(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("    count: 3\n", f"    count: 3\n    provision: {ROOT / 'playbooks' / 'itrust-install.yml'}\n", 1))
    proc = run_script(cfg, "provision itrust\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in (1, 2, 3):
        root = tmp_path / "state" / "hosts" / f"itrust-{i}"
        assert all((root / d).is_dir() for d in ("releases", "log", "run"))
        assert f"itrust-{i} runs Python 3" in proc.stdout
    assert "3 host(s) of itrust provisioned" in proc.stdout


def _settle(cfg: Path, seconds: float) -> None:
    cfg.write_text(cfg.read_text().replace("    vars:\n", f"    vars:\n      settle_seconds: {seconds}\n", 1))


def _deployed_then_committed(tmp_path: Path, count: int = 2, settle: float = 0.0) -> tuple[Path, str, str]:
    """A fleet running v1 and a new commit on the branch: (config, v1, v2)."""
    cfg = write_config(tmp_path, count=count)
    if settle:
        _settle(cfg, settle)
    first = run_script(cfg, "deploy itrust\n")
    assert first.returncode == 0, first.stdout + first.stderr
    ports = json.loads((tmp_path / "state" / "inventory" / "local-ports.json").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['itrust-1']}/health", timeout=5) as r:
        v1 = json.loads(r.read())["version"]
    v2 = commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")[:7]
    return cfg, v1, v2


def test_roll_output_reads_in_the_order_things_happened(tmp_path: Path) -> None:
    try:
        cfg, v1, v2 = _deployed_then_committed(tmp_path)
        proc = run_script(cfg, "roll itrust\n")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        words = ("draining", "drained", "deploying", "gating", "done", "idle", "failed")
        for host in ("itrust-1", "itrust-2"):
            seen = []
            for line in proc.stdout.splitlines():
                rest = line[9:]  # after the HH:MM:SS stamp
                if rest.startswith(f"{host:<16} ") and rest[17:].split(" ")[0] in words:
                    seen.append(rest[17:])
            # the rollout's step first, then what it made of the host; never idle before the gate passed
            assert seen == ["draining", f"drained {v1}", "deploying", f"deploying {v1}", "gating",
                            f"deploying {v2}", "done", f"idle {v2}"], (host, proc.stdout)
    finally:
        kill_services(tmp_path / "state")


def test_roll_in_batches_prints_its_progress(tmp_path: Path) -> None:
    try:
        cfg, _v1, _v2 = _deployed_then_committed(tmp_path)
        proc = run_script(cfg, "roll itrust --batch 50%\n")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        progress = [line[9:] for line in proc.stdout.splitlines() if line[9:].startswith("rollout itrust: batch ")]
        assert progress[0] == "rollout itrust: batch 1/2 · 0/2 done · 0 failed · ETA …", proc.stdout
        assert "rollout itrust: batch 1/2 · 1/2 done · 0 failed · ETA " in "\n".join(progress), proc.stdout
        assert progress[-1] == "rollout itrust: batch 2/2 · 2/2 done · 0 failed · ETA 0s", proc.stdout
    finally:
        kill_services(tmp_path / "state")


def test_roll_runs_on_when_its_output_reader_goes_away(tmp_path: Path) -> None:
    """`opsconsole --script roll.ops | head -2`: the rollout finishes and is journaled; exit as documented."""
    try:
        cfg, _, v2 = _deployed_then_committed(tmp_path, settle=0.5)
        proc = subprocess.Popen([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
        proc.stdin.write("roll itrust\nstatus itrust\n")
        proc.stdin.close()
        proc.stdin = None
        head = [proc.stdout.readline() for _ in range(2)]
        assert "▶ roll itrust" in head[0], head
        proc.stdout.close()  # what `head -2` does after its second line
        proc.stdout = None
        try:
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err  # every command succeeded: exit 0, as documented
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert "the output was closed; the script runs on" in err
        ended = [(e["command"], e["ok"]) for e in journal(tmp_path) if e["kind"] == "command.end"]
        assert ended[-2:] == [("roll itrust", True), ("status itrust", True)], ended
        rollouts = [json.loads(line) for f in (tmp_path / "state" / "rollouts").glob("*.jsonl")
                    for line in f.read_text().splitlines()]
        assert [e["status"] for e in rollouts if e["kind"] == "status"][-1] == "succeeded"
        ports = json.loads((tmp_path / "state" / "inventory" / "local-ports.json").read_text())
        for name in ("itrust-1", "itrust-2"):
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/health", timeout=5) as r:
                assert json.loads(r.read())["version"] == v2
    finally:
        kill_services(tmp_path / "state")
