"""The recorded instances of an EC2 group as opsconsole hosts.

Reads only the inventory file `provision`/`describe` wrote (no AWS call), so
building the inventory stays instant and works offline; the file is refreshed
by the fleet commands.
"""

from __future__ import annotations

from pathlib import Path

from opsconsole.config.model import GroupConfig
from opsconsole.ec2.records import Ec2Instance, read_instances
from opsconsole.hosts import Host

DEFAULT_ROOT = "/srv/opsconsole"


def ec2_hosts(group: GroupConfig, state_dir: Path, *, include_gone: bool = False, ssh_user: str | None = None,
              port: int | None = None) -> list[Host]:
    """One ssh Host per recorded instance of `group`, named `<group>-<index>`, addressed by its private IP.

    Terminated and shutting-down instances are left out unless `include_gone` (the fleet pane wants them,
    to show them so); an instance without a private address yet is left out, it cannot be reached.
    `ssh_user` is the group's `ec2.ssh_user`; `port` its app port (`ec2.app_port`), when it runs an app.
    """
    hosts = []
    for instance in read_instances(state_dir, group.name):
        if not instance.private_ip or (not instance.alive and not include_gone):
            continue
        hosts.append(instance_host(group, instance, ssh_user=ssh_user, port=port))
    return hosts


def instance_host(group: GroupConfig, instance: Ec2Instance, *, ssh_user: str | None = None,
                  port: int | None = None) -> Host:
    ec2_vars = {"instance_id": instance.instance_id, "instance_state": instance.state,
                "instance_type": instance.instance_type, "private_ip": instance.private_ip,
                "public_ip": instance.public_ip,
                "launch_time": instance.launch_time.isoformat() if instance.launch_time else None}
    return Host(name=instance.name, group=group.name, address=instance.private_ip or "", transport="ssh",
                root=str(group.vars.get("host_root", DEFAULT_ROOT)), port=port, role=group.role,
                vars={**group.vars, **ec2_vars}, ssh_user=ssh_user)
