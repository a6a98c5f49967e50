"""Open the traffic driver a proxy config names: the embedded proxy's admin API, or HAProxy's stats socket."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opsconsole.traffic.base import TrafficDriver, TrafficError, TrafficUnavailable

if TYPE_CHECKING:
    from opsconsole.proxy.config import ProxyConfig
    from opsconsole.transport.base import Transport


def open_driver(config: ProxyConfig, *, runtime_file: Path | None = None, token: str | None = None,
                state_file: Path | None = None, transport: Transport | None = None) -> TrafficDriver:
    """The driver `config.driver` names.

    embedded: finds the admin API in the proxy's `runtime_file`; the token defaults to the config's source.
    haproxy: the stats socket `config.haproxy.stats_socket`, on this machine or through `transport`
    (the inventory host `config.haproxy.host`, reached with socat); `state_file` keeps the desired state.
    """
    if config.driver == "embedded":
        from opsconsole.traffic.embedded import EmbeddedDriver

        if runtime_file is None:
            raise TrafficUnavailable("the embedded proxy's runtime file is needed to find its admin API")
        try:
            secret = token or config.read_token()
        except ValueError as exc:
            raise TrafficError(str(exc)) from None
        return EmbeddedDriver.from_runtime_file(runtime_file, secret)
    from opsconsole.traffic.haproxy import HaproxyDriver, TransportChannel, UnixSocketChannel

    sock = config.haproxy.stats_socket
    channel = TransportChannel(transport, sock) if transport is not None else UnixSocketChannel(sock)
    return HaproxyDriver(config, channel, state_file=state_file)
