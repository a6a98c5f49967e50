"""State the operator must not lose reaches the disk: every writer fsyncs the file and, when a name
appears or changes, the directory that holds it.

os.fsync is watched, not replaced: each call records which inode it flushed (and for a directory,
which inode the watched name pointed at by then), and still flushes. A writer that renames
without fsync, or appends without fsync, fails here.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from opsconsole.builds.poller import HeadBook
from opsconsole.builds.runner import BuildRecord, BuildStore
from opsconsole.ec2.records import Ec2Instance, inventory_path, write_instances
from opsconsole.engine.journal import Journal
from opsconsole.engine.rolling import Releases
from opsconsole.engine.traffic_service import DesiredWeights
from opsconsole.fsio import read_jsonl
from opsconsole.hosts import Host
from opsconsole.inventory import _PortBook
from opsconsole.proxy.runtime import ProxyRuntime
from opsconsole.rollouts.record import RolloutJournal
from opsconsole.traffic.haproxy import HaproxyDriver
from opsconsole.transport.local import LocalTransport


class FsyncWatch:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path: Path | None = None
        self.files: list[tuple[int, int, int]] = []  # (dev, inode, size) of each file flushed
        self.dirs: list[tuple[int, int, int | None]] = []  # (dev, inode, inode the watched name had then)
        real = os.fsync
        lock = threading.Lock()  # some writers run in a thread (asyncio.to_thread)

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            with lock:
                if stat.S_ISDIR(st.st_mode):
                    named = self.path.stat().st_ino if self.path is not None and self.path.exists() else None
                    self.dirs.append((st.st_dev, st.st_ino, named))
                else:
                    self.files.append((st.st_dev, st.st_ino, st.st_size))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def watch(self, path: Path) -> None:
        self.path = path
        self.files.clear()
        self.dirs.clear()

    def assert_durable(self, path: Path, *, new_name: bool = True) -> None:
        st = path.stat()
        assert (st.st_dev, st.st_ino, st.st_size) in self.files, f"{path} was not fsynced whole"
        if new_name:
            parent = path.parent.stat()
            assert (parent.st_dev, parent.st_ino, st.st_ino) in self.dirs, \
                f"{path.parent} was not fsynced after {path.name} got its name"


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncWatch:
    return FsyncWatch(monkeypatch)


def _record(build_id: str) -> BuildRecord:
    return BuildRecord(build_id=build_id, app="itrust", commit="a" * 40, status="queued", queued_at=1.0)


# (name, the file it writes, write it once, write it again). Each replaces the file or appends to it.
def _head_book(state: Path) -> tuple[Path, Callable[[], None], Callable[[], None]]:
    book = HeadBook(state / "builds" / "heads.json")
    return book.path, lambda: book.set("itrust", "a" * 40), lambda: book.set("itrust", "b" * 40)


def _ec2_records(state: Path):
    one = Ec2Instance(instance_id="i-1", group="web", index=1, state="running", instance_type="t3.micro",
                      private_ip="10.0.0.1", public_ip=None, launch_time=None)
    return (inventory_path(state, "web"), lambda: write_instances(state, "web", "p", "eu-west-1", [one]),
            lambda: write_instances(state, "web", "p", "eu-west-1", []))


def _port_book(state: Path):
    book = _PortBook(state / "inventory" / "local-ports.json")

    def add(name: str) -> None:
        book.port_for(name)
        book.save()
    return book.path, lambda: add("a-1"), lambda: add("a-2")


def _haproxy(state: Path):
    driver = HaproxyDriver(SimpleNamespace(frontends={}), channel=None, state_file=state / "traffic" / "haproxy.json")

    def change(weight: int) -> None:
        driver._desired["itrust"] = {"weights": {"canary": weight}}
        driver._save()
    return driver.state_file, lambda: change(10), lambda: change(20)


def _proxy_runtime(state: Path):
    runtime = ProxyRuntime(SimpleNamespace(frontends={}), "token", runtime_file=state / "proxy" / "runtime.json")

    def change(url: str) -> None:
        runtime.admin_url = url
        runtime._write_runtime_file()
    return runtime.runtime_file, lambda: change("http://127.0.0.1:1"), lambda: change("http://127.0.0.1:2")


def _canary_desired(state: Path):
    desired = DesiredWeights(state / "proxy" / "desired-weights.json", state / "proxy" / "runtime.json")
    return desired.path, lambda: desired.save(1, {"a": 10}), lambda: desired.save(2, {"a": 20})


def _local_transport(state: Path):
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(state / "h1")))
    import asyncio
    return (state / "h1" / "conf" / "app.conf", lambda: asyncio.run(transport.write_file("conf/app.conf", b"a=1\n")),
            lambda: asyncio.run(transport.write_file("conf/app.conf", b"a=2\n")))


REPLACED = {"head book": _head_book, "ec2 records": _ec2_records, "local port book": _port_book,
            "haproxy desired state": _haproxy, "proxy runtime file": _proxy_runtime,
            "canary desired weights": _canary_desired, "local transport write_file": _local_transport}


@pytest.mark.parametrize("writer", list(REPLACED))
def test_replaced_state_is_fsynced_with_its_directory(writer: str, tmp_path: Path, fsyncs: FsyncWatch) -> None:
    path, first, second = REPLACED[writer](tmp_path / "state")
    fsyncs.watch(path)
    first()
    fsyncs.assert_durable(path)
    before = path.read_bytes()
    fsyncs.watch(path)
    second()
    assert path.read_bytes() != before
    fsyncs.assert_durable(path)  # a rename gives the name a new inode: the directory is flushed again
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "a temp file was left behind"


def _releases(state: Path):
    releases = Releases(state / "releases.jsonl")
    return (releases.path, lambda: releases.record("itrust", "v1", "a" * 40, "/a.tgz"),
            lambda: releases.record("itrust", "v2", "b" * 40, "/b.tgz"))


def _build_history(state: Path):
    store = BuildStore(state)
    return store.history, lambda: store.save(_record("b1")), lambda: store.save(_record("b2"))


def _command_journal(state: Path):
    journal = Journal(state / "journal.jsonl")
    return journal.path, lambda: journal.append("command.start", id="1"), lambda: journal.append("command.end", id="1")


def _rollout_journal(state: Path):
    journal = RolloutJournal(state)
    return journal.path("r1"), lambda: journal.write("r1", "status", status="running"), \
        lambda: journal.write("r1", "status", status="succeeded")


def _rollout_journal_batch(state: Path):
    journal = RolloutJournal(state)
    return journal.path("r1"), lambda: journal.write_many("r1", "host", [{"host": "a", "state": "draining"}]), \
        lambda: journal.write_many("r1", "host", [{"host": "a", "state": "deploying"}])


APPENDED = {"releases.jsonl": _releases, "build history": _build_history, "command journal": _command_journal,
            "rollout journal": _rollout_journal, "rollout journal, a batch's steps": _rollout_journal_batch}


@pytest.mark.parametrize("writer", list(APPENDED))
def test_appended_state_is_fsynced(writer: str, tmp_path: Path, fsyncs: FsyncWatch) -> None:
    path, first, second = APPENDED[writer](tmp_path / "state")
    fsyncs.watch(path)
    first()
    fsyncs.assert_durable(path)  # the file is new: its name must be on disk too
    fsyncs.watch(path)
    second()
    fsyncs.assert_durable(path, new_name=False)
    assert [json.loads(line) for line in path.read_text().splitlines()][-1]  # whole lines
    assert len(path.read_text().splitlines()) == 2


def test_a_batch_of_steps_is_one_write_after_a_torn_line(tmp_path: Path, fsyncs: FsyncWatch) -> None:
    journal = RolloutJournal(tmp_path)
    path = journal.path("r1")
    journal.write("r1", "status", status="running")
    with path.open("a") as f:
        f.write('{"kind": "host", "ho')  # a crash mid-append
    fsyncs.watch(path)
    journal.write_many("r1", "host", [{"host": h, "state": "draining", "batch": 1} for h in ("a", "b", "c")])
    fsyncs.assert_durable(path, new_name=False)
    assert [(e["kind"], e.get("host")) for e in read_jsonl(path)] == [
        ("status", None), ("host", "a"), ("host", "b"), ("host", "c")]
    assert len({e["ts"] for e in read_jsonl(path) if e["kind"] == "host"}) == 1  # one step for the batch


def test_releases_pick_the_rollback_target_after_a_torn_line(tmp_path: Path) -> None:
    releases = Releases(tmp_path / "releases.jsonl")
    releases.record("itrust", "v1", "a" * 40, "/a.tgz")
    releases.record("itrust", "v2", "b" * 40, "/b.tgz")
    with releases.path.open("a") as f:
        f.write('{"app": "itrust", "version": "v3", "com')  # a crash mid-append
    assert releases.previous("itrust", "v2") == ("v1", "a" * 40, "/a.tgz")
    releases.record("itrust", "v3", "c" * 40, "/c.tgz")  # starts on a line of its own
    assert [r["version"] for r in releases.of("itrust")] == ["v1", "v2", "v3"]


def test_write_atomic_mode_temp_name_and_failure(tmp_path: Path) -> None:
    from opsconsole import fsio

    target = tmp_path / "d" / "state.json"
    fsio.write_atomic(target, b"one")
    assert target.read_bytes() == b"one" and stat.S_IMODE(target.stat().st_mode) == 0o600
    # A file where the old fixed temp name was (`state.tmp`, perhaps a symlink planted there) is not touched.
    decoy = tmp_path / "elsewhere"
    decoy.write_text("keep")
    (target.parent / "state.tmp").symlink_to(decoy)
    fsio.write_atomic(target, "two", mode=0o644)
    assert target.read_text() == "two" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert decoy.read_text() == "keep"
    # A write that fails leaves the old file and no temp file.
    with pytest.raises(TypeError):
        fsio.write_atomic(target, 3)  # type: ignore[arg-type]
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json", "state.tmp"]


def test_read_jsonl_skips_torn_and_foreign_lines(tmp_path: Path) -> None:
    from opsconsole import fsio

    path = tmp_path / "x.jsonl"
    assert list(fsio.read_jsonl(path)) == []
    fsio.append_jsonl(path, {"a": 1})
    with path.open("a") as f:
        f.write('[1, 2]\n{"b": \n')
    fsio.append_jsonl(path, {"c": 3})
    assert list(fsio.read_jsonl(path)) == [{"a": 1}, {"c": 3}]
    assert json.loads(path.read_text().splitlines()[0]) == {"a": 1}
