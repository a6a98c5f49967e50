"""Native roles mean what Ansible's mean: tests/playbooks/roles/site.yml (a role listed twice, with an entry's
vars, a role parameter, tags and `when`; defaults, vars/main.yml, templates/, files/, handlers, include_tasks
inside a role) runs natively and by real ansible-playbook (`-c local`) with the same files, modes and number
of changes; a second run changes nothing. A bad role is refused at load, naming the file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from opsconsole.playbook import loader
from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from local_twin import tree, twins
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "roles" / "site.yml"


native, ansible = twins(SITE)


def test_a_play_with_roles_runs_natively() -> None:
    [play] = load_playbook(SITE).plays
    assert play.runner == "native", play.why
    assert [h.name for h in play.handlers] == ["restart web"]  # the role's, once though the role is listed twice


async def test_roles_give_the_same_end_state_as_ansible_playbook_and_a_second_run_changes_nothing(
        rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    changed_ours, changed_theirs = await native(rig, ours), ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert changed_ours == changed_theirs
    files = tree(ours)
    # play vars beat defaults, vars/main.yml beats play vars, a parameter beats defaults, entry vars beat all
    assert files["first/web.conf"] == ("0o640", "name=first\nport=9000\nuser=role\nflavour=default\n")
    assert files["second/web.conf"] == ("0o640", "name=second\nport=9000\nuser=role\nflavour=param\n")
    assert files["first/index.html"][1] == "<h1>from the role</h1>\n"  # copy src from the role's files/
    assert files["first/role"] == ("0o600", "web web\n")  # include_tasks inside the role, role_name/role_path
    assert files["marker-when-true"][1] == "marker-when-true role\n" and "marker-when-false" not in files
    assert files["after-roles"][1] == "first\n"  # the roles' defaults are visible to the play's tasks
    assert files["restarts.log"][1] == "restarted second\n"  # the last loaded handler of that name ran, once

    assert await native(rig, ours) == 0 == ansible(tmp_path, theirs)
    assert tree(ours) == tree(theirs)
    assert "restart web" not in rig.statuses("localhost")  # not notified: the handler does not run


async def test_a_role_entry_tags_select_its_tasks_as_ansible_does(rig: Rig, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    await native(rig, ours, tags=["second"])
    ansible(tmp_path, theirs, "--tags", "second")
    assert tree(ours) == tree(theirs)
    assert "second/web.conf" in tree(ours) and "first/web.conf" not in tree(ours)


def _role_play(tmp_path: Path, entry: str, tasks: str | None = "- name: t\n  debug: {msg: hi}\n") -> Path:
    if tasks is not None:
        (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True, exist_ok=True)
        (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text(tasks)
    path = tmp_path / "p.yml"
    path.write_text(textwrap.dedent(f"""\
        - hosts: all
          roles:
            {entry}
        """))
    return path


def test_a_missing_role_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"p\.yml:3: plays\[0\]\.roles\[0\]: role 'nosuch' not found "
                                          r"\(looked for .*/roles/nosuch and .*/nosuch\)"):
        load_playbook(_role_play(tmp_path, "- nosuch"))


def test_a_bad_task_in_a_role_is_refused_naming_the_roles_file(tmp_path: Path) -> None:
    bad = "- name: t\n  ansible.builtin.copy:\n    dest: /tmp/x\n    content: x\n    colour: red\n"
    with pytest.raises(SourceError, match=r"roles/r/tasks/main\.yml:5: tasks\[0\]\.ansible\.builtin\.copy\.colour: "
                                          r"unknown argument"):
        load_playbook(_role_play(tmp_path, "- r", bad))


def test_a_bad_role_entry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"p\.yml:3: plays\[0\]\.roles\[0\]\.not a name: unknown key in a role entry"):
        load_playbook(_role_play(tmp_path, "- {role: r, 'not a name': 1}"))
    with pytest.raises(SourceError, match=r"p\.yml:3: plays\[0\]\.roles\[0\]: a role entry is a role name"):
        load_playbook(_role_play(tmp_path, "- {vars: {a: 1}}"))


def test_a_role_template_is_looked_up_in_the_role_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    tasks = "- name: t\n  template: {src: gone.j2, dest: /tmp/x}\n"
    with pytest.raises(SourceError, match=r"roles/r/tasks/main\.yml:2: tasks\[0\]\.template\.src: file not found: "
                                          r"gone\.j2 \(looked in .*/roles/r/templates, .*/roles/r, "):
        load_playbook(_role_play(tmp_path, "- r", tasks))


def test_a_role_outside_the_native_set_goes_to_ansible_playbook_or_is_refused_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = "- name: t\n  community.general.ini_file: {path: /tmp/x, section: a, option: b, value: c}\n"
    path = _role_play(tmp_path, "- r", tasks)
    [play] = load_playbook(path).plays
    assert (play.runner, play.why) == ("ansible", "play 1 uses community.general.ini_file: runs with ansible-playbook")
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- debug: {msg: hi}\n")
    (tmp_path / "roles" / "r" / "meta").mkdir()
    (tmp_path / "roles" / "r" / "meta" / "main.yml").write_text("dependencies: [other]\n")
    [play] = load_playbook(path).plays
    assert play.runner == "ansible" and "role dependencies" in play.why
    monkeypatch.setattr(loader, "ansible_playbook", lambda: None)
    with pytest.raises(SourceError, match=r"p\.yml:3: plays\[0\]\.roles\[0\]: role dependencies .* is not run "
                                          r"natively and ansible-playbook is not installed"):
        load_playbook(path)
