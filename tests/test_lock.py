"""The deploy lock's mutex on the lock host: a busy one is an operator error, a dead holder's is broken.

The mutex is the directory `<lock>.mutex` that serialises the lock script on the lock host. A console
SIGKILLed while it holds it skips the script's trap and leaves the directory behind; these tests put
that directory where such a console would leave it, on a real local host, and drive the real lock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Message
from opsconsole.hosts import Host
from opsconsole.rollouts import lock as lock_module
from opsconsole.rollouts.lock import FleetLock, LockHeld
from opsconsole.transport.local import LocalTransport
from opsconsole.yamlsource import SourceError
from tests.conftest import write_config


@pytest.fixture(autouse=True)
def short_mutex_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # How long a lock call waits for a busy mutex before it gives up (5 s in production).
    monkeypatch.setattr(FleetLock, "MUTEX_WAIT", 0.5, raising=False)


def _mutex(root: Path, app: str = "itrust", age: float = 0.0) -> Path:
    """The mutex directory as a killed holder leaves it, last touched `age` seconds ago."""
    mutex = root / "locks" / f"{app}.lock.mutex"
    mutex.mkdir(parents=True)
    then = time.time() - age
    os.utime(mutex, (then, then))
    return mutex


@pytest.fixture
async def engine(tmp_path: Path):
    """An engine whose app itrust has one local host, itrust-1: the lock host. Nothing is deployed."""
    engine = Engine(load_config(write_config(tmp_path, count=1)))
    engine.prepare()
    yield engine
    await engine.close()


def _lock_root(tmp_path: Path) -> Path:
    return tmp_path / "state" / "hosts" / "itrust-1"


async def test_a_busy_mutex_is_an_operator_error_not_an_internal_one(engine: Engine, tmp_path: Path) -> None:
    mutex = _mutex(_lock_root(tmp_path))  # fresh: its holder may be alive and about to finish
    for command in ("lock status itrust", "lock release itrust"):
        outcome = await engine.execute(engine.parse(command))
        assert not outcome.ok
        assert "internal error" not in outcome.message, outcome.message
        assert "busy" in outcome.message and str(mutex) in outcome.message, outcome.message
        assert "try again" in outcome.message.lower(), outcome.message  # says what to do
    assert mutex.is_dir()  # a live holder's mutex is never broken
    assert not list((tmp_path / "state").glob("errors/*.txt")), "a traceback was saved: an internal error"


async def test_a_killed_holders_mutex_is_broken_after_its_age_limit(engine: Engine, tmp_path: Path) -> None:
    root = _lock_root(tmp_path)
    mutex = _mutex(root, age=FleetLock.MUTEX_MAX_AGE + 60 if hasattr(FleetLock, "MUTEX_MAX_AGE") else 3600)
    said: list[Message] = []
    engine.bus.subscribe(lambda e: said.append(e) if isinstance(e, Message) else None)
    released = await engine.execute(engine.parse("lock release itrust"))  # the command an operator reaches for
    assert released.ok, released.message
    assert not mutex.exists()
    warnings = [m.text for m in said if m.level == "warning"]
    assert any("stale lock mutex" in w and str(mutex) in w for w in warnings), warnings
    status = await engine.execute(engine.parse("lock status itrust"))
    assert status.ok and status.message.endswith("not locked"), status.message
    assert sorted(p.name for p in (root / "locks").iterdir()) == []  # nothing of the break left behind


async def test_breaking_a_stale_mutex_lets_exactly_one_taker_in(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    mutex = _mutex(tmp_path / "h1", age=3600)
    locks = [FleetLock(transport, "itrust", f"console-{i}@somewhere") for i in range(4)]
    results = await asyncio.gather(*(lock.acquire("roll itrust") for lock in locks), return_exceptions=True)
    won = [lock for lock, r in zip(locks, results) if r is None]
    assert len(won) == 1, results
    assert all(isinstance(r, LockHeld) for r in results if r is not None), results
    assert (await won[0].status()).token == won[0].token
    assert not mutex.exists()


async def test_a_busy_mutex_raises_a_lock_error(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    _mutex(tmp_path / "h1", age=1.0)
    lock = FleetLock(transport, "itrust", "me@here")
    with pytest.raises(lock_module.LockError, match="busy"):
        await lock.status()


async def test_a_claim_left_by_a_killed_breaker_does_not_keep_the_mutex_forever(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    mutex = _mutex(tmp_path / "h1", age=3600)
    st = mutex.stat()
    claim = mutex.with_name(f"{mutex.name}.break.{st.st_ino}.{int(st.st_mtime)}")  # named after the stale mutex
    claim.mkdir()
    os.utime(claim, (st.st_mtime, st.st_mtime))
    notices: list[str] = []
    lock = FleetLock(transport, "itrust", "me@here", on_notice=notices.append)
    assert await lock.status() is None
    assert not mutex.exists() and not claim.exists()
    assert len(notices) == 1 and "stale lock mutex" in notices[0]


async def test_a_live_breakers_claim_is_left_alone(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    mutex = _mutex(tmp_path / "h1", age=3600)
    st = mutex.stat()
    claim = mutex.with_name(f"{mutex.name}.break.{st.st_ino}.{int(st.st_mtime)}")
    claim.mkdir()  # fresh: another console is breaking this very mutex right now
    with pytest.raises(lock_module.LockBusy):
        await FleetLock(transport, "itrust", "me@here").status()
    assert mutex.is_dir() and claim.is_dir()


async def test_a_lock_call_cancelled_half_way_still_gives_its_mutex_back(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A roll ends by cancelling its lock renewer and then releasing. A renewal cancelled while its script holds
    the mutex must not be killed there (a kill runs no EXIT trap): the mutex would stay taken and the release
    after it, and every lock call for 35 s, fail as busy. Seen in CI at lock_renew 0.2 s."""
    # Hold the mutex a while inside the script, so the cancel lands there every time.
    monkeypatch.setattr(lock_module, "_SCRIPT", lock_module._SCRIPT.replace(
        "trap 'rmdir \"$m\"' EXIT\n", "trap 'rmdir \"$m\"' EXIT\nsleep 0.5\n", 1))
    root = tmp_path / "h1"
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(root)))
    lock = FleetLock(transport, "itrust", "me@here")
    assert await lock.acquire("roll itrust") is None
    mutex = root / "locks" / "itrust.lock.mutex"
    renewal = asyncio.ensure_future(lock.renew())
    deadline = time.monotonic() + 5
    while not mutex.exists():
        assert time.monotonic() < deadline, "the renewal never took the mutex"
        await asyncio.sleep(0.01)
    renewal.cancel()
    with pytest.raises(asyncio.CancelledError):
        await renewal
    assert not mutex.exists(), "the cancelled renewal left the mutex taken"
    await lock.release()  # not busy
    assert await lock.status() is None


async def test_a_take_cancelled_midway_gives_back_what_it_took(tmp_path: Path) -> None:
    """`abort` right after a deploy began, while the take script ran: the script finished (it is never cut
    off), the lock was taken, and the cancel left it held, un-renewed, for lock_ttl against every console."""
    transport = LocalTransport(Host(name="l", group="g", address="127.0.0.1", transport="local", root=str(tmp_path)))

    class AbortedWhileTaking(FleetLock):
        async def _call(self, mode, content=""):  # type: ignore[no-untyped-def]
            if mode == "take":
                asyncio.get_running_loop().call_soon(owner.cancel)  # the abort lands while the script runs
            return await super()._call(mode, content)

    lock = AbortedWhileTaking(transport, "web", "me@here", ttl=60)
    owner = asyncio.ensure_future(lock.acquire("deploy web abc"))
    try:
        await owner
    except asyncio.CancelledError:
        pass
    assert owner.cancelled()
    assert await FleetLock(transport, "web", "someone@else").status() is None


# -- where the lock is kept: the group's first host, or rollout.lock_host ---------------------------------------

def _with_lock_host(cfg: Path, name: str) -> Path:
    cfg.write_text(cfg.read_text().replace("    health:\n      path: /health\n",
                                           f"    health:\n      path: /health\n    rollout:\n      lock_host: {name}\n"))
    return cfg


async def test_lock_host_keeps_the_lock_on_the_host_it_names(tmp_path: Path) -> None:
    engine = Engine(load_config(_with_lock_host(write_config(tmp_path, count=2), "itrust-2")))
    engine.prepare()
    try:
        lock = engine.rollouts.lock_for(engine.config.apps["itrust"])
        await lock.acquire("roll itrust to v2")
        hosts = tmp_path / "state" / "hosts"
        assert (hosts / "itrust-2" / "locks" / "itrust.lock").is_file()
        assert not (hosts / "itrust-1" / "locks" / "itrust.lock").exists()
        status = await engine.execute(engine.parse("lock status itrust"))  # another console's view: the same file
        assert status.ok and "roll itrust to v2" in status.message, status.message
        await lock.release()
    finally:
        await engine.close()


def test_a_lock_host_that_is_no_host_is_refused_by_name_as_the_config_is_read(tmp_path: Path) -> None:
    cfg = _with_lock_host(write_config(tmp_path, count=2), "itrust-9")
    with pytest.raises(SourceError) as caught:
        load_config(cfg)
    assert str(caught.value).startswith(f"{cfg}:") and \
        "apps.itrust.rollout.lock_host: 'itrust-9' is no host of the fleet (hosts: itrust-1, itrust-2)" in \
        str(caught.value), caught.value


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connect is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _static_fleet(tmp_path: Path, lock_host: str = "") -> Path:
    """Group web: one SSH host nobody answers on (its lock host by default); group tools: a local host."""
    playbook = tmp_path / "deploy.yml"
    playbook.write_text("- hosts: web\n  tasks: []\n")
    cfg = tmp_path / "opsconsole.yaml"
    rollout = f", rollout: {{lock_host: {lock_host}}}" if lock_host else ""
    cfg.write_text(f"project: t\nstate_dir: {tmp_path / 'state'}\n"
                   "groups:\n"
                   f"  web: {{provider: static, hosts: [{{name: web-1, address: 127.0.0.1, ssh_port: {_closed_port()}}}]}}\n"
                   "  tools: {provider: local, count: 1}\n"
                   f"apps:\n  web: {{group: web, repo: {tmp_path / 'repo'}, deploy: {{playbook: {playbook}}}{rollout}}}\n")
    return cfg


async def test_a_dead_first_host_names_itself_and_the_way_out_and_lock_host_is_it(tmp_path: Path) -> None:
    engine = Engine(load_config(_static_fleet(tmp_path)))
    engine.prepare()
    try:
        outcome = await engine.execute(engine.parse("lock status web"))
        assert not outcome.ok
        message = outcome.message
        assert "deploy lock of web is kept on web-1, the first host of group web" in message, message
        assert "apps.web.rollout.lock_host" in message and "could not be reached" in message, message
        assert "internal error" not in message, message
    finally:
        await engine.close()
    engine = Engine(load_config(_static_fleet(tmp_path, lock_host="tools-1")))
    engine.prepare()
    try:
        outcome = await engine.execute(engine.parse("lock status web"))
        assert outcome.ok and outcome.message == "web: not locked", outcome.message
    finally:
        await engine.close()
