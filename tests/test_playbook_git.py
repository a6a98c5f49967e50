"""The native `git` module means what Ansible's means: the same play (HEAD, a branch shallow, a tag, a sha,
update: false; repo as a path and as a file:// URL) run natively and by real ansible-playbook (`-c local`)
against a real local repository leaves the same clones (HEAD, branch, work tree) and reports the same
changes; a second run changes nothing; a local modification fails without force, as in Ansible, and is
thrown away with force; a new upstream commit moves HEAD on both."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from test_ansible_names import ansible_playbook
from local_twin import recap
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: app at HEAD (a path)
      git: {repo: "{{ repo }}", dest: "{{ host_root }}/app", force: "{{ force | default(false) }}"}
      register: app
    - name: what git reported
      assert:
        that: ["app.after == head", "app.before is none or app.before | length == 40"]
    - name: release branch, shallow (a file:// URL)
      ansible.builtin.git: {repo: "file://{{ repo }}", dest: "{{ host_root }}/rel", version: release, depth: 1}
    - name: a tag
      git: {repo: "{{ repo }}", dest: "{{ host_root }}/tagged", version: v1, accept_hostkey: true}
    - name: a sha
      git: {repo: "{{ repo }}", dest: "{{ host_root }}/pinned", version: "{{ first }}"}
    - name: never updated
      git: {repo: "{{ repo }}", dest: "{{ host_root }}/app", update: false}
      register: kept
    - name: update false reports where it is
      assert:
        that: ["kept.before == kept.after", "not kept.changed"]
"""

_GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(where: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=where, check=True, capture_output=True, text=True,
                          env=_GIT_ENV).stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"{name}: {text.strip()}")
    return git(repo, "rev-parse", "HEAD")


def source_repo(root: Path) -> tuple[Path, str]:
    """main (three commits, v1 annotated on the second) and release (one more commit); the first sha."""
    repo = root / "src"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    first = commit(repo, "README", "one\n")
    commit(repo, "app.conf", "port=8080\n")
    git(repo, "tag", "-a", "v1", "-m", "version 1")
    git(repo, "checkout", "-q", "-b", "release")
    commit(repo, "RELEASE", "1.0\n")
    git(repo, "checkout", "-q", "main")
    commit(repo, "README", "two\n")
    return repo, first


def clones(root: Path) -> dict[str, dict[str, object]]:
    """Each clone under root: its HEAD commit, the branch it is on (or detached), its local branches,
    shallow or not, its remote, git status, and every work-tree file with its mode and content."""
    state: dict[str, dict[str, object]] = {}
    for dot_git in sorted(root.glob("*/.git")):
        clone = dot_git.parent
        files = {str(p.relative_to(clone)): (oct(p.stat().st_mode & 0o777), p.read_text())
                 for p in sorted(clone.rglob("*")) if p.is_file() and ".git" not in p.relative_to(clone).parts}
        on = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=clone, capture_output=True, text=True)
        state[clone.name] = {
            "head": git(clone, "rev-parse", "HEAD"), "on": on.stdout.strip() or "detached",
            "branches": git(clone, "for-each-ref", "--format=%(refname) %(upstream)", "refs/heads"),
            "shallow": git(clone, "rev-parse", "--is-shallow-repository"),
            "remote": git(clone, "remote", "-v"), "status": git(clone, "status", "--porcelain"), "files": files}
    return state


async def native(rig: Rig, play: Path, root: Path, extra: dict[str, str]) -> tuple[bool, int, str]:
    rig.events.clear()
    host = Host(name="localhost", group="all", address="127.0.0.1", root=str(root))
    result = await rig.runner.run(load_playbook(play), [host], extra_vars={**extra, "host_root": str(root)})
    changed = sum(1 for e in rig.finished("localhost") if e.status == "changed")
    return result.ok, changed, result.failure_text()


def ansible(tmp_path: Path, play: Path, root: Path, extra: dict[str, str]) -> tuple[bool, int, str]:
    done = ansible_playbook(tmp_path, str(play), "-e", json.dumps({**extra, "host_root": str(root)}))
    return done.returncode == 0, recap(done.stdout)["changed"], done.stdout + done.stderr


async def test_git_clones_updates_and_refuses_local_changes_as_ansible_does(rig: Rig, tmp_path: Path) -> None:
    repo, first = source_repo(tmp_path)
    play = tmp_path / "git.yml"
    play.write_text(PLAY)
    assert [p.runner for p in load_playbook(play).plays] == ["native"]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    extra = {"repo": str(repo), "first": first, "head": git(repo, "rev-parse", "main")}

    async def both(**more: str) -> tuple[tuple[bool, int, str], tuple[bool, int, str]]:
        return await native(rig, play, ours, {**extra, **more}), ansible(tmp_path, play, theirs, {**extra, **more})

    mine, theirs_run = await both()
    assert mine[0], mine[2]
    assert theirs_run[0], theirs_run[2]
    assert mine[1] == theirs_run[1] == 4  # four clones made; update: false changes nothing
    state = clones(ours)
    assert state == clones(theirs)
    assert state["app"]["on"] == "refs/heads/main" and state["app"]["head"] == extra["head"]
    assert state["rel"]["on"] == "refs/heads/release" and state["rel"]["shallow"] == "true"
    assert state["tagged"]["on"] == "detached" and "RELEASE" not in state["tagged"]["files"]
    assert state["pinned"]["head"] == first

    mine, theirs_run = await both()  # a second run: nothing to do
    assert (mine[0], mine[1]) == (theirs_run[0], theirs_run[1]) == (True, 0), mine[2] + theirs_run[2]
    assert clones(ours) == clones(theirs)

    for root in (ours, theirs):  # a local change to a tracked file: Ansible refuses without force
        (root / "app" / "app.conf").write_text("port=9999\n")
        (root / "app" / "untracked.txt").write_text("mine\n")  # untracked files are not modifications
    mine, theirs_run = await both()
    assert not mine[0] and not theirs_run[0]
    assert "Local modifications exist in the destination" in mine[2] and str(ours / "app") in mine[2]
    assert "Local modifications exist in the destination" in theirs_run[2]
    assert (ours / "app" / "app.conf").read_text() == "port=9999\n"  # nothing was thrown away

    extra["head"] = commit(repo, "app.conf", "port=8081\n")  # upstream moves on; force throws the change away
    mine, theirs_run = await both(force="true")
    assert mine[0], mine[2]
    assert theirs_run[0], theirs_run[2]
    assert mine[1] == theirs_run[1] == 1
    assert clones(ours) == clones(theirs)
    assert (ours / "app" / "app.conf").read_text() == "port=8081\n"
    assert (ours / "app" / "untracked.txt").read_text() == "mine\n"


@pytest.mark.parametrize(("task", "keypath", "words"), [
    ('git: {repo: /srv/r, dest: /srv/app, branch: main}', "git.branch", "unknown argument (known: repo, dest"),
    ('git: {repo: /srv/r, dest: /srv/app, depth: shallow}', "git.depth", "wrong type: 'shallow' is not a whole number"),
    ('git: {dest: /srv/app}', "git.repo", "required argument missing"),
    ('ansible.builtin.user: {name: app, uid: [1, 2]}', "ansible.builtin.user.uid", "wrong type: a list"),
    ('user: {name: app, uid: app}', "user.uid", "wrong type: 'app' is not a whole number"),
    ('user: {name: app, state: gone}', "user.state", "'gone' is not one of present, absent"),
    ('user: {name: app, groups: [{a: 1}]}', "user.groups", "wrong type: groups is a list of group names"),
    ('user: {name: app, append: maybe}', "user.append", "'maybe' is not a boolean"),
    ('user: {name: app, passwd: x}', "user.passwd", "unknown argument (known: name, uid"),
    ('group: {name: ops, gid: "12a"}', "group.gid", "wrong type: '12a' is not a whole number"),
    ('group: {name: ops, system: sure}', "group.system", "'sure' is not a boolean"),
])
def test_a_bad_system_module_argument_names_file_line_module_and_argument(tmp_path: Path, task: str, keypath: str,
                                                                           words: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n    - {task}\n")
    with pytest.raises(SourceError) as info:
        load_playbook(path)
    assert str(info.value).startswith(f"{path}:4: plays[0].tasks[0].{keypath}: "), info.value
    assert words in str(info.value), info.value


def test_the_system_modules_take_ansibles_argument_names_with_ansibles_choices() -> None:
    # Every argument the native git/user/group/apt accept is one Ansible's module of that name has (so a
    # play means the same to both), with the same choices: read from ansible-core's own module docs.
    import subprocess as sp  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from opsconsole.playbook.modules import SPECS  # noqa: PLC0415

    names = ("git", "user", "group", "apt")
    doc = json.loads(sp.run([str(Path(sys.executable).parent / "ansible-doc"), "-j", *names], check=True,
                            capture_output=True, text=True, timeout=120).stdout)
    for name in names:
        options = doc[name]["doc"]["options"]
        assert set(SPECS[name].known) <= set(options), (name, set(SPECS[name].known) - set(options))
        for arg, allowed in SPECS[name].choices.items():
            assert set(allowed) <= set(options[arg]["choices"]), (name, arg)
        for arg in SPECS[name].booleans:
            assert options[arg]["type"] == "bool", (name, arg)
