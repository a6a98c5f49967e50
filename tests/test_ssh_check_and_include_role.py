"""On twin SSH lab hosts: app-1 gets opsconsole's native runner, app-2 real ansible-playbook (the inventory
opsconsole's fallback writes: jump host, strict host keys).

- tests/playbooks/include_role/site.yml (include_role/import_role, tasks_from, defaults_from, vars_from,
  handlers_from, `ROLE : handler`) leaves the same end state on both, and changed=0 on a second run.
- tests/playbooks/check/site.yml with --check --diff on twins prepared alike reports the same number of
  changed tasks on both, and leaves both hosts exactly as they were."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from opsconsole.events import TaskFinished
from opsconsole.playbook.loader import load_playbook
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import ansible_run, end_state, native_run, new_runner, wipe
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options

pytest_plugins = ["tests.lab.fixtures"]

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"


@pytest.mark.timeout(900)
async def test_include_role_and_check_mode_mean_the_same_as_under_ansible_playbook(lab: Lab, tmp_path: Path) -> None:
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (replace(lab_host(lab, h), group="itrust") for h in ("app-1", "app-2"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)

    def state() -> tuple[dict, dict]:
        a, b = (end_state(Path(lab.hosts[h.name].files), [h.name, h.address]) for h in (native, twin))
        return a, b

    try:
        await wipe(transports.values())
        playbook = PLAYBOOKS / "include_role" / "site.yml"
        assert [p.runner for p in load_playbook(playbook).plays] == ["native"]
        for attempt in ("first", "second"):
            mine = await native_run(runner, events, playbook, [native])
            theirs = ansible_run(playbook, [twin], transports, options, tmp_path / f"roles-{attempt}")
            assert mine.ok, f"opsconsole, {attempt} run: {mine.text}"
            assert theirs.ok, f"ansible-playbook, {attempt} run: {theirs.text}"
            assert mine.changed[native.name] == theirs.changed[twin.name], attempt
        assert mine.changed == {native.name: 0} and theirs.changed == {twin.name: 0}
        a, b = state()
        assert a == b, f"only natively {set(a.items()) - set(b.items())}, only with ansible-playbook " \
                       f"{set(b.items()) - set(a.items())}"
        assert a["restarts.log"] == ("file", a["restarts.log"][1], "restarted\n")

        # check mode: twins prepared alike, some way from what the play wants
        await wipe(transports.values())
        for t in transports.values():
            assert (await t.run("mkdir -p etc data && chmod 755 etc data")).ok
            for name, text, mode in (("etc/motd", "old motd\n", 0o644), ("etc/same.txt", "same\n", 0o644),
                                     ("etc/mode.txt", "mode\n", 0o644), ("etc/keep.txt", "mine\n", 0o644),
                                     ("etc/settings", "debug=true\nlevel=3\n", 0o644),
                                     ("etc/hosts", "127.0.0.1 lo\n", 0o644), ("etc/version", "1.0\n", 0o644),
                                     ("stale.txt", "old\n", 0o644)):
                await t.write_file(name, text.encode(), mode)
        before = state()
        check = PLAYBOOKS / "check" / "site.yml"
        mine = await native_run(runner, events, check, [native], {"token": "t"}, check=True, diff=True)
        theirs = ansible_run(check, [twin], transports, options, tmp_path / "check", extra_vars={"token": "t"},
                             ansible_args=["--check", "--diff"])
        assert mine.ok, mine.text
        assert theirs.ok, theirs.text
        assert mine.changed[native.name] == theirs.changed[twin.name] == 11, (mine.changed, theirs.changed)
        skipped = [e.task for e in events if isinstance(e, TaskFinished) and e.status == "skipped"]
        assert skipped == ["a command (check mode cannot tell)", "raw", "reload the app"]
        assert state() == before  # neither run changed a thing on its host
    finally:
        await pool.close()


@pytest.mark.timeout(300)
async def test_a_check_on_an_unreachable_host_says_so_for_that_host_only(lab: Lab) -> None:
    from opsconsole.playbook.plan import check_lines
    options = ssh_options(lab)
    pool = SshPool(options)
    hosts = [replace(lab_host(lab, h), group="itrust") for h in ("app-1", "app-2")]
    transports = {h.name: SshTransport(h, pool) for h in hosts}
    runner, events = new_runner(lambda h: transports[h.name], options)
    victim = "app-2"
    try:
        await wipe(transports.values())
        lab.stop_sshd(victim)
        result = await runner.run(load_playbook(PLAYBOOKS / "include_role" / "site.yml"), hosts, check=True)
        lines = check_lines(result)
        assert lines[0].startswith("  app-1: would change 6 task(s): app config, "), lines
        assert lines[1].startswith(f"  {victim}: could not check: ") and "cannot connect" in lines[1], lines
        assert not any(line.startswith("  | ") for line in lines)  # one line per host
    finally:
        lab.start_sshd(victim)
        await pool.close()
