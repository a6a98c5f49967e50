"""A corpus of playbooks in the style of real ones (tests/playbooks/corpus/), each run by opsconsole on
app-1 (natively, or through its ansible-playbook fallback where the play needs it) and by plain
ansible-playbook on its twin app-2: the same end state, and changed=0 on a second run on both."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from opsconsole.playbook.loader import load_playbook
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import ansible_run, end_state, native_run, new_runner, wipe
from tests.lab import Lab
from tests.lab.fixtures import skip_or_fail
from tests.lab.inventory import lab_host, ssh_options

pytest_plugins = ["tests.lab.fixtures"]

CORPUS = Path(__file__).resolve().parent / "playbooks" / "corpus"
# playbook -> (the runner opsconsole gives it, the group its play names, directories compared by name only)
CASES = {
    "mariadb-configure.yml": ("native", "database", ["mariadb/data", "mariadb/run"]),
    "app-configure.yml": ("native", "itrust", []),
    "website.yml": ("native", "itrust", []),  # native roles: defaults, template, handler
    "block-rescue.yml": ("native", "itrust", []),
    "replace-outside-native.yml": ("ansible", "itrust", []),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(CASES))
async def test_corpus_playbook_gives_the_same_end_state_as_ansible_playbook(lab: Lab, tmp_path: Path,
                                                                             name: str) -> None:
    runner_kind, group, opaque = CASES[name]
    if name.startswith("mariadb") and (shutil.which("mariadb") is None or not Path("/usr/sbin/mariadbd").exists()):
        skip_or_fail("the MariaDB playbook needs MariaDB (apt-get install mariadb-server mariadb-client)")
    playbook = CORPUS / name
    assert [p.runner for p in load_playbook(playbook).plays] == [runner_kind]
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (replace(lab_host(lab, h), group=group) for h in ("app-1", "app-2"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)
    try:
        await wipe(transports.values())
        for attempt in ("first", "second"):
            mine = await native_run(runner, events, playbook, [native])
            theirs = ansible_run(playbook, [twin], transports, options, tmp_path / attempt)
            assert mine.ok, f"opsconsole, {attempt} run: {mine.text}"
            assert theirs.ok, f"ansible-playbook, {attempt} run: {theirs.text}"
            if attempt == "first":
                assert mine.changed[native.name] > 0 and theirs.changed[twin.name] > 0
            else:
                assert mine.changed == {native.name: 0}, "opsconsole, second run"
                assert theirs.changed == {twin.name: 0}, "ansible-playbook, second run"
        a, b = (end_state(Path(lab.hosts[h.name].files), [h.name, h.address], contents_of=opaque)
                for h in (native, twin))
        assert a == b, f"only with opsconsole {set(a.items()) - set(b.items())}, " \
                       f"only with ansible-playbook {set(b.items()) - set(a.items())}"
        assert a, "the play left nothing to compare"
    finally:
        for t in transports.values():
            for service in ("mariadb", "app"):
                await t.stop_service(service, timeout=20)
        await pool.close()
