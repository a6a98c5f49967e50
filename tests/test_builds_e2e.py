"""End to end, headless: a commit to `production` is built and rolled out with nobody at the keyboard."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, commit_file, kill_services, write_config


def _versions(tmp_path: Path) -> list[str | None]:
    ports = json.loads((tmp_path / "state" / "inventory" / "local-ports.json").read_text())
    found = []
    for name in sorted(ports):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/health", timeout=2) as r:
                found.append(json.loads(r.read())["version"])
        except OSError:
            found.append(None)
    return found


def test_commit_to_production_is_built_and_rolled_out(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=3)
    text = cfg.read_text().replace("branch: production", "branch: production\n    poll_interval: 0.5s", 1)
    cfg.write_text(text.replace("      playbook:", "      on_build: rolling\n      playbook:", 1))
    watcher = None
    try:
        first = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                               input="deploy itrust\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert first.returncode == 0, first.stdout + first.stderr
        v1 = _versions(tmp_path)
        assert len(set(v1)) == 1 and v1[0]
        watcher = subprocess.Popen([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--watch", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        heads = tmp_path / "state" / "builds" / "heads.json"  # the poller's first poll records the current head
        deadline = time.time() + 30
        while time.time() < deadline and not (heads.exists() and "itrust" in heads.read_text()):
            time.sleep(0.05)
        assert heads.exists(), "the watcher's poller never polled"
        sha = commit_file(tmp_path / "repo", "message.txt", "hello from v2\n", "v2: new greeting")
        deadline = time.time() + 90
        while time.time() < deadline and _versions(tmp_path) != [sha[:7]] * 3:
            time.sleep(0.2)
        assert _versions(tmp_path) == [sha[:7]] * 3
        journal = tmp_path / "state" / "journal.jsonl"
        while time.time() < deadline and '"kind": "command.end"' not in journal.read_text().split("roll itrust")[-1]:
            time.sleep(0.1)  # the rollout records its end just after the last host answers
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 130, err
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        builds = [(e["commit"], e["status"]) for e in events if e["event"] == "BuildUpdate"]
        assert builds[-1] == (sha, "succeeded") and (v1[0], "running") not in [(c[:7], s) for c, s in builds]
        entries = [json.loads(line) for line in (tmp_path / "state" / "journal.jsonl").read_text().splitlines()]
        roll = [e for e in entries if e["kind"] == "command.end" and e["command"].startswith("roll itrust")]
        assert roll and roll[-1]["ok"] and "(build itrust-" in roll[-1]["issuer"]
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        kill_services(tmp_path / "state")
