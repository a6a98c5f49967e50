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
    assert "itrust-1: nothing would change; not known before running: reload" in text, text
    assert "itrust-2: would change 1 task(s): the config; not known before running: reload" in text, text
    diff = [e["line"] for e in events if e.get("stream") == "diff" and e.get("host") == "itrust-2"]
    assert "-port=1" in diff and "+port=2" in diff, events
    assert not [e for e in events if e.get("stream") == "diff" and e.get("host") == "itrust-1"]
    finished = [(e["host"], e["task"], e["status"]) for e in events if e.get("status")]
    assert ("itrust-2", "the config", "changed") in finished and ("itrust-2", "reload", "skipped") in finished
