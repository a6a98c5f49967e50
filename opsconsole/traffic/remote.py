"""The embedded proxy on another host: its admin API reached through an SSH-forwarded loopback port.

The proxy's admin API listens on that host's loopback only. Its runtime file (read over the
transport) names the port; the SSH pool forwards a local loopback port to it, so the token still
only ever goes to 127.0.0.1 (EmbeddedDriver refuses anything else).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from opsconsole.traffic.base import TrafficUnavailable

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
