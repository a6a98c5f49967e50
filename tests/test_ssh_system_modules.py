"""The native `group`, `user` and `git` modules on real lab hosts mean what Ansible's mean: tests/playbooks/system/
users.yml run by opsconsole on app-1 and by real ansible-playbook on its twin app-2 leaves the same accounts
(getent passwd, group, shadow) and the same files (homes, the app's clone); a second run changes nothing on
either. Then gone.yml takes accounts away, the same on both, twice. The password hash never reaches an
event, and the machine's own /etc is the same after the run (each lab host has a private /etc overlay)."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from opsconsole.playbook.loader import load_playbook
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import ansible_run, end_state, native_run, new_runner, wipe
from tests.private_host import private_host
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options

pytest_plugins = ["tests.lab.fixtures"]

PLAYS = Path(__file__).resolve().parent / "playbooks" / "system"
# `openssl passwd -6 -salt opsconsolelab lab-secret-1`: a hash, as a play gives it to `user`.
PASSWORD = "$6$opsconsolelab$nAZzB0WyOakfGvrjAJRjflMsgG9xt0y7Jt4xuHU6NptR5i.J3j2562msxr7LMpuvStO0ae6tJHBv9HyFQVoq9/"
ACCOUNTS = ("appuser", "deploy", "appsvc", "deployers")
MACHINE_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def machine_etc() -> dict[str, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in MACHINE_FILES if Path(p).exists()}


def source_repo(root: Path) -> tuple[Path, str]:
    repo = root / "src"
    repo.mkdir(parents=True)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "PATH": "/usr/bin:/bin"}
    for argv in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(["git", *argv], cwd=repo, check=True, env=env)
    (repo / "app.conf").write_text("port=8080\n")
    subprocess.run(["git", "add", "app.conf"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "config"], cwd=repo, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True)
    return repo, head.stdout.strip()


async def accounts(transport: SshTransport) -> str:
    """What the host's account databases say about the play's accounts (getent passwd, group, shadow)."""
    lines = []
    for database, names in (("passwd", ACCOUNTS[:2]), ("shadow", ACCOUNTS[:2]), ("group", ACCOUNTS)):
        for name in names:
            got = await transport.run(f"getent {database} {name} || echo '{name}: none'", become=True)
            assert got.ok, got.describe()
            lines.append(f"{database} {got.stdout.strip()}")
    return "\n".join(lines)


@pytest.mark.timeout(900)
async def test_users_groups_and_git_leave_what_ansible_leaves_and_stay_on_the_host(lab: Lab, tmp_path: Path) -> None:
    before = machine_etc()
    repo, head = source_repo(tmp_path)
    assert [p.runner for p in load_playbook(PLAYS / "users.yml").plays] == ["native"]
    assert [p.runner for p in load_playbook(PLAYS / "gone.yml").plays] == ["native"]
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (replace(lab_host(lab, h), group="servers") for h in ("app-1", "app-2"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)
    extra = {"repo": str(repo), "head": head, "app_password": PASSWORD}
    try:
        for t in transports.values():
            await private_host(t)
        await wipe(transports.values())
        for play, first_changes in (("users.yml", 6), ("gone.yml", 2)):
            for attempt in ("first", "second"):
                mine = await native_run(runner, events, PLAYS / play, [native], extra_vars=extra)
                # A short work dir: ssh's control socket lives there, and its path has a length limit.
                theirs = ansible_run(PLAYS / play, [twin], transports, options, tmp_path / f"{play[0]}{attempt[0]}",
                                     extra_vars=extra)
                assert mine.ok, f"opsconsole, {play} {attempt} run: {mine.text}"
                assert theirs.ok, f"ansible-playbook, {play} {attempt} run: {theirs.text}"
                want = first_changes if attempt == "first" else 0
                assert (mine.changed[native.name], theirs.changed[twin.name]) == (want, want), f"{play} {attempt}"
                assert not [e for e in events if PASSWORD in repr(e) or "lab-secret" in repr(e)]
                ours, theirs_accounts = await accounts(transports[native.name]), await accounts(transports[twin.name])
                assert ours == theirs_accounts
                a, b = (end_state(Path(lab.hosts[h.name].files), [h.name, h.address], contents_of=["app/.git"])
                        for h in (native, twin))
                assert a == b, f"only with opsconsole {set(a.items()) - set(b.items())}, " \
                               f"only with ansible-playbook {set(b.items()) - set(a.items())}"
            if play == "users.yml":
                assert f"shadow appuser:{PASSWORD}:" in ours
                assert "passwd appuser:x:2001:" in ours
                assert ":App service:/srv/opsconsole/home/appuser:/bin/bash" in ours
                assert "group deployers:x:2345:appuser,deploy" in ours
                assert "appsvc:x:" in ours and ours.split("group appsvc:x:")[1].split("\n")[0].endswith(":deploy")
                assert "home/appuser/.bashrc" in a and "app/app.conf" in a and "nohome" not in a
            else:
                assert "passwd appuser: none" in ours and "group deployers: none" in ours
                assert "passwd deploy:" in ours and "home/appuser" not in a
        # Every change stayed in the lab hosts' private /etc.
        assert machine_etc() == before
        assert subprocess.run(["getent", "passwd", "appuser"], capture_output=True).returncode == 2
    finally:
        for t in transports.values():  # the accounts and what root made go, so a later test starts clean
            await t.run("userdel -r appuser; userdel deploy; groupdel appsvc; groupdel deployers; "
                        "rm -rf /srv/opsconsole/app /srv/opsconsole/home; true", become=True)
        await wipe(transports.values())
        await pool.close()


async def test_a_failing_user_task_never_shows_the_password(lab: Lab, tmp_path: Path) -> None:
    play = tmp_path / "bad.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  become: true\n  tasks:\n"
                    "    - user: {name: bad, group: no-such-group, password: \"{{ pw }}\"}\n")
    options = ssh_options(lab)
    pool = SshPool(options)
    host = replace(lab_host(lab, "app-1"), group="servers")
    transport = SshTransport(host, pool)
    runner, events = new_runner(lambda h: transport, options)
    try:
        result = await native_run(runner, events, play, [host], extra_vars={"pw": PASSWORD})
        assert not result.ok
        assert "Group no-such-group does not exist" in result.text
        assert PASSWORD not in result.text and not [e for e in events if PASSWORD in repr(e)]
        assert (await transport.run("getent passwd bad")).rc == 2  # nothing was made
    finally:
        await pool.close()
