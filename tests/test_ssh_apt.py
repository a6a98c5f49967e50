"""The native `apt` module on real lab hosts means what Ansible's means: tests/playbooks/system/packages.yml,
against a local `file:` repository built here (tests/debrepo.py), run by opsconsole on app-1 and by real
ansible-playbook on its twin app-2: the same packages installed (versions, manual marks, recommends left
out), the same files under /opt, changed=0 on a second run; a newer version in the repository is picked
up by `state: latest` on both. No network, and the machine's own package database and /opt are
untouched (each lab host has private overlays of them: tests/lab/sshd.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from opsconsole.playbook.loader import load_playbook
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import ansible_run, native_run, new_runner
from tests.debrepo import build_package, index, sources_line
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options
from tests.private_host import private_host

pytest_plugins = ["tests.lab.fixtures"]

PLAY = Path(__file__).resolve().parent / "playbooks" / "system" / "packages.yml"


async def packages(transport: SshTransport) -> str:
    """What dpkg and apt say about the ocl-* packages, and the files they left under /opt."""
    got = await transport.run("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n' 'ocl-*'; "
                              "echo manual: $(apt-mark showmanual | grep '^ocl-'); "
                              "for f in /opt/ocl-*/*; do echo \"$f: $(cat \"$f\")\"; done", become=True)
    assert got.ok, got.describe()
    return got.stdout


async def use_repository(transport: SshTransport, repo: Path) -> None:
    """The host's apt sources: only the local repository; its lists aged, so cache_valid_time lets apt update."""
    script = ("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && "
              f"printf %s '{sources_line(repo).strip()}' > /etc/apt/sources.list.d/ocl-lab.list && "
              "rm -f /var/lib/apt/periodic/update-success-stamp && touch -d '2 days ago' /var/lib/apt/lists")
    got = await transport.run(script, become=True)
    assert got.ok, got.describe()


def machine_packages() -> dict[str, object]:
    return {"status": hashlib.sha256(Path("/var/lib/dpkg/status").read_bytes()).hexdigest(),
            "opt": sorted(os.listdir("/opt")), "sources": sorted(os.listdir("/etc/apt/sources.list.d"))}


@pytest.fixture
def repo() -> Iterator[Path]:
    # apt reads a file: repository as its unprivileged _apt user: not under pytest's private (0700) tmp dirs.
    path = Path(tempfile.mkdtemp(prefix="ocl-apt-repo-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.timeout(900)
async def test_apt_installs_what_ansible_installs_and_a_second_run_changes_nothing(lab: Lab, tmp_path: Path,
                                                                                   repo: Path) -> None:
    before = machine_packages()
    build_package(repo, "ocl-hello", "1.0", recommends="ocl-rec")
    build_package(repo, "ocl-rec", "1.0")
    build_package(repo, "ocl-tools", "1.0")
    build_package(repo / "extra", "ocl-extra", "1.0")
    index(repo)
    assert [p.runner for p in load_playbook(PLAY).plays] == ["native"]
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (replace(lab_host(lab, h), group="servers") for h in ("app-1", "app-2"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)
    extra = {"repo": str(repo)}
    try:
        for t in transports.values():
            await private_host(t)
            await use_repository(t, repo)
        # first run: the lists, ocl-hello, ocl-tools, the .deb; second: nothing; then ocl-tools 1.1 published
        for n, (attempt, want) in enumerate((("first", 4), ("second", 0), ("newer", 2), ("after newer", 0))):
            if attempt == "newer":
                build_package(repo, "ocl-tools", "1.1")
                index(repo)
                for t in transports.values():
                    await use_repository(t, repo)
            mine = await native_run(runner, events, PLAY, [native], extra_vars=extra)
            theirs = ansible_run(PLAY, [twin], transports, options, tmp_path / f"a{n}",
                                 extra_vars=extra)
            assert mine.ok, f"opsconsole, {attempt} run: {mine.text}"
            assert theirs.ok, f"ansible-playbook, {attempt} run: {theirs.text}"
            assert (mine.changed[native.name], theirs.changed[twin.name]) == (want, want), attempt
            ours = await packages(transports[native.name])
            assert ours == await packages(transports[twin.name]), attempt
        assert "ocl-hello 1.0 ii" in ours and "ocl-tools 1.1 ii" in ours and "ocl-extra 1.0 ii" in ours
        assert "ocl-rec 1.0 ii" not in ours  # install_recommends: false
        assert "manual: ocl-extra ocl-hello ocl-tools" in ours
        assert "/opt/ocl-tools/version.txt: ocl-tools 1.1" in ours
        assert machine_packages() == before  # all of it stayed on the lab hosts
    finally:
        for t in transports.values():  # the lab hosts' package state as it was for later tests
            await t.run("dpkg --purge ocl-hello ocl-tools ocl-extra ocl-rec >/dev/null 2>&1; true", become=True)
        await pool.close()
