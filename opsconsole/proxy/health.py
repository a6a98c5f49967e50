"""Active health checks: every member probed on an interval; `fall` bad → out, `rise` good → back."""

from __future__ import annotations

import asyncio
import random
from typing import Callable

from opsconsole.proxy.balancer import DISABLED, AppState, Member
from opsconsole.proxy.config import HealthCheckConfig


async def probe(cfg: HealthCheckConfig, member: Member) -> tuple[bool, str]:
    """One check on a fresh connection (a kept-alive one would hide a member that stopped accepting)."""
    writer = None
    try:
        async with asyncio.timeout(cfg.timeout):
            reader, writer = await asyncio.open_connection(member.address, member.port)
        if cfg.kind == "tcp":
            return True, "tcp connect ok"
        host = f"[{member.address}]" if ":" in member.address else member.address  # an IPv6 literal, RFC 9110 §7.2
        writer.write(f"GET {cfg.path} HTTP/1.1\r\nHost: {host}:{member.port}\r\n"
                     "User-Agent: opsconsole-proxy-check\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(cfg.timeout):
            line = await reader.readline()
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"not an HTTP answer: {line[:60]!r}"
        status = int(parts[1])
        return (status == cfg.status), f"status {status}"
    except TimeoutError:
        return False, f"no answer within {cfg.timeout}s"
    except OSError as exc:
        return False, f"connect failed: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.close()


class HealthChecker:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self._loops: dict[Member, asyncio.Task] = {}
        self._now: set[Member] = set()
        self._once: set[asyncio.Task[None]] = set()  # check_now's checks: the loop keeps only weak references

    def sync(self, apps: dict[str, AppState]) -> None:
        """Start checks for new members and stop them for members that left (after a reload)."""
        live = {}
        for app in apps.values():
            for m in app.members.values():
                live[m] = app
        for m, task in list(self._loops.items()):
            if m not in live:
                task.cancel()
                del self._loops[m]
        for m, app in live.items():
            if m not in self._loops:
                self._loops[m] = asyncio.get_running_loop().create_task(self._loop(app, m))

    async def _loop(self, app: AppState, m: Member) -> None:
        # Spread the first checks so N members do not all connect in the same millisecond.
        await asyncio.sleep(random.uniform(0, min(0.05, app.cfg.health.interval)))
        while True:
            if m.admin != DISABLED and not m.removed:  # a removed member is draining, not coming back
                await self.check(app, m)
            await asyncio.sleep(app.cfg.health.interval)

    async def check(self, app: AppState, m: Member) -> None:
        cfg = app.cfg.health
        ok, detail = await probe(cfg, m)
        m.last_check = detail
        if ok:
            m.check_bad = 0
            m.check_ok += 1
            if not m.healthy and m.check_ok >= cfg.rise:
                app.mark(m, True, f"{m.check_ok} good checks ({detail})")
        else:
            m.check_ok = 0
            m.check_bad += 1
            if m.healthy and m.check_bad >= cfg.fall:
                app.mark(m, False, f"{m.check_bad} failed checks ({detail})")

    def check_now(self, app: AppState, m: Member) -> None:
        if m in self._now:
            return
        self._now.add(m)

        async def once() -> None:
            try:
                await self.check(app, m)
            finally:
                self._now.discard(m)

        task = asyncio.get_running_loop().create_task(once())
        self._once.add(task)
        task.add_done_callback(self._once.discard)

    async def close(self) -> None:
        tasks = [*self._loops.values(), *self._once]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
