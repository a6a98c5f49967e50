"""The native modules mean what Ansible's mean: tests/playbooks/modules/site.yml (copy force/mode, lineinfile,
blockinfile, stat + register, command/shell creates/removes/chdir in both forms, raw, wait_for path/state) run
natively and by real ansible-playbook (`-c local`) leaves the same files with the same modes and reports the
same number of changes; a second run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from test_ansible_names import ansible_playbook
from local_twin import recap, tree, twins
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "modules" / "site.yml"


native, ansible = twins(SITE)


async def test_native_modules_leave_what_ansible_leaves_and_a_second_run_changes_nothing(
        rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root in (ours, theirs):  # keep.conf exists before: `force: false` must leave it alone
        (root / "etc").mkdir(parents=True)
        (root / "etc").chmod(0o755)
        (root / "etc" / "keep.conf").write_text("mine!\n")
        (root / "etc" / "keep.conf").chmod(0o640)
    first_ours, first_theirs = await native(rig, ours), ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert first_ours == first_theirs
    files = tree(ours)
    assert files["etc/keep.conf"] == ("0o640", "mine!\n")
    assert files["etc/app.conf"][1] == "# app\nport=8080\n[section]\nowner=ops\nname=old\n"
    assert files["etc/new.conf"] == ("0o600", "made=yes\n")
    assert files["etc/hosts.conf"][1] == ("# BEGIN ANSIBLE MANAGED BLOCK\n10.0.0.1 app-1\n10.0.0.2 app-2\n"
                                          "# END ANSIBLE MANAGED BLOCK\n")
    assert "etc/built" in files and "etc/cleaned.txt" not in files  # removes: its file was never there
    statuses = rig.statuses("localhost")
    assert statuses["build once (creates, chdir, free form)"] == "changed"

    assert await native(rig, ours) == 0 == ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert rig.statuses("localhost")["build once (creates, chdir, free form)"] == "ok"  # skipped: built exists


async def test_file_directory_gives_its_mode_to_every_directory_it_creates(rig: Rig) -> None:
    # As Ansible's file module (found by the MariaDB corpus twin test): parents it creates get the mode too,
    # a parent that was there keeps its own.
    (rig.root("web-1") / "kept").mkdir(parents=True, mode=0o755)
    result = await rig.run("""
        - hosts: web
          tasks:
            - file: {path: "{{ host_root }}/kept/a/b", state: directory, mode: "0700"}
        """, rig.hosts(1))
    assert result.ok, result.failures
    root = rig.root("web-1")
    assert {p: oct((root / p).stat().st_mode & 0o777) for p in ("kept", "kept/a", "kept/a/b")} == \
        {"kept": "0o755", "kept/a": "0o700", "kept/a/b": "0o700"}
    rig.events.clear()
    assert (await rig.run("""
        - hosts: web
          tasks:
            - file: {path: "{{ host_root }}/kept/a/b", state: directory, mode: "0700"}
        """, rig.hosts(1))).ok
    assert set(rig.statuses("web-1").values()) == {"ok"}


BACKUP_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: config, kept as a backup when it changes
      copy: {content: "{{ text }}", dest: "{{ host_root }}/etc/app.conf", backup: true, owner: nobody, group: nogroup, mode: "0640"}
    - name: a short pause
      pause: {seconds: 1}
"""


async def test_copy_backup_owner_group_and_pause_as_ansible(rig: Rig, tmp_path: Path) -> None:
    import grp  # noqa: PLC0415
    import os  # noqa: PLC0415
    import time  # noqa: PLC0415

    if os.geteuid() != 0:
        pytest.skip("owner/group need root")
    (tmp_path / "b.yml").write_text(BACKUP_PLAY)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root in (ours, theirs):
        (root / "etc").mkdir(parents=True)
    counts: dict[str, list[int]] = {"ours": [], "theirs": []}
    for text in ("one", "two", "two"):
        rig.events.clear()
        host = Host(name="localhost", group="all", address="127.0.0.1", root=str(ours))
        started = time.monotonic()
        result = await rig.runner.run(load_playbook(tmp_path / "b.yml"), [host],
                                      extra_vars={"host_root": str(ours), "text": text})
        assert result.ok, result.failures
        assert time.monotonic() - started >= 1.0  # the pause waited
        counts["ours"].append(sum(1 for e in rig.finished("localhost") if e.status == "changed"))
        done = ansible_playbook(tmp_path, str(tmp_path / "b.yml"), "-e", f"host_root={theirs}", "-e", f"text={text}")
        assert done.returncode == 0, done.stdout + done.stderr
        counts["theirs"].append(recap(done.stdout)["changed"])
    assert counts["ours"] == counts["theirs"] == [1, 1, 0]
    for root in (ours, theirs):
        conf = root / "etc" / "app.conf"
        st = conf.stat()
        assert (conf.read_text(), oct(st.st_mode & 0o777), st.st_uid, grp.getgrgid(st.st_gid).gr_name) == \
            ("two", "0o640", 65534, "nogroup")
        backups = sorted((root / "etc").glob("app.conf.*~"))
        assert [b.read_text() for b in backups] == ["one"], backups  # one backup: the change from one to two
