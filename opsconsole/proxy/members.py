"""A runtime member set as sent to a proxy (admin API or HAProxy driver), checked whole before anything changes."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from typing import Any

from opsconsole.proxy.config import MemberConfig

MAX_MEMBERS = 1000  # per pool and request: more is a mistake, not a fleet
MAX_MEMBER_WEIGHT = 256  # HAProxy's largest server weight; the embedded proxy takes the same range
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\[\]-]{0,252}$")  # pod names, host names, address:port
USAGE = 'send {"members": ["ADDRESS:PORT", …]} or entries {"address", "port", "name"?, "weight"?}'


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` can be no member's address, or None.

    A member set at runtime comes from whoever holds the admin token or authors an EndpointSlice; it must
    not turn the proxy's public frontend into a way to a place no backend lives: the unspecified address
    (this machine, every interface), multicast and broadcast, and link-local — where cloud metadata
    services answer (169.254.169.254). Loopback stays allowed: single-machine setups and the demo put
    their backends there (the proxy's own ports are refused separately, see `own`).
    """
    if ip.is_unspecified:
        return "the unspecified address (it means this machine) is no backend"
    if ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return "a multicast or broadcast address is no backend"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer) is refused"
    mapped = getattr(ip, "ipv4_mapped", None)
    return address_problem(mapped) if mapped is not None else None


def member_configs(entries: Any, *, taken: Collection[str] = (),
                   own: Collection[tuple[str, int]] = ()) -> list[MemberConfig]:
    """`["10.0.0.5:8080", {"address": "10.0.0.6", "port": 8080, "name": "web-1", "weight": 1}, …]` as members.

    ValueError naming the entry at fault. Addresses must be IPs, not names: resolving is the sender's
    job (EndpointSlices list addresses) and HAProxy's `set server addr` takes nothing else. `taken`:
    names the app's other pools use. `own`: the proxy's own listening (address, port)s — a pool pointed
    at its own admin API or frontend would loop requests back into the proxy.
    """
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise ValueError(USAGE)
    if len(entries) > MAX_MEMBERS:
        raise ValueError(f"{len(entries)} members; at most {MAX_MEMBERS} per pool")
    out: list[MemberConfig] = []
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for i, entry in enumerate(entries):
        where = f"members[{i}]"
        if isinstance(entry, str):
            host, sep, port_text = entry.rpartition(":")
            if not sep or not port_text.isdigit():
                raise ValueError(f"{where}: {entry!r} is not ADDRESS:PORT")
            entry = {"address": host[1:-1] if host.startswith("[") and host.endswith("]") else host,
                     "port": int(port_text)}
        if not isinstance(entry, dict) or not {"address", "port"} <= set(entry) or \
                not set(entry) <= {"address", "port", "name", "weight"}:
            raise ValueError(f"{where}: {USAGE}")
        address, port, weight = entry["address"], entry["port"], entry.get("weight", 1)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{where}: address {address!r} is not an IP address") from None
        if (problem := address_problem(ip)) is not None:
            raise ValueError(f"{where}: {ip}: {problem}")
        address = str(ip)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"{where}: port must be a whole number from 1 to 65535; got {port!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_MEMBER_WEIGHT:
            raise ValueError(f"{where}: weight must be a whole number from 0 to {MAX_MEMBER_WEIGHT}; got {weight!r}")
        if _is_own(ip, port, own):
            raise ValueError(f"{where}: {entry['address']}:{port} is this proxy's own listener")
        # An IPv6 default name without brackets: a name must start with a letter or digit.
        name = entry.get("name") or f"{address}:{port}"
        if not isinstance(name, str) or not _MEMBER_NAME.match(name):
            raise ValueError(f"{where}: name {name!r} must be letters, digits and . _ : - (at most 253)")
        if name in names or name in taken:
            raise ValueError(f"{where}: member name {name!r} is used twice")
        if (address, port) in addresses:
            raise ValueError(f"{where}: {address}:{port} is listed twice")
        names.add(name)
        addresses.add((address, port))
        out.append(MemberConfig(name=name, address=address, port=port, weight=weight))
    return out


def _is_own(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, own: Collection[tuple[str, int]]) -> bool:
    """Whether ip:port reaches one of the proxy's own listeners (a wildcard listener answers on loopback too;
    another machine's address on the same port is another machine's backend, not us). An IPv4-mapped IPv6
    address (::ffff:127.0.0.1) is the IPv4 address it maps: connecting to it reaches the same listener."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for host, own_port in own:
        if own_port != port:
            continue
        try:
            listener = ipaddress.ip_address(host)
        except ValueError:
            continue
        if listener == ip or (listener.is_unspecified and ip.is_loopback):
            return True
    return False
