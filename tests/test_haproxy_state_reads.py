"""HaproxyDriver.state() reads `show stat` once, also while a removed member drains and when it is reaped.

Real HAProxy, real backends, real requests held in flight on the member that leaves; the stats socket is
reached through a channel that counts the `show stat` commands it carries.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from opsconsole.traffic.base import Endpoint
from opsconsole.traffic.haproxy import HaproxyDriver, UnixSocketChannel
from test_haproxy import lab  # noqa: F401  (the fixture)
from test_proxy_support import app_block

pytestmark = pytest.mark.timeout(120)


class CountingChannel(UnixSocketChannel):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.stat_reads = 0

    async def command(self, line: str) -> str:
        self.stat_reads += line.strip() == "show stat"
        return await super().command(line)


def test_state_reads_show_stat_once_while_a_member_drains_and_when_it_is_reaped(lab) -> None:  # noqa: F811
    s1, s2 = lab.backend("s1"), lab.backend("s2")
    lab.haproxy(app_block("web", [s1, s2], []), slots=1)
    channel = CountingChannel(lab.sock)
    d = HaproxyDriver(lab.cfg, channel)
    url = f"http://127.0.0.1:{lab.ports['web']}/slow?ms=1500&slow=s2"  # only s2 is slow

    async def scenario():
        async with httpx.AsyncClient(timeout=10) as client:
            await d.state()  # the driver's first look (it adopts what HAProxy runs)
            held = [asyncio.ensure_future(client.get(url)) for _ in range(6)]  # round robin: some on s2

            async def s2_busy() -> bool:
                return (await d.app("web")).member("s2").inflight > 0

            deadline = time.monotonic() + 10
            while not await s2_busy():
                assert time.monotonic() < deadline, "no request reached s2"
                await asyncio.sleep(0.02)
            await d.set_members("web", "stable", [Endpoint("s1", "127.0.0.1", s1.port)])

            before = channel.stat_reads
            draining = await d.state()
            reads_draining = channel.stat_reads - before
            answers = await asyncio.gather(*held)

            async def s2_idle() -> bool:
                # HAProxy counts the session until the response has gone out; read its stats directly.
                out = await channel.command("show stat")
                return all(row.split(",")[4] in ("0", "") for row in out.splitlines() if row.startswith("be_web,s2,"))

            deadline = time.monotonic() + 10
            while not await s2_idle():
                assert time.monotonic() < deadline, "s2 kept sessions after its requests were answered"
                await asyncio.sleep(0.02)
            before = channel.stat_reads
            reaped = await d.state()
            return draining, reads_draining, channel.stat_reads - before, reaped, answers

    draining, reads_draining, reads_reaped, reaped, answers = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * 6
    s2 = draining.apps["web"].member("s2")
    assert s2.removed and s2.admin == "draining" and s2.inflight > 0, s2
    assert reads_draining == 1, f"state() read `show stat` {reads_draining} times while s2 drained"
    assert [m.name for m in reaped.apps["web"].pools["stable"].members] == ["s1"]
    assert reads_reaped == 1, f"state() read `show stat` {reads_reaped} times when it reaped s2"
