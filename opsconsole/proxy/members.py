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


def member_configs(entries: Any, *, taken: Collection[str] = ()) -> list[MemberConfig]:
    """`["10.0.0.5:8080", {"address": "10.0.0.6", "port": 8080, "name": "web-1", "weight": 1}, …]` as members.

    ValueError naming the entry at fault. Addresses must be IPs, not names: resolving is the sender's
    job (EndpointSlices list addresses) and HAProxy's `set server addr` takes nothing else. `taken`:
    names the app's other pools use.
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
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError(f"{where}: address {address!r} is not an IP address") from None
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"{where}: port must be a whole number from 1 to 65535; got {port!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_MEMBER_WEIGHT:
            raise ValueError(f"{where}: weight must be a whole number from 0 to {MAX_MEMBER_WEIGHT}; got {weight!r}")
        name = entry.get("name") or (f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
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
