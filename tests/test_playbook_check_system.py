"""Check mode for the native git, group, user and apt means what Ansible's means: the same play run with
--check --diff natively and by real ansible-playbook (`-c local`) reports the same status for every task, and
ours changes nothing. git runs on twin clones of a local repository; group, user and apt look at this machine
itself (their checks only read: Ansible's too, its apt only simulating), whose account and package files are
compared byte for byte before and after."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

from opsconsole.events import OutputLine
from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from test_playbook_check import ansible_check, native_check
from test_playbook_git import clones, commit, git, source_repo
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

GIT_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: not cloned yet
      git: {{repo: "{repo}", dest: "{{{{ host_root }}}}/fresh"}}
    - name: a clone at HEAD
      git: {{repo: "{repo}", dest: "{{{{ host_root }}}}/current"}}
    - name: a clone behind its remote
      git: {{repo: "{repo}", dest: "{{{{ host_root }}}}/behind"}}
    - name: a clone moved back to a sha
      git: {{repo: "{repo}", dest: "{{{{ host_root }}}}/current", version: "{first}"}}
    - name: a clone on its branch
      git: {{repo: "{repo}", dest: "{{{{ host_root }}}}/release", version: release}}
    - name: the same remote as a file:// URL
      git: {{repo: "file://{repo}", dest: "{{{{ host_root }}}}/current"}}
    - name: a clone whose remote url would change
      git: {{repo: "file://{repo}.moved", dest: "{{{{ host_root }}}}/current"}}
    - name: a local change thrown away (force) but HEAD where it is
      git: {{repo: "{repo}", dest: "{{{{ host_root }}}}/dirty", force: true}}
"""


def every_ref(root: Path) -> dict[str, tuple[str, str]]:
    """Each clone's refs and object count: a fetch (or anything written into .git) shows here."""
    return {d.parent.name: (git(d.parent, "for-each-ref"), git(d.parent, "count-objects", "-v"))
            for d in sorted(root.glob("*/.git"))}


def prepare_clones(root: Path, repo: Path) -> None:
    root.mkdir()
    for name, more in (("current", []), ("behind", []), ("release", ["-b", "release"]), ("dirty", [])):
        # As Ansible names a path: file://, so only the task that means another remote changes its url.
        subprocess.run(["git", "clone", "-q", *more, f"file://{repo}", str(root / name)], check=True)
    git(root / "behind", "reset", "-q", "--hard", "HEAD~1")  # as if the remote moved on since the clone
    (root / "dirty" / "app.conf").write_text("port=9999\n")


async def test_git_check_reports_what_ansible_check_reports_and_touches_no_clone(rig: Rig, tmp_path: Path) -> None:
    repo, first = source_repo(tmp_path)
    site = tmp_path / "git-check.yml"
    site.write_text(GIT_PLAY.format(repo=repo, first=first))
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    prepare_clones(ours, repo), prepare_clones(theirs, repo)
    before, refs = clones(ours), every_ref(ours)
    ours_status, ours_diffs = await native_check(rig, ours, site)
    theirs_status, theirs_diffs = ansible_check(tmp_path, theirs, site)
    assert clones(ours) == before and every_ref(ours) == refs  # no clone, fetch, reset or checkout
    assert not (ours / "fresh").exists()
    assert ours_status == theirs_status
    assert ours_status == {"not cloned yet": "changed", "a clone at HEAD": "ok", "a clone behind its remote": "changed",
                           "a clone moved back to a sha": "changed", "a clone on its branch": "ok",
                           "the same remote as a file:// URL": "ok", "a clone whose remote url would change": "changed",
                           "a local change thrown away (force) but HEAD where it is": "ok"}
    # The same diffs, where the commits are in the clone already (one not fetched yet: the next test).
    head = git(repo, "rev-parse", "main")
    assert ours_diffs["not cloned yet"] == theirs_diffs["not cloned yet"] == [f">> Newly checked out {head}"]
    assert ours_diffs["a clone moved back to a sha"] == theirs_diffs["a clone moved back to a sha"]
    assert "-two" in ours_diffs["a clone moved back to a sha"]
    assert ours_diffs["a clone behind its remote"] == theirs_diffs["a clone behind its remote"]
    assert "+two" in ours_diffs["a clone behind its remote"]


async def test_git_check_after_a_new_upstream_commit_says_changed_and_fetches_nothing(rig: Rig,
                                                                                      tmp_path: Path) -> None:
    repo, _ = source_repo(tmp_path)
    root = tmp_path / "host"
    host = Host(name="localhost", group="all", address="127.0.0.1", root=str(root))
    play = tmp_path / "app.yml"
    play.write_text(f'- hosts: all\n  gather_facts: false\n  tasks:\n'
                    f'    - name: app\n      git: {{repo: "{repo}", dest: "{root}/app"}}\n')
    assert (await rig.runner.run(load_playbook(play), [host])).ok
    assert (await rig.runner.run(load_playbook(play), [host], check=True)).changed_tasks == {}
    new = commit(repo, "app.conf", "port=9090\n")
    state, refs = clones(root), every_ref(root)
    rig.events.clear()
    result = await rig.runner.run(load_playbook(play), [host], check=True, diff=True)
    assert result.changed_tasks == {"localhost": ["app"]}
    assert clones(root) == state and every_ref(root) == refs  # nothing fetched: Ansible's diff would fetch
    shown = [e.line for e in rig.events if isinstance(e, OutputLine) and e.stream == "diff"]
    assert shown == [f">> {new} is not fetched yet (check mode fetches nothing): no diff from {state['app']['head']}"]
    assert (await rig.runner.run(load_playbook(play), [host])).changed_tasks == {"localhost": ["app"]}
    assert clones(root)["app"]["head"] == new


SYSTEM_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: group root there
      group: {{name: root}}
    - name: group root with another gid
      ansible.builtin.group: {{name: root, gid: 4242}}
    - name: a missing group absent
      group: {{name: "{missing}", state: absent}}
    - name: a missing group present
      group: {{name: "{missing}", gid: 4243, system: true}}
    - name: user root there
      user: {{name: root}}
    - name: user root with another comment
      ansible.builtin.user: {{name: root, comment: "not root"}}
    - name: user root in a missing group
      user: {{name: root, groups: ["{missing}"]}}
      ignore_errors: true
    - name: a missing user absent
      user: {{name: "{missing}", state: absent, remove: true}}
    - name: a missing user present
      user: {{name: "{missing}", uid: 4244, groups: [root]}}
    - name: bash installed
      apt: {{name: bash}}
    - name: an available package not installed
      ansible.builtin.apt: {{name: {absent_pkg}}}
    - name: an uninstalled package absent
      apt: {{name: {absent_pkg}, state: absent, purge: true}}
    - name: lists older than a second
      apt: {{update_cache: true, cache_valid_time: 1}}
"""
WATCHED = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/var/lib/dpkg/status",
           "/var/lib/apt/extended_states")


def machine_state() -> dict[str, object]:
    """The account and package databases (bytes), and when apt's lists were last touched."""
    state: dict[str, object] = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).exists() else None
                                for p in WATCHED}
    state["lists"] = sorted((p.name, p.stat().st_mtime_ns) for p in Path("/var/lib/apt/lists").iterdir())
    state["home"] = Path("/home").exists() and sorted(p.name for p in Path("/home").iterdir())
    return state


def an_available_package_not_installed() -> str:
    for name in ("cowsay", "sl", "figlet", "hello", "tree"):
        installed = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", name], capture_output=True,
                                   text=True).stdout
        policy = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True).stdout
        if not installed.startswith("ii") and "Candidate:" in policy and "Candidate: (none)" not in policy:
            return name
    raise AssertionError("no package in apt's lists that is not installed: apt-get update on this machine?")


async def test_group_user_apt_check_report_what_ansible_check_reports_and_change_nothing(rig: Rig,
                                                                                       tmp_path: Path) -> None:
    missing = f"oc{uuid.uuid4().hex[:10]}"
    absent_pkg = an_available_package_not_installed()
    site = tmp_path / "system-check.yml"
    site.write_text(SYSTEM_PLAY.format(missing=missing, absent_pkg=absent_pkg))
    root = tmp_path / "host"
    root.mkdir()
    before = machine_state()
    ours_status, _ = await native_check(rig, root, site)
    assert machine_state() == before  # no account, package, list or home directory changed
    theirs_status, _ = ansible_check(tmp_path, root, site)
    assert machine_state() == before
    assert ours_status == theirs_status
    assert ours_status == {
        "group root there": "ok", "group root with another gid": "changed", "a missing group absent": "ok",
        "a missing group present": "changed", "user root there": "ok", "user root with another comment": "changed",
        "user root in a missing group": "failed", "a missing user absent": "ok", "a missing user present": "changed",
        "bash installed": "ok", "an available package not installed": "changed",
        "an uninstalled package absent": "ok", "lists older than a second": "changed"}
    failed = [e for e in rig.finished("localhost") if e.task == "user root in a missing group"]
    assert f"Group {missing} does not exist" in failed[0].message
