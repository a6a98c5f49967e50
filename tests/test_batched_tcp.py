"""BatchedTcp, the direct TCP connection under SSH connections: what is written in one pass of the event loop
leaves as one write to the socket, in order; close() still delivers what was written; abort() drops it.
A real TCP server on loopback reads what arrives (the SSH lab tests run every connection over it too)."""

from __future__ import annotations

import asyncio

from opsconsole.transport.batched_tcp import BatchedTcp


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.ended.done() or self.ended.set_result("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.done() or self.ended.set_result("lost")


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]


async def _pair() -> tuple[Client, Collect, list[bytes], asyncio.AbstractServer]:
    server_side: list[Collect] = []
    server = await asyncio.get_running_loop().create_server(lambda: server_side.append(Collect()) or server_side[-1],
                                                            "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    batched, client = await BatchedTcp().create_connection(Client, "127.0.0.1", port)
    assert isinstance(client, Client) and client.transport is batched
    sent: list[bytes] = []
    real = batched._transport
    real_write = real.write

    def spy(data: bytes) -> None:  # the socket transport's writes, counted, then done for real
        sent.append(bytes(data))
        real_write(data)

    real.write = spy  # type: ignore[method-assign]
    while not server_side:
        await asyncio.sleep(0.001)
    return client, server_side[0], sent, server


async def test_writes_of_one_pass_leave_as_one_in_order() -> None:
    client, far, sent, server = await _pair()
    try:
        for i in range(50):
            client.transport.write(b"%03d," % i)
        assert sent == []  # nothing sent yet: the pass is not over
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(sent) == 1
        client.transport.write(b"next")
        await asyncio.sleep(0.01)
        assert len(sent) == 2
        want = b"".join(b"%03d," % i for i in range(50)) + b"next"
        while len(far.data) < len(want):
            await asyncio.sleep(0.001)
        assert bytes(far.data) == want
    finally:
        client.transport.abort()
        server.close()


async def test_close_delivers_what_was_written_and_abort_drops_it() -> None:
    client, far, _, server = await _pair()
    client.transport.write(b"goodbye")
    client.transport.close()  # as an SSH disconnect message is written, then the connection closed
    assert await asyncio.wait_for(far.ended, 5) == "eof" and bytes(far.data) == b"goodbye"
    client, far, sent, server2 = await _pair()
    client.transport.write(b"never")
    client.transport.abort()
    await asyncio.wait_for(far.ended, 5)
    assert sent == [] and bytes(far.data) == b""
    server.close()
    server2.close()


class Channel:
    """What asyncssh's SSHTCPChannel is to the session it opens: a transport, whose writes are recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Jump:
    """The `via` connection's side of the contract: create_connection(session_factory, host, port) opens a
    channel, hands it to the session and starts it, and returns (channel, session) — as asyncssh's does."""

    def __init__(self) -> None:
        self.channel = Channel()
        self.opened: tuple[str, int] | None = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("10.0.0.9", 22) if name == "peername" else default

    async def create_connection(self, factory, host: str, port: int):  # type: ignore[no-untyped-def]
        self.opened = (host, port)
        session = factory()
        session.connection_made(self.channel)
        session.session_started()
        session.data_received(b"banner", None)  # a channel passes a datatype (None: plain data)
        return self.channel, session


class Inner(Client):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[bytes] = []
        self.started = False

    def session_started(self) -> None:
        self.started = True

    def data_received(self, data: bytes) -> None:
        self.got.append(data)


async def test_through_a_jump_connection_one_pass_is_one_channel_write_and_reads_pass_through() -> None:
    jump = Jump()
    tunnel = BatchedTcp(via=jump)
    assert "10.0.0.9:22" in repr(tunnel)
    transport, inner = await tunnel.create_connection(Inner, "10.1.0.5", 22)
    assert jump.opened == ("10.1.0.5", 22) and isinstance(inner, Inner) and inner.started
    assert inner.got == [b"banner"]
    assert inner.transport is transport
    for i in range(20):
        transport.write(b"%02d;" % i)
    assert jump.channel.writes == []
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert jump.channel.writes == [b"".join(b"%02d;" % i for i in range(20))]
    transport.write(b"bye")
    transport.close()  # the goodbye written just before close still goes out, then the channel closes
    assert jump.channel.writes[-1] == b"bye" and jump.channel.closed
