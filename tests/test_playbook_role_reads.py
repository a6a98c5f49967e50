"""Loading a playbook parses each role file once: the check for what runs with Ansible and the native
loading read the same tasks and handlers files (a role listed twice is read once too)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from opsconsole.playbook import loader as loader_module
from opsconsole.playbook.loader import load_playbook


def test_each_role_file_is_parsed_once_per_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    role = tmp_path / "roles" / "web"
    (role / "tasks").mkdir(parents=True)
    (role / "handlers").mkdir()
    (role / "tasks" / "main.yml").write_text("- name: say hello\n  command: echo hello\n  notify: restart web\n")
    (role / "handlers" / "main.yml").write_text("- name: restart web\n  command: echo restart\n")
    playbook = tmp_path / "site.yml"
    playbook.write_text("- hosts: all\n  roles: [web, {role: web, vars: {again: true}}]\n"
                        "  tasks:\n    - name: after\n      command: echo after\n")
    reads: Counter[Path] = Counter()
    real = loader_module.load_yaml

    def counted(path):
        reads[Path(path)] += 1
        return real(path)

    monkeypatch.setattr(loader_module, "load_yaml", counted)
    play = load_playbook(playbook).plays[0]
    assert [t.name for t in play.tasks] == ["say hello", "say hello", "after"]
    assert [h.name for h in play.handlers] == ["restart web"]
    assert play.tasks[1].role_vars["again"] is True and "again" not in play.tasks[0].role_vars
    assert reads[role / "tasks" / "main.yml"] == 1, reads
    assert reads[role / "handlers" / "main.yml"] == 1, reads
