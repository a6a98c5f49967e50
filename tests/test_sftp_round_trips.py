"""Files over SFTP in few round trips, against a real sshd behind the lab's jump host.

Through a jump host far from the console every SFTP round trip is a wait of the link's round-trip time, on every
host of a deploy. Requests on one handle are sent together (the server takes them in order), so a small file
is read, or written and synced and closed, in one round trip after its open. Counted here, not timed: a round
begins when a request leaves while none is awaiting its answer. And what comes back is still exactly the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import asyncssh.sftp
import pytest

from opsconsole.transport.base import PathInTheWay
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import ONE_REQUEST, SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host

pytest_plugins = ["tests.lab.fixtures"]


@pytest.fixture
def app1(lab: Lab, pool: SshPool) -> SshTransport:
    return SshTransport(lab_host(lab, "app-1"), pool)


class Rounds:
    """SFTP requests and round trips: a round starts with a request sent while none awaits its answer."""

    def __init__(self) -> None:
        self.rounds = 0
        self.requests = 0
        self.waiting = 0


@contextlib.contextmanager
def counted() -> Iterator[Rounds]:
    count = Rounds()
    original = asyncssh.sftp.SFTPClientHandler._make_request

    async def make_request(self, pkttype, *args):  # type: ignore[no-untyped-def]
        if count.waiting == 0:
            count.rounds += 1
        count.requests += 1
        count.waiting += 1
        try:
            return await original(self, pkttype, *args)
        finally:
            count.waiting -= 1

    asyncssh.sftp.SFTPClientHandler._make_request = make_request  # type: ignore[method-assign]
    try:
        yield count
    finally:
        asyncssh.sftp.SFTPClientHandler._make_request = original  # type: ignore[method-assign]


def on_host(lab: Lab, path: str) -> Path:
    return Path(lab.hosts["app-1"].files) / path


@pytest.fixture(autouse=True)
def fresh(lab: Lab) -> Iterator[None]:
    """The lab lives for the whole session: these tests' paths are cleared before and after."""
    import shutil
    for name in ("rt", "rt2", "rt3", "rt4", "rt5"):
        shutil.rmtree(on_host(lab, name), ignore_errors=True)
    yield
    for name in ("rt", "rt2", "rt3", "rt4", "rt5"):
        shutil.rmtree(on_host(lab, name), ignore_errors=True)


async def test_a_small_file_is_compared_and_replaced_in_six_round_trips_and_left_alone_in_three(
        lab: Lab, app1: SshTransport) -> None:
    assert await app1.write_file("rt/release", b"v1\n") is True  # the session and the directory exist now
    with counted() as new_content:
        assert await app1.write_file("rt/release", b"v2\n") is True
    # the look at the path (1), open (1), its bytes + size + close (1); the temp file's open (1), its write +
    # fsync + close (1), the rename (1). Before: 12 (read, fstat, write, fsync and close each waited alone).
    assert new_content.rounds == 6, vars(new_content)
    assert on_host(lab, "rt/release").read_bytes() == b"v2\n"
    with counted() as same:
        assert await app1.write_file("rt/release", b"v2\n") is False
    assert same.rounds == 3, vars(same)
    assert [p.name for p in on_host(lab, "rt").iterdir()] == ["release"]  # no temp file left


async def test_a_new_small_file_with_a_mode_takes_four_round_trips(lab: Lab, app1: SshTransport) -> None:
    assert await app1.write_file("rt2/first", b"x") is True
    with counted() as new:
        assert await app1.write_file("rt2/app.env", b"A=1\n", mode=0o640) is True
    assert new.rounds == 4, vars(new)  # look, open, chmod + write + fsync + close, rename
    written = on_host(lab, "rt2/app.env")
    assert written.read_bytes() == b"A=1\n" and written.stat().st_mode & 0o777 == 0o640
    with counted() as mode_only:  # same bytes, another mode: changed on the handle compared
        assert await app1.write_file("rt2/app.env", b"A=1\n", mode=0o600) is True
    assert written.stat().st_mode & 0o777 == 0o600 and written.read_bytes() == b"A=1\n"
    assert mode_only.rounds >= 3


@pytest.mark.parametrize("size", [0, 1, ONE_REQUEST - 1, ONE_REQUEST, ONE_REQUEST + 1, 100_003])
async def test_read_and_write_give_back_exactly_the_file_around_the_one_request_size(
        lab: Lab, app1: SshTransport, size: int) -> None:
    content = os.urandom(size)
    assert await app1.write_file(f"rt3/f{size}", content) is True
    assert on_host(lab, f"rt3/f{size}").read_bytes() == content
    with counted() as read:
        assert await app1.read_file(f"rt3/f{size}") == content
    if size < ONE_REQUEST:
        assert read.rounds == 2, vars(read)  # open; size + bytes + close
    assert await app1.write_file(f"rt3/f{size}", content) is False  # compared equal, whatever the path taken
    changed = bytes([content[0] ^ 1]) + content[1:] if size else b"now something"
    assert await app1.write_file(f"rt3/f{size}", changed) is True
    assert on_host(lab, f"rt3/f{size}").read_bytes() == changed


async def test_a_file_grown_past_what_one_read_brings_is_read_whole(lab: Lab, app1: SshTransport) -> None:
    """The one-request read says the file's size alongside: bigger than what came back, it is read again."""
    assert await app1.write_file("rt4/grown", b"small") is True
    on_host(lab, "rt4/grown").write_bytes(b"a" * (ONE_REQUEST * 3))  # (this machine is the host's disk too)
    assert await app1.read_file("rt4/grown") == b"a" * (ONE_REQUEST * 3)


async def test_a_link_is_pointed_in_four_round_trips_and_left_alone_in_one(lab: Lab, app1: SshTransport) -> None:
    for release in ("r1", "r2"):
        assert await app1.ensure_directory(f"rt5/releases/{release}") is True
    assert await app1.ensure_link("rt5/current", "releases/r1") is True
    with counted() as moved:
        assert await app1.ensure_link("rt5/current", "releases/r2") is True
    # what is there, where it points, and any aside left (1); the new link aside (1), read back (1), renamed (1)
    assert moved.rounds == 4, vars(moved)
    assert os.readlink(on_host(lab, "rt5/current")) == "releases/r2"
    with counted() as same:
        assert await app1.ensure_link("rt5/current", "releases/r2") is False
    assert same.rounds == 1, vars(same)
    # an aside left by a deploy killed between its two steps is cleared; a directory in the way is refused
    os.symlink("releases/r1", on_host(lab, "rt5/current.opsconsole-tmp"))
    assert await app1.ensure_link("rt5/current", "releases/r1") is True
    assert os.readlink(on_host(lab, "rt5/current")) == "releases/r1"
    assert not os.path.lexists(on_host(lab, "rt5/current.opsconsole-tmp"))
    assert await app1.ensure_directory("rt5/dir") is True
    with pytest.raises(PathInTheWay, match="is a directory, not a link"):
        await app1.ensure_link("rt5/dir", "releases/r1")


async def test_a_warmed_host_has_its_sftp_session_ready(lab: Lab, pool: SshPool, app1: SshTransport) -> None:
    """What a rollout does for its next batch: the connection and the SFTP session, so the first file task
    needs no session open (its own requests only)."""
    await pool.warm(app1.host)
    with counted() as first:
        assert await app1.exists("nothing-here") is False
    assert first.requests == 1 and first.rounds == 1, vars(first)
    await asyncio.gather(pool.warm(app1.host), pool.warm(app1.host))  # again: the same session, no error


async def test_a_file_whose_size_says_nothing_is_read_to_its_end(app1: SshTransport) -> None:
    """/proc files say size 0 and give about a page per read: read to the end, not one page, nor nothing.
    (Here the SFTP server's own memory map, a dozen pages and more.)"""
    smaps = await app1.read_file("/proc/self/smaps")
    assert len(smaps) > 3 * 4096, len(smaps)
    assert smaps.rstrip(b"\n").splitlines()[-1].startswith(b"VmFlags:")


async def test_a_warm_up_cancelled_while_its_sftp_session_opens_leaves_that_session_to_the_next_use(
        lab: Lab, pool: SshPool, app1: SshTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollout cancels its next batch's warm-up when it stops. Cancelled in the middle of the SFTP start (the
    channel open, its init not yet answered), the session is still started and kept: given up half-open, its
    channel would stay open on the host, one of its MaxSessions gone, and the next use would open another."""
    await pool.connection(app1.host)  # (the connection itself is not what this is about)
    in_init, go_on = asyncio.Event(), asyncio.Event()
    starts: list[object] = []
    start_client = asyncssh.SSHClientConnection.start_sftp_client
    handler_start = asyncssh.sftp.SFTPClientHandler.start

    async def counted_start(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(self)
        return await start_client(self, *args, **kwargs)

    async def held_init(self):  # type: ignore[no-untyped-def]
        in_init.set()
        await go_on.wait()
        return await handler_start(self)

    monkeypatch.setattr(asyncssh.SSHClientConnection, "start_sftp_client", counted_start)
    monkeypatch.setattr(asyncssh.sftp.SFTPClientHandler, "start", held_init)
    warm = asyncio.ensure_future(pool.warm(app1.host))
    await asyncio.wait_for(in_init.wait(), 10)
    warm.cancel()
    with pytest.raises(asyncio.CancelledError):
        await warm
    go_on.set()
    assert await app1.exists("nothing-here") is False
    assert len(starts) == 1  # the warm-up's session, not a second one
