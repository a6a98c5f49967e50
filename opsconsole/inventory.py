"""Which hosts exist and in which group: built from the config's groups.

A `local` group of N instances becomes hosts `<group>-1` … `<group>-N`, each a
directory under the state dir, answering on loopback. Their ports are picked
once (free ports, so a demo never collides with whatever else holds 8080) and
remembered in the state dir, so a restarted console finds its instances again.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from opsconsole.config.model import Config, GroupConfig
from opsconsole.fsio import write_atomic
from opsconsole.hosts import Host


class Inventory:
    def __init__(self, hosts: list[Host]) -> None:
        self._hosts = {h.name: h for h in hosts}

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def get(self, name: str) -> Host | None:
        return self._hosts.get(name)

    def group(self, group: str) -> list[Host]:
        return [h for h in self._hosts.values() if h.group == group]

    def groups(self) -> dict[str, list[Host]]:
        result: dict[str, list[Host]] = {}
        for h in self._hosts.values():
            result.setdefault(h.group, []).append(h)
        return result

    def names(self) -> list[str]:
        return list(self._hosts)


def build_inventory(config: Config) -> Inventory:
    hosts: list[Host] = []
    ports = _PortBook(config.state_dir / "inventory" / "local-ports.json")
    for group in config.groups.values():
        if group.provider == "local":
            hosts.extend(_local_hosts(config, group, ports))
        elif group.provider == "static":
            for sh in group.hosts:
                hosts.append(Host(
                    name=sh.name, group=group.name, address=sh.address, transport="ssh",
                    root=str(group.vars.get("host_root", "/srv/opsconsole")), port=sh.port,
                    role=sh.role or group.role, vars={**group.vars, **sh.vars},
                    ssh_port=sh.ssh_port, ssh_user=sh.user,
                ))
        elif group.provider == "ec2" and group.ec2 is not None:  # the loader gives every ec2 group its section
            from opsconsole.ec2.inventory import ec2_hosts

            hosts.extend(ec2_hosts(group, config.state_dir, ssh_user=group.ec2.ssh_user, port=group.ec2.app_port))
    ports.save()
    return Inventory(hosts)


def _local_hosts(config: Config, group: GroupConfig, ports: "_PortBook") -> list[Host]:
    result = []
    for i in range(1, group.count + 1):
        name = f"{group.name}-{i}"
        port = group.base_port + i - 1 if group.base_port else ports.port_for(name)
        result.append(Host(
            name=name, group=group.name, address="127.0.0.1", transport="local",
            root=str(config.state_dir / "hosts" / name), port=port, role=group.role,
            vars=dict(group.vars),
        ))
    return result


class _PortBook:
    """Loopback ports handed to local hosts, kept stable across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.changed = False
        try:
            self.ports: dict[str, int] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            self.ports = {}

    def port_for(self, name: str) -> int:
        if name not in self.ports:
            self.ports[name] = _free_port(set(self.ports.values()))
            self.changed = True
        return self.ports[name]

    def save(self) -> None:
        if self.changed:
            write_atomic(self.path, json.dumps(self.ports, indent=1, sort_keys=True))


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
