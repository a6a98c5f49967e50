"""A TCP connection for asyncssh whose writes leave once per pass of the event loop.

asyncssh writes every SSH packet to its transport at once, and asyncio sends each write as its own
syscall. Through a jump host every packet of every host behind it goes down the one jump connection, so
a rollout of a batch of hosts made one `send()` per packet: at 30 hosts, 11,000 sends costing ~90 µs
each on this machine's namespaced links, a fifth of the console's CPU, and as many wake-ups of the
bastion's sshd. Packets written in the same pass of the loop (the batch's hosts answering together)
now leave in one send, in order, before the loop next waits; nothing waits longer than that pass.

It plugs into asyncssh's documented `tunnel=` argument, which takes any object with a
`create_connection(protocol_factory, host, port)` coroutine. With `via=` (the jump host's SSH connection),
the same holds for a host's connection inside the jump's: its packets of one pass leave as one channel
data message instead of one each, so the jump connection carries, encrypts and forwards fewer and bigger.
(That message then waits for the jump connection's own flush: two passes of the loop, not one.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable


class BatchedTcp:
    """asyncssh's `tunnel=`: a direct TCP connection (what `tunnel=()` opens), or with `via` a connection
    tunnelled through that SSH connection (what `tunnel=via` opens), with writes batched per pass."""

    def __init__(self, via: Any = None) -> None:
        self.via = via  # an asyncssh.SSHClientConnection, or None: straight over TCP

    @property
    def logger(self) -> Any:
        """asyncssh logs "Opening SSH connection … via SSH tunnel" to the tunnel's logger: the jump's, which
        names its connection, as with `tunnel=jump`."""
        return getattr(self.via, "logger", logging.getLogger("asyncssh"))

    async def create_connection(self, protocol_factory: Callable[[], asyncio.Protocol], host: str,
                                port: int) -> tuple["BatchedWrites", asyncio.Protocol]:
        if self.via is not None:
            _, shim = await self.via.create_connection(lambda: _Shim(protocol_factory()), host, port)
        else:
            _, shim = await asyncio.get_running_loop().create_connection(lambda: _Shim(protocol_factory()), host, port)
        assert shim.batched is not None
        return shim.batched, shim.inner

    def __repr__(self) -> str:
        if self.via is None:
            return "direct TCP"
        peer = self.via.get_extra_info("peername") or ("?", 0)
        return f"tunnel through the SSH connection to {peer[0]}:{peer[1]}"


class BatchedWrites:
    """The transport the SSH connection sees: writes gathered and sent once per loop pass; the rest is the
    real transport's."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._out.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        self._scheduled = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # a goodbye (SSH_MSG_DISCONNECT) written just before close still goes out
        self._transport.close()

    def abort(self) -> None:
        self._out = []
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._out))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:  # pause_reading, resume_reading, set_write_buffer_limits, …
        return getattr(self._transport, name)


class _Shim(asyncio.Protocol):
    """Between the socket (or the tunnel's SSH channel) and the SSH connection: hands the connection the
    batching transport and passes every event on unchanged."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.batched: BatchedWrites | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.batched = BatchedWrites(transport)  # type: ignore[arg-type]
        self.inner.connection_made(self.batched)  # type: ignore[arg-type]

    def session_started(self) -> None:  # (an SSH channel's session is told when it opened)
        self.inner.session_started()  # type: ignore[attr-defined]

    def data_received(self, data: bytes, datatype: Any = None) -> None:  # (an SSH channel passes a datatype)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
