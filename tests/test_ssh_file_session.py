"""Over SSH, `file: state=directory` and `state=link` (no mode, no become) are done on the connection's SFTP
session, with no command on the host (each command is a fork of sshd and a shell there); they mean what
the shell script means: made, already there, or refused when something else stands in the way."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from opsconsole.playbook.modules import ModuleContext, run_module
from opsconsole.playbook.templating import Templar
from opsconsole.transport.pool import SshPool
from opsconsole.transport.base import TransportError
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import asyncssh_packet_log, lab_host, record_commands

pytest_plugins = ["tests.lab.fixtures"]


async def _module_rig(lab: Lab, pool: SshPool, tmp_path: Path, sub: str, setup: str
                      ) -> tuple[SshTransport, Path, str, list[str], ModuleContext]:
    """app-1's transport; its files seen from here; `sub` under its root, prepared by the shell line `setup`
    (`{base}` in it is that path); the commands run from now on (record_commands); a module context."""
    t = SshTransport(lab_host(lab, "app-1"), pool)
    base = f"{t.root}/{sub}"
    await t.run(setup.format(base=base))
    ctx = ModuleContext(host=t.host, transport=t, templar=Templar([]), playbook_dir=tmp_path,
                        on_line=lambda line, stream: None)
    return t, Path(lab.hosts["app-1"].files), base, record_commands(t), ctx


async def test_directories_and_links_without_a_command(lab: Lab, pool: SshPool, tmp_path: Path) -> None:
    t, files, base, commands, ctx = await _module_rig(lab, pool, tmp_path, "filetest", "rm -rf {base}")

    async def file(**args: str):  # type: ignore[no-untyped-def]
        return await run_module("file", args, ctx)

    made = await file(path=f"{base}/releases/v1", state="directory")
    assert not made.failed and made.changed and (files / "filetest/releases/v1").is_dir(), made.message
    assert made.rc == 0  # as the script's: `failed_when: r.rc != 0` means the same on every transport
    again = await file(path=f"{base}/releases/v1", state="directory")
    assert not again.failed and not again.changed
    (files / "filetest/plain").write_text("x")
    refused = await file(path=f"{base}/plain", state="directory")
    assert refused.failed and refused.message == f"{base}/plain exists and is not a directory"

    link = await file(path=f"{base}/current", src="releases/v1", state="link")
    assert not link.failed and link.changed and os.readlink(files / "filetest/current") == "releases/v1"
    assert not (await file(path=f"{base}/current", src="releases/v1", state="link")).changed
    await file(path=f"{base}/releases/v2", state="directory")
    (files / "filetest/current.opsconsole-tmp").symlink_to("nowhere")  # left by a deploy killed mid-switch
    moved = await file(path=f"{base}/current", src="releases/v2", state="link")
    assert moved.changed and os.readlink(files / "filetest/current") == "releases/v2"
    assert not (files / "filetest/current.opsconsole-tmp").is_symlink()
    in_the_way = await file(path=f"{base}/releases", src="v1", state="link")
    assert in_the_way.failed and in_the_way.message == f"{base}/releases is a directory, not a link"
    (files / "filetest/dangling").symlink_to("nowhere")
    dangling = await file(path=f"{base}/dangling", state="directory")
    assert dangling.failed and dangling.rc == 1 and "is a link to nothing" in dangling.message
    assert commands == [], commands  # all of it on the SFTP session

    # Paths only the shell means exactly (found by review) still go to the script: `..` after a link, a
    # trailing `/` that follows the link, the root itself.
    trailing = await file(path="filetest/current/", src="releases/v1", state="link")
    assert trailing.failed and len(commands) == 1  # `[ -L current/ ]` follows the link: the script refuses
    assert os.readlink(files / "filetest/current") == "releases/v2"
    up = await file(path="filetest/current/../made-by-shell", state="directory")
    assert not up.failed and len(commands) == 2 and (files / "filetest/releases/made-by-shell").is_dir()
    root = await file(path=".", src="elsewhere", state="link")
    assert root.failed and len(commands) == 3
    del t.run  # recording ends
    await t.run(f"rm -rf {base}")


async def test_a_directory_under_an_existing_one_is_one_mkdir_and_a_missing_tree_is_made_whole(
        lab: Lab, pool: SshPool, caplog: pytest.LogCaptureFixture) -> None:
    """asyncssh's makedirs tries mkdir (then stat) on every level from /: ten round trips for a release
    directory. The common case, the parent there, is one mkdir; a missing tree is still made whole. Read
    from asyncssh's own packet log (debug level 3)."""
    t = SshTransport(lab_host(lab, "app-1"), pool)
    files = Path(lab.hosts["app-1"].files)
    await t.run("rm -rf mkdirs && mkdir -p mkdirs/releases")
    assert await t.exists("mkdirs/releases")  # the SFTP session is open (its INIT is not this count's)
    with asyncssh_packet_log(caplog) as take:
        assert await t.ensure_directory("mkdirs/releases/v1") is True
        one = [m for m in take() if "Sent FXP_" in m]
        assert await t.ensure_directory("mkdirs/a/b/c") is True
        tree = [m for m in take() if "Sent FXP_" in m]
    assert (files / "mkdirs/releases/v1").is_dir() and (files / "mkdirs/a/b/c").is_dir()
    assert sum("FXP_MKDIR" in m for m in one) == 1, one
    assert len(one) == 3, f"{len(one)} SFTP requests for one directory: {one}"  # stat, lstat, mkdir
    # a, b and c missing: one failed mkdir, then one of each level at once; no stat walk from /
    assert [re.search(r"Sent (FXP_\w+)", m).group(1) for m in tree] == ["FXP_STAT", "FXP_LSTAT"] + ["FXP_MKDIR"] * (
        1 + len(f"{t.root}/mkdirs/a/b/c".strip("/").split("/"))), tree


async def test_a_directory_the_host_cannot_make_names_the_level_and_the_reason(lab: Lab, pool: SshPool) -> None:
    """OpenSSH answers mkdir on a read-only (or full) filesystem, and mkdir over a link to nothing, with a bare
    "Failure": asyncssh's makedirs reported both as "<level> is not a directory", which sends an operator looking
    for a file that is not there. A read-only tmpfs under the host's files, a link to nothing and a file in the
    middle of a path each get their own message, and nothing is made."""
    t = SshTransport(lab_host(lab, "app-1"), pool)
    files = Path(lab.hosts["app-1"].files)
    # in the host's own mount namespace (its sshd's), where its sessions see it (this process does not)
    in_host = ["nsenter", "-t", str(lab.hosts["app-1"].sshd_pid), "-m"]
    subprocess.run([*in_host, "umount", "-l", f"{t.root}/rofs/ro"], capture_output=True)  # a killed run's, if any
    made = await t.run("rm -rf rofs && mkdir -p rofs/ro && printf x > rofs/plain && ln -s nowhere rofs/dangling")
    assert made.rc == 0, made.tail
    subprocess.run([*in_host, "mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", f"{t.root}/rofs/ro"], check=True)
    try:
        with pytest.raises(TransportError) as read_only:
            await t.ensure_directory("rofs/ro/a/b")
        said = str(read_only.value)
        assert f"cannot create directory {t.root}/rofs/ro/a: Failure (a read-only or full filesystem" in said, said
        assert "not a directory" not in said, said
        assert not await t.exists("rofs/ro/a")
        with pytest.raises(TransportError) as dangling:
            await t.ensure_directory("rofs/dangling/a")
        said = str(dangling.value)
        assert f"{t.root}/rofs/dangling is a link to nothing, not a directory" in said, said
        with pytest.raises(TransportError) as through_a_file:
            await t.ensure_directory("rofs/plain/a/b")
        said = str(through_a_file.value)
        assert f"{t.root}/rofs/plain exists and is not a directory" in said, said
        with pytest.raises(TransportError) as file_parent:
            await t.write_file("rofs/plain/a/f.txt", b"x")
        assert f"{t.root}/rofs/plain exists and is not a directory" in str(file_parent.value)
        assert (files / "rofs/plain").read_text() == "x" and os.readlink(files / "rofs/dangling") == "nowhere"
    finally:
        subprocess.run([*in_host, "umount", f"{t.root}/rofs/ro"], check=True)
    await t.run("rm -rf rofs")


async def test_stat_of_a_missing_path_runs_no_command_and_an_existing_one_still_names_its_owner(
        lab: Lab, pool: SshPool, tmp_path: Path) -> None:
    """The deploy playbook's `stat` of a release's `.unpacked` marker is missing on every first deploy of a
    release: the SFTP session's lstat says so, with no fork of sshd and a shell on the host."""
    # Made over SSH, as the lab user: made from here they would be root's, and the user's cleanup (and the
    # next test's wipe of the host root) could not remove them.
    t, files, base, commands, ctx = await _module_rig(
        lab, pool, tmp_path, "stattest",
        "rm -rf {base} && mkdir -p {base}/sub/deeper && : > {base}/present && : > {base}/sub/.marker"
        " && ln -s nowhere {base}/dangling && ln -s sub/deeper {base}/link")

    async def stat(**args: str) -> dict:  # type: ignore[type-arg]
        outcome = await run_module("stat", args, ctx)
        assert not outcome.failed, outcome.message
        return outcome.result["stat"]

    try:
        assert await stat(path=f"{base}/.unpacked") == {"exists": False}
        assert await stat(path=f"{base}/.unpacked", follow="yes") == {"exists": False}
        assert await stat(path="stattest/nothing/here") == {"exists": False}
        assert commands == [], commands
        # What exists is asked of the shell: owner and group names are only there.
        there = await stat(path=f"{base}/present")
        assert there["exists"] and there["isreg"] and there["pw_name"] == lab.user and len(commands) == 1
        # A dangling link exists unfollowed (lstat), and not followed: the shell tells the second.
        assert (await stat(path=f"{base}/dangling"))["islnk"]
        assert await stat(path=f"{base}/dangling", follow="yes") == {"exists": False}
        # `..` after a link is the shell's to resolve: link -> sub/deeper, so link/.. is sub, where the marker
        # is (as text, stattest/.marker, which is not there).
        assert not (files / "stattest" / ".marker").exists()
        before = len(commands)
        assert (await stat(path="stattest/link/../.marker"))["exists"] is True
        assert len(commands) == before + 1
    finally:
        del t.run  # recording ends
        assert (await t.run(f"rm -rf {base}")).ok


async def test_slurp_reads_on_the_sftp_session(lab: Lab, pool: SshPool, tmp_path: Path) -> None:
    """The deploy playbook's read of the release the app was started from: no command on the host."""
    t, files, base, commands, ctx = await _module_rig(
        lab, pool, tmp_path, "slurptest", "rm -rf {base} && mkdir -p {base} && printf 'abc1234\\n' > {base}/itrust.release")
    try:
        read = await run_module("slurp", {"src": f"{base}/itrust.release"}, ctx)
        assert not read.failed and base64.b64decode(read.result["content"]) == b"abc1234\n"
        missing = await run_module("slurp", {"src": f"{base}/none.release"}, ctx)
        assert missing.failed and missing.message == f"file not found: {base}/none.release"
        assert commands == [], commands
    finally:
        del t.run  # recording ends
        assert (await t.run(f"rm -rf {base}")).ok
