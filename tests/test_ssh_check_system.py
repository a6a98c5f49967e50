"""Check mode for group and user over SSH with become, on a lab host with a private /etc: before the real run a
check says what would change and the host's accounts stay as they were; after the real run a check says
nothing would change. (The same decisions are compared with ansible-playbook --check on this machine in
tests/test_playbook_check_system.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import native_run, new_runner
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options
from tests.private_host import private_host

pytest_plugins = ["tests.lab.fixtures"]

PLAY = """
- hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: a group
      group: {name: chkops, gid: 2461}
    - name: a user in it
      user: {name: chkuser, uid: 2462, group: root, comment: Checked, create_home: false}
    - name: root as it is
      user: {name: root}
"""


async def accounts(transport: SshTransport) -> str:
    got = await transport.run("getent passwd chkuser; getent group chkops; getent passwd root; "
                              "sha256sum /etc/passwd /etc/group /etc/shadow /etc/gshadow", become=True)
    return got.stdout


@pytest.mark.timeout(600)
async def test_group_and_user_check_over_ssh_change_nothing_and_agree_with_the_run(lab: Lab, tmp_path: Path) -> None:
    play = tmp_path / "accounts.yml"
    play.write_text(PLAY)
    options = ssh_options(lab)
    pool = SshPool(options)
    host = replace(lab_host(lab, "app-1"), group="servers")
    transport = SshTransport(host, pool)
    runner, events = new_runner(lambda h: transport, options)
    try:
        await private_host(transport)
        before = await accounts(transport)
        assert "chkuser" not in before and "chkops" not in before
        checked = await native_run(runner, events, play, [host], check=True)
        assert checked.ok, checked.text
        assert checked.changed == {host.name: 2}  # the group and the user; root is as it is
        assert await accounts(transport) == before  # nothing was added
        done = await native_run(runner, events, play, [host])
        assert done.ok and done.changed == {host.name: 2}, done.text
        after = await accounts(transport)
        assert "chkuser:x:2462:0:Checked:" in after and "chkops:x:2461:" in after
        again = await native_run(runner, events, play, [host], check=True)
        assert again.ok and again.changed == {host.name: 0}, again.text
    finally:
        await transport.run("userdel chkuser; groupdel chkops; true", become=True)
        await pool.close()
