"""The embedded proxy on another host: its admin API reached through an SSH-forwarded loopback port.

The proxy's admin API listens on that host's loopback only. Its runtime file (read over the
transport) names the port; the SSH pool forwards a local loopback port to it, so the token still
only ever goes to 127.0.0.1 (EmbeddedDriver refuses anything else).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from opsconsole.traffic.base import AppTraffic, Endpoint, TrafficDriver, TrafficState, TrafficUnavailable

if TYPE_CHECKING:
    from opsconsole.traffic.embedded import EmbeddedDriver
    from opsconsole.transport.ssh import SshTransport


async def remote_admin_port(transport: SshTransport, runtime_file: str) -> int:
    """The admin API's port on the proxy host, from the runtime file the proxy wrote there."""
    where = f"{transport.host.name}:{transport.path(runtime_file)}"
    try:
        data = json.loads(await transport.read_file(runtime_file))
        admin = str(data["admin"])
    except Exception as exc:  # missing (not started yet), half a file, or the host unreachable
        raise TrafficUnavailable(f"the proxy's runtime file {where} is missing or unreadable ({exc}); "
                                 "has `provision` started the proxy there?") from None
    parts = urllib.parse.urlsplit(admin)
    if admin.startswith("unix:") or parts.port is None:
        raise TrafficUnavailable(f"{where}: the admin API is {admin!r}; a remote proxy needs a loopback TCP "
                                 "admin listen (proxy.admin.listen: 127.0.0.1:PORT) to be forwarded")
    return parts.port


async def open_remote_embedded(transport: SshTransport, runtime_file: str, token: str, **kw: Any) -> EmbeddedDriver:
    """An EmbeddedDriver for the proxy on `transport`'s host, over a local SSH forward to its admin port."""
    from opsconsole.traffic.embedded import EmbeddedDriver

    port = await remote_admin_port(transport, runtime_file)
    address, local = await transport.pool.forward(transport.host, port)
    return EmbeddedDriver(f"http://{address}:{local}", token, **kw)


REMOTE_RUNTIME_FILE = "run/proxy.json"  # where playbooks/proxy-host.yml has the proxy write it, under the host root


class ForwardedEmbeddedDriver(TrafficDriver):
    """The engine's driver for `proxy.host:` — opens the forward on first use (the engine's driver() is not
    async) and again after the proxy became unreachable (it may have restarted on another admin port)."""

    name = "embedded"

    def __init__(self, transport: SshTransport, token: str, runtime_file: str = REMOTE_RUNTIME_FILE) -> None:
        self.transport = transport
        self.token = token
        self.runtime_file = runtime_file
        self._inner: EmbeddedDriver | None = None

    async def _driver(self) -> EmbeddedDriver:
        if self._inner is None:
            self._inner = await open_remote_embedded(self.transport, self.runtime_file, self.token)
        return self._inner

    async def _call(self, method: str, *args: Any) -> Any:
        driver = await self._driver()
        try:
            return await getattr(driver, method)(*args)
        except TrafficUnavailable:
            self._inner = None
            await driver.close()
            raise

    async def state(self) -> TrafficState:
        return await self._call("state")  # type: ignore[no-any-return]

    async def app(self, app: str) -> AppTraffic:
        return await self._call("app", app)  # type: ignore[no-any-return]

    async def set_weights(self, app: str, weights: Mapping[str, int]) -> AppTraffic:
        return await self._call("set_weights", app, weights)  # type: ignore[no-any-return]

    async def set_members(self, app: str, pool: str, members: Sequence[Endpoint]) -> AppTraffic:
        return await self._call("set_members", app, pool, members)  # type: ignore[no-any-return]

    async def drain(self, app: str, member: str) -> None:
        await self._call("drain", app, member)

    async def enable(self, app: str, member: str) -> None:
        await self._call("enable", app, member)

    async def disable(self, app: str, member: str) -> None:
        await self._call("disable", app, member)

    async def clear_alert(self, app: str) -> bool:
        return bool(await self._call("clear_alert", app))

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
            self._inner = None
