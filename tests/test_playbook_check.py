"""Check mode means what Ansible's means: tests/playbooks/check/site.yml run with --check --diff natively and by
real ansible-playbook (`-c local`) on twin roots reports the same status for every task (changed, ok, skipped),
prints the same diffs, and leaves every file byte-identical. A no_log task's diff and a secret never show."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from opsconsole.bundled import bundled_path
from opsconsole.events import OutputLine, TaskFinished
from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from test_ansible_names import ansible_playbook
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "check" / "site.yml"
TOKEN = "tok-1234"


def prepare(root: Path) -> None:
    """A host some way from what site.yml wants: some files right, some wrong, some missing."""
    for d, mode in (("etc", 0o755), ("data", 0o755)):
        (root / d).mkdir(parents=True)
        (root / d).chmod(mode)
    for name, text, mode in (("etc/motd", "old motd\n", 0o644), ("etc/same.txt", "same\n", 0o644),
                             ("etc/mode.txt", "mode\n", 0o644), ("etc/keep.txt", "mine\n", 0o644),
                             ("etc/settings", "debug=true\nlevel=3\n", 0o644), ("etc/hosts", "127.0.0.1 lo\n", 0o644),
                             ("etc/version", "1.0\n", 0o644), ("stale.txt", "old\n", 0o644)):
        (root / name).write_text(text)
        (root / name).chmod(mode)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path under root: (mode, content or link target); directories' content is ''."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, os.readlink(p) if p.is_symlink() else
                                         p.read_bytes() if p.is_file() else "")
    return out


def ansible_check(tmp_path: Path, root: Path, site: Path = SITE) -> tuple[dict[str, str], dict[str, list[str]]]:
    """ansible-playbook --check --diff through opsconsole's events callback: task -> status, task -> diff lines."""
    os.environ.update(ANSIBLE_STDOUT_CALLBACK="opsconsole.builtin.events",
                      ANSIBLE_COLLECTIONS_PATH=str(bundled_path("playbooks", "collections")))
    try:
        done = ansible_playbook(tmp_path, "--check", "--diff", str(site), "-e", f"host_root={root}",
                                "-e", f"token={TOKEN}")
    finally:
        for name in ("ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_COLLECTIONS_PATH"):
            os.environ.pop(name)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses: dict[str, str] = {}
    diffs: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("@opsconsole "):
            event = json.loads(line.removeprefix("@opsconsole "))
            if event["event"] == "end":
                statuses[event["task"]] = event["status"]
            elif event["event"] == "diff":
                diffs.setdefault(event["task"], []).extend(event["text"].splitlines())
    return statuses, diffs


def same_paths(diffs: dict[str, list[str]], root: Path) -> dict[str, list[str]]:
    return {t: [x.replace(str(root), "ROOT") if not x.startswith("+++ after:") or not x.endswith(".j2") else "+++ T"
                for x in d] for t, d in diffs.items()}


async def native_check(rig: Rig, root: Path, site: Path = SITE) -> tuple[dict[str, str], dict[str, list[str]]]:
    rig.events.clear()
    host = Host(name="localhost", group="all", address="127.0.0.1", root=str(root))
    result = await rig.runner.run(load_playbook(site), [host], extra_vars={"host_root": str(root), "token": TOKEN},
                                  check=True, diff=True)
    assert result.ok, result.failures
    diffs: dict[str, list[str]] = {}
    for e in rig.events:
        if isinstance(e, OutputLine) and e.stream == "diff":
            diffs.setdefault(e.source, []).append(e.line)
    return {e.task: e.status for e in rig.finished("localhost")}, diffs


async def test_check_mode_reports_what_ansible_check_reports_and_changes_nothing(rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    prepare(ours), prepare(theirs)
    before = snapshot(ours)
    ours_status, ours_diffs = await native_check(rig, ours)
    theirs_status, theirs_diffs = ansible_check(tmp_path, theirs)
    assert snapshot(ours) == before  # nothing changed on the host, not a mode, not a byte
    assert snapshot(theirs) == before
    assert ours_status == theirs_status
    assert ours_status["a directory that is there"] == "ok"
    assert ours_status["a directory whose mode differs"] == "changed"
    assert ours_status["a config already right"] == "ok" and ours_status["a config whose mode alone differs"] == "changed"
    assert ours_status["a config kept (force false)"] == "ok"
    assert ours_status["a command (check mode cannot tell)"] == "skipped" and ours_status["raw"] == "skipped"
    assert ours_status["a command whose creates is missing"] == "changed"
    assert ours_status["reload the app"] == "skipped"  # the handler was notified, and is a command
    assert ours_status["only in check mode"] == "ok"  # ansible_check_mode is true
    # The same diffs, line for line (paths differ by root only; a template's "after" is the template, which
    # ansible-playbook names by its own temporary copy).
    assert same_paths(ours_diffs, ours) == same_paths(theirs_diffs, theirs)
    assert ours_diffs["a template"][1] == f"+++ after: {SITE.parent / 'templates' / 'app.conf.j2'}"
    assert "+welcome to shop" in ours_diffs["a config whose content changes"]
    assert "-debug=true" in ours_diffs["a line replaced"] and "+debug=false" in ours_diffs["a line replaced"]
    assert "a secret's template, no_log" not in ours_diffs  # a no_log task shows no diff
    assert ours_status["a secret's template, no_log"] == "changed"


async def test_a_second_check_after_the_real_run_says_nothing_would_change(rig: Rig, tmp_path: Path) -> None:
    root = tmp_path / "host"
    prepare(root)
    host = Host(name="localhost", group="all", address="127.0.0.1", root=str(root))
    extra = {"host_root": str(root), "token": TOKEN}
    assert (await rig.runner.run(load_playbook(SITE), [host], extra_vars=extra)).ok
    result = await rig.runner.run(load_playbook(SITE), [host], extra_vars=extra, check=True)
    assert result.ok, result.failures
    # Only what check mode cannot know about: the commands without creates/removes (and raw).
    assert result.changed_tasks == {}
    assert result.check_skipped["localhost"] == ["a command (check mode cannot tell)", "raw"]
    assert [e.status for e in rig.finished("localhost") if e.task == "only in check mode"] == ["skipped", "ok"]


async def test_a_secret_in_a_diff_is_masked(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.runner = PlaybookRunner(rig.bus, rig.transport_for, secrets={"db_password": "hunter2-secret"})
    rig.bus.redactor.add(["hunter2-secret"])  # as the engine does with the config's secrets
    [host] = rig.hosts(1)
    result = await rig.run("""
        - hosts: all
          tasks:
            - name: the db config
              copy: {dest: db.conf, content: "password={{ secrets.db_password }}\\n"}
        """, [host], check=True, diff=True)
    assert result.ok and result.changed_tasks == {"web-1": ["the db config"]}
    lines = [e.line for e in rig.events if isinstance(e, OutputLine) and e.stream == "diff"]
    assert lines and not any("hunter2" in line for line in lines), lines
    assert not (rig.root("web-1") / "db.conf").exists()


async def test_diff_without_check_shows_what_a_real_run_changed(rig: Rig) -> None:
    [host] = rig.hosts(1)
    rig.root("web-1").mkdir(parents=True)
    (rig.root("web-1") / "app.conf").write_text("port=1\n")
    result = await rig.run("""
        - hosts: all
          tasks:
            - name: the port
              lineinfile: {path: app.conf, regexp: "^port=", line: "port=2"}
        """, [host], diff=True)
    assert result.ok
    lines = [e.line for e in rig.events if isinstance(e, OutputLine) and e.stream == "diff"]
    assert "-port=1" in lines and "+port=2" in lines
    assert (rig.root("web-1") / "app.conf").read_text() == "port=2\n"


@pytest.mark.parametrize("keyword", ["check_mode: maybe", "diff: 3"])
def test_a_bad_check_keyword_is_refused_naming_the_line(tmp_path: Path, keyword: str) -> None:
    from opsconsole.yamlsource import SourceError
    path = tmp_path / "p.yml"
    path.write_text(f"- hosts: all\n  tasks:\n    - name: t\n      debug: {{msg: hi}}\n      {keyword}\n")
    key = keyword.split(":")[0]
    with pytest.raises(SourceError, match=rf"p\.yml:5: plays\[0\]\.tasks\[0\]\.{key}: .* is not true or false"):
        load_playbook(path)


async def test_a_play_run_by_ansible_playbook_is_checked_by_it_with_its_diff_on_the_bus(rig: Rig) -> None:
    [host] = rig.hosts(1)
    rig.root("web-1").mkdir(parents=True)
    (rig.root("web-1") / "app.ini").write_text("name=old\nport=1\n")
    path = rig.playbook("""
        - hosts: web
          gather_facts: false
          tasks:
            - name: edit with a module we do not have
              ansible.builtin.replace: {path: "{{ host_root }}/app.ini", regexp: '^port=.*$', replace: 'port=2'}
        """)
    book = load_playbook(path)
    assert book.plays[0].runner == "ansible"
    result = await rig.runner.run(book, [host], check=True, diff=True)
    assert result.ok, result.failures
    assert rig.statuses("web-1") == {"edit with a module we do not have": "changed"}
    assert result.changed_tasks == {"web-1": ["edit with a module we do not have"]}
    lines = [e.line for e in rig.events if isinstance(e, OutputLine) and e.stream == "diff"]
    assert "-port=1" in lines and "+port=2" in lines, lines
    assert (rig.root("web-1") / "app.ini").read_text() == "name=old\nport=1\n"  # --check reached ansible-playbook


async def test_unarchive_in_check_mode_is_skipped_as_ansible_does(rig: Rig, tmp_path: Path) -> None:
    site = SITE.parent.parent / "unarchive" / "site.yml"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    host = Host(name="localhost", group="all", address="127.0.0.1", root=str(ours))
    for root in (ours, theirs):
        root.mkdir()
        assert (await rig.runner.run(load_playbook(site), [replace(host, root=str(root))],
                                     extra_vars={"host_root": str(root)})).ok
        unpacked = sorted(p for p in (root / "releases").rglob("*") if p.is_file())
        unpacked[0].write_text("edited\n")  # the release on the host no longer matches the archive
    before = snapshot(ours), snapshot(theirs)
    ours_status, _ = await native_check(rig, ours, site)
    theirs_status, _ = ansible_check(tmp_path, theirs, site)
    assert (snapshot(ours), snapshot(theirs)) == before
    assert ours_status == theirs_status
    # Ansible's tar handler has no check mode; `creates` there skips it in any mode
    assert ours_status["unpack the release from this machine"] == "skipped"
    assert ours_status["unpack it there, once"] == "skipped"
