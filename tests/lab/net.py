"""The lab's network: namespaces, veth pairs, a private bridge, and the unreachable guard route.

Topology (addresses for the default range 10.213.0.0/16):

    root ns ── ocl-pub 10.213.0.1 ══ 10.213.0.2 pub [ocl-jump] lan 10.213.1.1 ─┐
    root ns ── ocl-pxy 10.213.2.1 ══ 10.213.2.2 pub [ocl-proxy] lan 10.213.1.4 ─┤ br0 in [ocl-lan]
                                                 [ocl-db]    lan 10.213.1.5 ───┤
                                                 [ocl-app-N] lan 10.213.1.1N ──┘

The root namespace only has connected routes to the two public /24s; the rest of
the range hits `unreachable`, so a direct connect to an app host fails with
EHOSTUNREACH and no lab packet can ever follow the default route off the machine.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass

PUBLIC, PRIVATE, PROXY_PUBLIC = 0, 1, 2  # index of the /24 inside the lab range


class LabError(RuntimeError):
    """The lab could not be built or torn down; the message says which step."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def in_ns(ns: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"[{ns}] {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@dataclass(frozen=True)
class Subnets:
    cidr: ipaddress.IPv4Network

    @classmethod
    def parse(cls, text: str) -> "Subnets":
        net = ipaddress.ip_network(text, strict=True)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 22:
            raise LabError(f"lab range {text}: need an IPv4 network of /22 or larger")
        return cls(net)

    def subnet(self, index: int) -> ipaddress.IPv4Network:
        return list(self.cidr.subnets(new_prefix=24))[index]

    def addr(self, index: int, host: int) -> str:
        return str(self.subnet(index).network_address + host)


def range_conflicts(cidr: ipaddress.IPv4Network, prefix: str) -> list[str]:
    """Routes and addresses in the root namespace that overlap the lab range and are not ours."""
    conflicts = []
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("local", "broadcast"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        ours = route.get("type") == "unreachable" and net == cidr or str(route.get("dev", "")).startswith(prefix)
        if net.overlaps(cidr) and not ours:
            conflicts.append(f"route {dst} dev {route.get('dev', route.get('type'))}")
    for link in json.loads(ip("-j", "-4", "addr", "show").stdout or "[]"):
        if str(link.get("ifname", "")).startswith(prefix):
            continue
        for a in link.get("addr_info", []):
            if ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False).overlaps(cidr):
                conflicts.append(f"address {a['local']} on {link['ifname']}")
    return conflicts


def add_guard_route(cidr: ipaddress.IPv4Network) -> None:
    ip("route", "replace", "unreachable", str(cidr))


def remove_guard_route(cidr: str) -> None:
    ip("route", "del", "unreachable", cidr, check=False)


def namespaces(prefix: str) -> list[str]:
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def ns_pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def build(prefix: str, nets: Subnets, hosts: dict[str, int]) -> None:
    """Create every namespace and link. `hosts` maps lab host name -> its host number on the private /24."""
    lan = f"{prefix}lan"
    ip("netns", "add", lan)
    ip("-n", lan, "link", "set", "lo", "up")
    ip("-n", lan, "link", "add", "br0", "type", "bridge")
    ip("-n", lan, "link", "set", "br0", "up")
    private_len = nets.subnet(PRIVATE).prefixlen
    for name, number in hosts.items():
        ns = f"{prefix}{name}"
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        # Nothing in the lab routes for anyone: a host inherits the machine's ip_forward otherwise.
        in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        port = f"p-{name}"[:15]
        ip("-n", lan, "link", "add", port, "type", "veth", "peer", "name", "lan", "netns", ns)
        ip("-n", lan, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{nets.addr(PRIVATE, number)}/{private_len}", "dev", "lan")
        ip("-n", ns, "link", "set", "lan", "up")
    _public_leg(prefix, f"{prefix}pub", f"{prefix}jump", nets, PUBLIC)
    if "proxy" in hosts:
        _public_leg(prefix, f"{prefix}pxy", f"{prefix}proxy", nets, PROXY_PUBLIC)


def _public_leg(prefix: str, outer: str, ns: str, nets: Subnets, index: int) -> None:
    length = nets.subnet(index).prefixlen
    ip("link", "add", outer, "type", "veth", "peer", "name", "pub", "netns", ns)
    ip("addr", "add", f"{nets.addr(index, 1)}/{length}", "dev", outer)
    ip("link", "set", outer, "up")
    ip("-n", ns, "addr", "add", f"{nets.addr(index, 2)}/{length}", "dev", "pub")
    ip("-n", ns, "link", "set", "pub", "up")


def destroy(prefix: str) -> list[str]:
    """Kill every process in the lab's namespaces and delete them; returns what was removed."""
    import os
    import signal
    import time

    removed = []
    for ns in namespaces(prefix):
        for pid in ns_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(50):  # a killed process leaves the namespace only once it is reaped
            if not ns_pids(ns):
                break
            time.sleep(0.02)
        ip("netns", "del", ns, check=False)
        removed.append(ns)
    # Deleting a namespace deletes its veth ends and so their peers; this catches half-built runs.
    for link in json.loads(ip("-j", "link", "show").stdout or "[]"):
        if str(link.get("ifname", "")).startswith(prefix):
            ip("link", "del", link["ifname"], check=False)
            removed.append(link["ifname"])
    return removed
