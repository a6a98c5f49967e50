"""What we know of a group's instances, and the inventory file that keeps it between runs.

This module imports no boto3, so building the inventory at start-up stays cheap
and works without AWS access: the console shows the last recorded fleet and
`describe`/`provision` refresh it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opsconsole.fsio import write_atomic

ALIVE = ("pending", "running", "stopping", "stopped")  # states that still count towards `count`
GONE = ("shutting-down", "terminated")


@dataclass(frozen=True)
class Ec2Instance:
    instance_id: str
    group: str
    index: int  # the n of host name <group>-<n>; the lowest free one is reused
    state: str
    instance_type: str
    private_ip: str | None
    public_ip: str | None
    launch_time: datetime | None

    @property
    def name(self) -> str:
        return f"{self.group}-{self.index}"

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["launch_time"] = self.launch_time.isoformat() if self.launch_time else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Ec2Instance":
        launch = data.get("launch_time")
        return cls(instance_id=str(data["instance_id"]), group=str(data["group"]), index=int(data["index"]),
                   state=str(data["state"]), instance_type=str(data.get("instance_type", "")),
                   private_ip=data.get("private_ip"), public_ip=data.get("public_ip"),
                   launch_time=datetime.fromisoformat(launch) if launch else None)

    @classmethod
    def from_api(cls, group: str, item: dict[str, Any]) -> "Ec2Instance":
        """From one instance of a DescribeInstances/RunInstances answer."""
        tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
        try:
            if "Index" in tags:
                index = int(tags["Index"])
            else:  # one of a batch: the batch's first index plus its place in the launch
                index = int(tags.get("IndexBase", "0")) + int(item.get("AmiLaunchIndex", 0))
        except ValueError:
            index = 0
        return cls(instance_id=item["InstanceId"], group=group, index=index,
                   state=item.get("State", {}).get("Name", "unknown"), instance_type=item.get("InstanceType", ""),
                   private_ip=item.get("PrivateIpAddress"), public_ip=item.get("PublicIpAddress"),
                   launch_time=item.get("LaunchTime"))


def inventory_path(state_dir: Path, group: str) -> Path:
    return state_dir / "inventory" / f"ec2-{group}.json"


def read_instances(state_dir: Path, group: str) -> list[Ec2Instance]:
    """The instances last recorded for `group`; none when nothing was recorded (or the file is damaged)."""
    try:
        data = json.loads(inventory_path(state_dir, group).read_text())
        return [Ec2Instance.from_json(i) for i in data.get("instances", [])]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return []


def write_instances(state_dir: Path, group: str, project: str, region: str, instances: list[Ec2Instance]) -> Path:
    """Record `instances` atomically, so a console killed mid-write never leaves half a file."""
    path = inventory_path(state_dir, group)
    body = {"project": project, "group": group, "region": region, "recorded_at": time.time(),
            "instances": [i.to_json() for i in sorted(instances, key=lambda i: (i.index, i.instance_id))]}
    write_atomic(path, json.dumps(body, indent=1))
    return path
