"""The embedded proxy's real Frontend, ClientConnection and UpstreamConnection on in-memory transports.

No sockets: a test or a benchmark feeds bytes to either side and reads what the proxy wrote. Used by
bench/bench_proxy_cpu.py (the Python path's cost) and tests/test_proxy_fast_path.py (the whole-read path
against the parser path, byte for byte). The socket-level behaviour is tested with real processes elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class MemoryTransport:
    """Just enough of asyncio.Transport for the proxy's protocols; writes are collected, not sent."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


@dataclasses.dataclass
class MemoryProxy:
    fe: Any  # Frontend
    client: Any  # ClientConnection
    client_transport: MemoryTransport
    upstream: Any  # UpstreamConnection, kept alive in the member's idle pool
    upstream_transport: MemoryTransport
    logged: list[str]


def memory_proxy(split: str = "request", **proxy_options: Any) -> MemoryProxy:
    """One app, one stable member with one idle kept-alive connection, one client connected. `proxy_options`
    are ProxyConfig fields (max_head_bytes=…).

    Must run inside an event loop (the Frontend takes the running one). Imports the `opsconsole` first on
    sys.path, so bench_proxy_cpu.py --compare measures another revision's package with it.
    """
    from opsconsole.proxy.balancer import AppState
    from opsconsole.proxy.config import FrontendConfig, HealthCheckConfig, Listen, MemberConfig, PoolConfig, ProxyConfig
    from opsconsole.proxy.health import HealthChecker
    from opsconsole.proxy.server import ClientConnection, Frontend
    from opsconsole.proxy.upstream import UpstreamConnection

    fe_cfg = FrontendConfig(app="bench", listen=Listen("127.0.0.1", 8080), split=split,
                            pools={"stable": PoolConfig("stable", 100, (MemberConfig("b1", "127.0.0.1", 9),)),
                                   "canary": PoolConfig("canary", 0)},
                            health=HealthCheckConfig(interval=1.0))
    pcfg = ProxyConfig(frontends={"bench": fe_cfg}, **{"upstream_idle": 30.0, **proxy_options})
    logged: list[str] = []
    app = AppState(fe_cfg, logged.append)
    fe = Frontend(app, pcfg, logged.append, HealthChecker(logged.append))
    client = ClientConnection(fe)
    ct = MemoryTransport()
    client.connection_made(ct)
    up = UpstreamConnection(app.members["b1"])
    ut = MemoryTransport()
    up.connection_made(ut)
    fe._pool(up)  # an idle kept-alive connection, as after the first request of a real run
    return MemoryProxy(fe, client, ct, up, ut, logged)
