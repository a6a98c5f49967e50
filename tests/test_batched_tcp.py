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
