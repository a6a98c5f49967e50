"""Faults: a host whose sshd dies mid-play fails alone with a clear reason; a dropped link is re-opened."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from opsconsole.transport.base import TransportError
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host
from tests.test_ssh_transport import live_processes, until

pytest_plugins = ["tests.lab.fixtures"]


async def play(transport: SshTransport, tasks: int, after_first: asyncio.Event | None = None) -> str:
    """A play in miniature: tasks one after another on one host; returns 'ok' or why it failed."""
    try:
        for i in range(tasks):
            result = await transport.run(f"sleep 0.3; echo task {i}")
            if not result.ok:
                return f"task {i}: {result.describe()}"
            if i == 0 and after_first is not None:
                after_first.set()
        return "ok"
    except TransportError as exc:
        return str(exc)


async def test_sshd_stopped_mid_play_fails_that_host_only(lab: Lab, pool: SshPool) -> None:
    transports = {h.name: SshTransport(lab_host(lab, h.name), pool) for h in lab.apps}
    first_done = asyncio.Event()
    victim = "app-2"
    runs = {name: asyncio.create_task(play(t, 4, first_done if name == victim else None))
            for name, t in transports.items()}
    await first_done.wait()
    lab.stop_sshd(victim)  # the host goes away: listener and its open connections
    try:
        outcome = {name: await asyncio.wait_for(task, 30) for name, task in runs.items()}
        assert outcome[victim] != "ok"
        assert outcome[victim].startswith(f"{victim}: ")
        assert "connection lost" in outcome[victim] or "Connection refused" in outcome[victim], outcome[victim]
        assert all(outcome[name] == "ok" for name in transports if name != victim), outcome
        # The next task on the dead host fails fast, naming the address and the jump host.
        with pytest.raises(TransportError, match=rf"{victim}: cannot connect to {lab.hosts[victim].address}:22 "
                                                 rf"through jump host {lab.jump.address}: .*refused"):
            await transports[victim].run("true")
    finally:
        lab.start_sshd(victim)
    assert (await transports[victim].run("true")).ok  # and it comes back once sshd does


async def test_dropped_connection_is_reopened_for_the_next_task(lab: Lab, pool: SshPool) -> None:
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    assert (await app1.run("echo before")).ok
    before = pool.connects
    conn = await pool.connection(app1.host)
    assert lab.drop_connections("app-1") > 0
    await asyncio.wait_for(conn.wait_closed(), 10)  # the client has seen the drop
    result = await app1.run("echo after")
    assert result.ok and result.stdout == "after\n"
    assert pool.connects == before + 1
    assert await app1.write_file("after-drop.txt", b"x") is True  # SFTP comes back with it


async def test_dropped_jump_connection_is_reopened_too(lab: Lab, pool: SshPool) -> None:
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    assert (await app1.run("true")).ok
    before = pool.connects
    conn = await pool.connection(app1.host)  # tunnelled through the jump host: it goes down with it
    assert lab.drop_connections("jump") > 0
    await asyncio.wait_for(conn.wait_closed(), 10)
    assert (await app1.run("echo again")).stdout == "again\n"
    assert pool.connects == before + 2  # the jump host, then the host behind it


async def test_connection_lost_while_a_command_runs_is_a_clear_failure(lab: Lab, pool: SshPool) -> None:
    app1 = SshTransport(lab_host(lab, "app-1"), pool)
    assert (await app1.run("true")).ok  # connected: the drop below must cut a command, not a handshake
    seconds = f"5.{uuid.uuid4().int % 10**6:06d}"  # a sleep only this test runs
    task = asyncio.create_task(app1.run(f"sleep {seconds}"))
    await until(lambda: live_processes(lab, "app-1", f"sleep {seconds}"), "the command running on app-1")
    assert lab.drop_connections("app-1") > 0
    with pytest.raises(TransportError, match=rf"app-1: connection lost while running 'sleep {seconds}'"):
        await asyncio.wait_for(task, 10)
    assert (await app1.run("true")).ok
