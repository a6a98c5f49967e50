"""A slow link to the lab's jump host: the console far from its fleet, as an operator's laptop or CI runner is.

This kernel has no netem (`tc qdisc add ... netem`: "Specified qdisc kind is unknown"), so the delay is made in
user space: a TCP relay on 127.0.0.1 that holds every chunk `delay` seconds in each direction before passing
it on, in order. Each side's TCP still acknowledges at once, so what it adds is the waits of the protocols
above it, which is what a far link costs a tool: every round trip that tool waits for.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.lab import Lab


class DelayedLink:
    """`with DelayedLink((host, port), 0.01) as link:` connections to 127.0.0.1:`link.port` reach `target`,
    every chunk held `delay` seconds each way (a round-trip time of 2 x delay)."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delayed-link", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> "DelayedLink":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)  # unwound before the loop stops

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._carry(reader, up_writer), self._carry(up_reader, writer),
                             return_exceptions=True)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pass what `reader` gets to `writer`, each chunk `delay` after it came, in order; the end too."""
        loop = asyncio.get_running_loop()
        held: collections.deque[tuple[float, bytes]] = collections.deque()
        arrived = asyncio.Event()

        async def deliver() -> None:
            while True:
                while not held:
                    arrived.clear()
                    await arrived.wait()
                due, data = held.popleft()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(65536)
                held.append((loop.time() + self.delay, data))
                arrived.set()
                if not data:
                    break
            await delivery
        finally:
            delivery.cancel()


@dataclass(frozen=True)
class FarJump:
    """How each tool reaches the lab's jump host through a DelayedLink: the address and port for opsconsole's
    config, an ssh_config for Ansible, and a known_hosts that trusts the jump's key at the link's address."""

    address: str
    port: int
    ssh_config: Path
    known_hosts: Path


def far_jump(lab: Lab, link: DelayedLink, work: Path) -> FarJump:
    """Copies of the lab's ssh_config and known_hosts in `work` that reach its jump host through `link`."""
    known = work / "known_hosts"
    _, key_type, key = lab.known_hosts_line("jump").split()[:3]
    known.write_text(lab.known_hosts.read_text() + f"[127.0.0.1]:{link.port} {key_type} {key}\n")
    lab_jump = f"Host jump\n  HostName {lab.jump.address}\n"
    text = lab.ssh_config.read_text()
    if lab_jump not in text:
        raise SystemExit(f"{lab.ssh_config} has no jump entry as tests/lab writes it")
    config = work / "ssh_config"
    config.write_text(text.replace(lab_jump, f"Host jump\n  HostName 127.0.0.1\n  Port {link.port}\n")
                      .replace(str(lab.known_hosts), str(known)))
    return FarJump(address="127.0.0.1", port=link.port, ssh_config=config, known_hosts=known)
