"""`playbook run FILE [--limit HOSTS] [--check]` in the command grammar: from a script, like any command."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsconsole.engine.commands import CommandError, Names, PlaybookRun, parse_command
from test_headless import journal, run_script
from tests.conftest import write_config

PLAY = """\
- name: mark the hosts
  hosts: itrust
  tasks:
    - name: mark
      ansible.builtin.copy:
        content: "marked {{ inventory_hostname }}\\n"
        dest: marked.txt
        mode: "0600"
"""


def test_playbook_run_from_a_script_with_limit_and_check(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (cfg.parent / "mark.yml").write_text(PLAY)
    hosts = tmp_path / "state" / "hosts"

    check = run_script(cfg, "playbook run mark.yml --limit itrust-2 --check\n")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "play 1 'mark the hosts' on itrust-2 (hosts: itrust): runs natively" in check.stdout, check.stdout
    assert "mark (copy)" in check.stdout
    assert not list(hosts.glob("*/marked.txt"))  # --check touches no host

    done = run_script(cfg, "playbook run mark.yml --limit itrust-1,itrust-3\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "playbook mark.yml: ran on 2 host(s): itrust-1, itrust-3" in done.stdout
    assert sorted(p.parent.name for p in hosts.glob("*/marked.txt")) == ["itrust-1", "itrust-3"]
    marked = hosts / "itrust-1" / "marked.txt"
    assert marked.read_text() == "marked itrust-1\n" and marked.stat().st_mode & 0o777 == 0o600
    assert [(e["kind"], e["command"]) for e in journal(tmp_path)][-2:] == \
        [("command.start", "playbook run mark.yml --limit itrust-1,itrust-3"),
         ("command.end", "playbook run mark.yml --limit itrust-1,itrust-3")]


def test_a_bad_playbook_is_named_and_nothing_runs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (cfg.parent / "bad.yml").write_text(PLAY.replace("mode: \"0600\"", "mode: \"0600\"\n        frce: true"))
    proc = run_script(cfg, "playbook run bad.yml\n")
    assert proc.returncode != 0
    assert f"{cfg.parent / 'bad.yml'}:9: plays[0].tasks[0].ansible.builtin.copy.frce: unknown argument" \
        in proc.stdout + proc.stderr
    assert not list((tmp_path / "state" / "hosts").glob("*/marked.txt"))


NAMES = Names(apps=("itrust",), groups=("itrust", "db"), hosts=("itrust-1", "db-1"))


def test_the_grammar() -> None:
    assert parse_command("playbook run site.yml --limit itrust,db-1 --check", NAMES) == \
        PlaybookRun(file="site.yml", limit=("itrust", "db-1"), check=True)
    assert parse_command("playbook run site.yml", NAMES).text() == "playbook run site.yml"
    for text, words in [("playbook site.yml", "say `playbook run FILE"), ("playbook run", "a playbook file is required"),
                        ("playbook run x.yml --limit nope", "'nope' is neither a host nor a group"),
                        ("playbook run x.yml --fast", "unknown option '--fast'")]:
        with pytest.raises(CommandError, match=words):
            parse_command(text, NAMES)
