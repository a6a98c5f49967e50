"""include_role/import_role mean what Ansible's mean: tests/playbooks/include_role/site.yml runs natively and by
real ansible-playbook (`-c local`) with the same files, modes and number of changes (also with --tags), a second
run changes nothing, and handlers notified as `ROLE : name` run once. Bad includes are refused at load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from opsconsole.playbook import loader
from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from local_twin import tree, twins
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "include_role" / "site.yml"


native, ansible = twins(SITE)


def test_include_role_and_import_role_run_natively() -> None:
    [play] = load_playbook(SITE).plays
    assert play.runner == "native", play.why
    assert [h.handler_key for h in play.handlers] == ["app : restart app", "db : reload db"]


async def test_the_same_end_state_as_ansible_playbook_and_a_second_run_changes_nothing(
        rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    changed_ours, changed_theirs = await native(rig, ours), ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert changed_ours == changed_theirs
    files = tree(ours)
    assert files["main.conf"] == ("0o640", "name=main\nport=8080\ngreeting=hello\nmode=plain\nrole=app\n")
    # defaults_from and vars_from; the include's vars beat the play's
    assert files["other.conf"] == ("0o640", "name=other\nport=7070\ngreeting=hi\nmode=extra\nrole=app\n")
    assert files["included-banner.txt"][1] == "welcome\n" and files["flags"][1] == "included=plain\n"
    assert files["seen"][1] == "8080 hello\n"  # import_role's defaults are the play's; include_role's are not
    assert files["restarts.log"][1] == "restarted\n"  # notified three times, by two names: ran once
    assert files["reloads.log"][1] == "reloaded\n"  # handlers_from
    assert "nobody-banner.txt" not in files

    assert await native(rig, ours) == 0 == ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert "restart app" not in rig.statuses("localhost")


async def test_an_imports_tags_are_its_tasks_an_includes_are_not(rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    await native(rig, ours, tags=["app"])
    ansible(tmp_path, theirs, "--tags", "app")
    assert tree(ours) == tree(theirs)
    assert set(tree(ours)) == {"main.conf", "restarts.log"}


def _play(tmp_path: Path, tasks: str) -> Path:
    role = tmp_path / "roles" / "r"
    (role / "tasks").mkdir(parents=True, exist_ok=True)
    (role / "tasks" / "main.yml").write_text("- name: t\n  debug: {msg: hi}\n")
    (role / "handlers").mkdir(exist_ok=True)
    (role / "handlers" / "main.yml").write_text("- name: h\n  debug: {msg: handled}\n")
    path = tmp_path / "p.yml"
    path.write_text("- hosts: all\n  tasks:\n" + textwrap.indent(textwrap.dedent(tasks), "    "))
    return path


@pytest.mark.parametrize("tasks, message", [
    ("- include_role: {name: nosuch}\n",
     r"p\.yml:3: plays\[0\]\.tasks\[0\]\.include_role: role 'nosuch' not found"),
    ("- include_role: {name: r, tasks_from: gone}\n",
     r"p\.yml:3: plays\[0\]\.tasks\[0\]\.include_role\.tasks_from: role 'r' has no tasks/gone"),
    ("- import_role: {name: r, colour: red}\n",
     r"p\.yml:3: plays\[0\]\.tasks\[0\]\.import_role\.colour: unknown argument \(known: name, tasks_from"),
    ("- include_role: {tasks_from: main}\n",
     r"p\.yml:3: plays\[0\]\.tasks\[0\]\.include_role\.name: required: the role's name"),
    ("- include_role: {name: r}\n  register: x\n",
     r"p\.yml:4: plays\[0\]\.tasks\[0\]\.register: not a key of include_role"),
    ("- include_role: {name: r, public: maybe}\n",
     r"p\.yml:3: plays\[0\]\.tasks\[0\]\.include_role\.public: 'maybe' is not true or false"),
    ("- include_role: {name: r}\n- name: n\n  debug: {msg: x}\n  notify: \"other : h\"\n",
     r"p\.yml:6: plays\[0\]\.tasks\[1\]\.notify: no handler named 'other : h' in this play \(handlers: r : h\)"),
])
def test_a_bad_include_is_refused_naming_file_line_and_key(tmp_path: Path, tasks: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        load_playbook(_play(tmp_path, tasks))


def test_what_the_native_runner_lacks_goes_to_ansible_playbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tasks, why in [("- include_role: {name: r, apply: {tags: [x]}}\n", "include_role with apply"),
                       ("- include_role: {name: r}\n  loop: [1, 2]\n", "include_role with a loop"),
                       ("- include_role: {name: \"{{ which }}\"}\n", "include_role of a role named by a template")]:
        [play] = load_playbook(_play(tmp_path, tasks)).plays
        assert (play.runner, play.why) == ("ansible", f"play 1 uses {why}: runs with ansible-playbook")
    path = _play(tmp_path, "- import_role: {name: r}\n")
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text(
        "- community.general.ini_file: {path: /tmp/x, section: a, option: b, value: c}\n")
    [play] = load_playbook(path).plays
    assert play.why == f"play 1 uses community.general.ini_file (in {tmp_path / 'roles/r/tasks/main.yml'}): " \
        "runs with ansible-playbook"
    monkeypatch.setattr(loader, "ansible_playbook", lambda: None)
    with pytest.raises(SourceError, match=r"p\.yml:3: plays\[0\]\.tasks\[0\]\.import_role: community\.general\."
                                          r"ini_file \(in .*roles/r/tasks/main\.yml\) is not run natively and "
                                          r"ansible-playbook is not installed"):
        load_playbook(path)
