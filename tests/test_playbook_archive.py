"""unarchive means what Ansible's means: tests/playbooks/unarchive/site.yml (an archive from this machine, one on
the host with remote_src and creates) run natively and by real ansible-playbook (`-c local`) leaves the same
files with the same modes and the same number of changes; a second run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from local_twin import ansible_run, native_run
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "unarchive" / "site.yml"


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every file and directory under root: relative path -> (octal mode, content; the archive as bytes)."""
    return {str(p.relative_to(root)): (oct(p.stat().st_mode & 0o777),
                                       p.read_text(errors="backslashreplace") if p.is_file() else "/")
            for p in sorted(root.rglob("*"))}


async def native(rig: Rig, root: Path, path: Path = SITE) -> tuple[bool, int]:
    result, changed = await native_run(rig, path, {"host_root": str(root)})
    return result.ok, changed


def ansible(tmp_path: Path, root: Path) -> int:
    return ansible_run(tmp_path, SITE, {"host_root": str(root)})["changed"]


async def test_unarchive_leaves_what_ansible_leaves_and_a_second_run_changes_nothing(rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ok, changed = await native(rig, ours)
    assert ok, rig.statuses("localhost")
    assert changed == ansible(tmp_path, theirs) == 5
    assert tree(ours) == tree(theirs)
    files = tree(ours)
    assert files["releases/app-1.0/bin/app"] == ("0o755", "#!/bin/sh\necho app 1.0\n")
    assert files["releases/app-1.0/app.conf"] == ("0o640", "port=8080\n")
    assert files["copy/app-1.0/app.conf"] == ("0o640", "port=8080\n")

    assert (await native(rig, ours))[1] == 0 == ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    # a file of the archive changed on the host: unpacked again, as Ansible does
    (ours / "releases" / "app-1.0" / "app.conf").write_text("port=1\n")
    assert (await native(rig, ours))[1] == 1
    assert tree(ours)["releases/app-1.0/app.conf"] == ("0o640", "port=8080\n")
    assert rig.statuses("localhost")["unpack the release from this machine"] == "changed"


async def test_unarchive_into_a_missing_directory_fails_in_ansibles_words(rig: Rig, tmp_path: Path) -> None:
    path = rig.playbook("""
        - hosts: all
          tasks:
            - name: unpack
              unarchive: {src: "{{ archive }}", dest: "{{ host_root }}/nowhere"}
        """)
    rig.events.clear()
    host = Host(name="localhost", group="all", address="127.0.0.1", root=str(tmp_path / "root"))
    result = await rig.runner.run(load_playbook(path), [host], extra_vars={
        "host_root": str(tmp_path / "root"), "archive": str(SITE.parent / "files" / "app-1.0.tar.gz")})
    assert not result.ok
    assert f"dest '{tmp_path / 'root' / 'nowhere'}' must be an existing dir" in result.failures["localhost"]


def test_a_missing_archive_on_this_machine_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("- hosts: all\n  tasks:\n    - name: t\n      unarchive: {src: gone.tgz, dest: /tmp}\n")
    with pytest.raises(SourceError,
                       match=r"p\.yml:4: plays\[0\]\.tasks\[0\]\.unarchive\.src: file not found: gone\.tgz"):
        load_playbook(path)
    path.write_text("- hosts: all\n  tasks:\n    - name: t\n"
                    "      unarchive: {src: /gone.tgz, dest: /tmp, remote_src: true}\n")
    assert load_playbook(path).plays[0].tasks[0].module == "unarchive"  # on the host: known only when it runs
