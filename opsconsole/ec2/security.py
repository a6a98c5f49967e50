"""The security group opsconsole manages for each EC2 group, and the rules the seed's layout needs.

Each group gets one group of its own, `<project>-<group>`, tagged like its
instances. Its ingress is *converged*: rules we want are added, rules nobody
asked for are revoked — "SSH only from the jump host" must stay true even if
someone opened port 22 by hand. Extra groups named in `security_groups:` are
attached as they are and never changed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from opsconsole.ec2.api import Ec2Api
from opsconsole.ec2.config import Ec2GroupConfig, is_cidr
from opsconsole.ec2.errors import Ec2Error

MANAGED_BY = "opsconsole"


@dataclass(frozen=True)
class IngressRule:
    """TCP `port` open to `source`: a group name (its managed security group) or a CIDR."""

    port: int
    source: str
    why: str

    @property
    def from_group(self) -> bool:
        return not is_cidr(self.source)


def sg_name(project: str, group: str) -> str:
    return f"{project}-{group}"


def desired_rules(cfg: Ec2GroupConfig) -> list[IngressRule]:
    """What a group's own security group lets in, from its firewall intent."""
    rules = [IngressRule(22, _cidr(s), "ssh from the jump host") for s in cfg.ssh_from]
    if cfg.firewall == "db" and cfg.db_port and cfg.app_group:
        rules.append(IngressRule(cfg.db_port, cfg.app_group, f"database, from the app group {cfg.app_group}"))
    elif cfg.firewall == "proxy" and cfg.listen_port:
        rules += [IngressRule(cfg.listen_port, _cidr(c), "proxy listen port") for c in cfg.listen_from]
    elif cfg.firewall == "app" and cfg.app_port and cfg.proxy_group:
        rules.append(IngressRule(cfg.app_port, cfg.proxy_group, f"app port, from the proxy group {cfg.proxy_group}"))
    return rules


def _cidr(text: str) -> str:
    """A bare address means that one host."""
    return f"{text}/32" if is_cidr(text) and "/" not in text else text


Perm = tuple[str, int, int, str]  # protocol, from port, to port, "cidr:…" or "sg:…"


def _flatten(permissions: list[dict[str, Any]]) -> set[Perm]:
    out: set[Perm] = set()
    for p in permissions:
        key = (str(p.get("IpProtocol")), int(p.get("FromPort", -1)), int(p.get("ToPort", -1)))
        out.update((*key, f"cidr:{r['CidrIp']}") for r in p.get("IpRanges", []))
        out.update((*key, f"cidr6:{r['CidrIpv6']}") for r in p.get("Ipv6Ranges", []))
        out.update((*key, f"sg:{g['GroupId']}") for g in p.get("UserIdGroupPairs", []))
        out.update((*key, f"pl:{g['PrefixListId']}") for g in p.get("PrefixListIds", []))
    return out


def _permission(perm: Perm, why: str = "") -> dict[str, Any]:
    proto, low, high, source = perm
    kind, _, value = source.partition(":")
    entry: dict[str, Any] = {"IpProtocol": proto, "FromPort": low, "ToPort": high}
    described = {"Description": why} if why else {}
    if kind == "cidr":
        entry["IpRanges"] = [{"CidrIp": value, **described}]
    elif kind == "cidr6":
        entry["Ipv6Ranges"] = [{"CidrIpv6": value}]
    elif kind == "sg":
        entry["UserIdGroupPairs"] = [{"GroupId": value, **described}]
    else:
        entry["PrefixListIds"] = [{"PrefixListId": value}]
    return entry


class SecurityGroups:
    """Finds, creates, converges and deletes the managed groups of one project in one VPC."""

    def __init__(self, api: Ec2Api, project: str, vpc_id: str) -> None:
        self.api = api
        self.project = project
        self.vpc_id = vpc_id
        self.created: list[str] = []  # ids created through this object: what a rollback deletes

    async def find(self, group: str) -> str | None:
        answer = await self.api.call(f"looking up security group {sg_name(self.project, group)}",
                                     "describe_security_groups",
                                     Filters=[{"Name": "group-name", "Values": [sg_name(self.project, group)]},
                                              {"Name": "vpc-id", "Values": [self.vpc_id]}])
        groups = answer.get("SecurityGroups", [])
        return groups[0]["GroupId"] if groups else None

    async def ensure(self, group: str) -> str:
        """The id of the group's managed security group, created (empty) if missing."""
        existing = await self.find(group)
        if existing:
            return existing
        name = sg_name(self.project, group)
        tags = [{"Key": "Project", "Value": self.project}, {"Key": "Group", "Value": group},
                {"Key": "ManagedBy", "Value": MANAGED_BY}]
        answer = await self.api.call(f"creating security group {name}", "create_security_group",
                                     GroupName=name, VpcId=self.vpc_id,
                                     Description=f"opsconsole: hosts of group {group} of project {self.project}",
                                     TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])
        self.created.append(answer["GroupId"])
        return answer["GroupId"]

    async def converge(self, group: str, rules: list[IngressRule]) -> tuple[int, int]:
        """Make the group's ingress exactly `rules`; returns (added, revoked)."""
        sg_id = await self.ensure(group)
        wanted: dict[Perm, str] = {}
        for rule in rules:
            source = f"sg:{await self.ensure(rule.source)}" if rule.from_group else f"cidr:{rule.source}"
            wanted[("tcp", rule.port, rule.port, source)] = rule.why
        answer = await self.api.call(f"reading the rules of {sg_name(self.project, group)}",
                                     "describe_security_groups", GroupIds=[sg_id])
        have = _flatten(answer["SecurityGroups"][0].get("IpPermissions", []))
        extra = sorted(have - set(wanted))
        missing = sorted(set(wanted) - have)
        if extra:
            await self.api.call(f"revoking unwanted rules of {sg_name(self.project, group)}",
                                "revoke_security_group_ingress", GroupId=sg_id,
                                IpPermissions=[_permission(p) for p in extra])
        if missing:
            try:
                await self.api.call(f"opening ports on {sg_name(self.project, group)}",
                                    "authorize_security_group_ingress", GroupId=sg_id,
                                    IpPermissions=[_permission(p, wanted[p]) for p in missing])
            except Ec2Error as exc:
                if exc.code != "InvalidPermission.Duplicate":  # a concurrent console got there first
                    raise
        return len(missing), len(extra)

    async def resolve_extra(self, names_or_ids: tuple[str, ...]) -> list[str]:
        """Ids of the extra groups from `security_groups:`; an unknown one is an error before anything is made."""
        ids = [s for s in names_or_ids if s.startswith("sg-")]
        names = [s for s in names_or_ids if not s.startswith("sg-")]
        if ids:
            await self.api.call("checking `security_groups`", "describe_security_groups", GroupIds=ids)
        for name in names:
            answer = await self.api.call("checking `security_groups`", "describe_security_groups",
                                         Filters=[{"Name": "group-name", "Values": [name]},
                                                  {"Name": "vpc-id", "Values": [self.vpc_id]}])
            found = answer.get("SecurityGroups", [])
            if not found:
                raise Ec2Error(f"{self.api.where}: security group {name!r} does not exist in {self.vpc_id}; "
                               f"check `security_groups` under {self.api.where}", "InvalidGroup.NotFound")
            ids.append(found[0]["GroupId"])
        return ids

    async def delete(self, sg_id: str, timeout: float) -> bool:
        """Delete a group, waiting while instances that are shutting down still hold it.

        Returns False when it stays in use (another group's rule refers to it, say).
        """
        deadline = time.monotonic() + timeout
        pause = 0.5
        while True:
            try:
                await self.api.call(f"deleting security group {sg_id}", "delete_security_group", GroupId=sg_id)
                return True
            except Ec2Error as exc:
                if exc.code == "InvalidGroup.NotFound":
                    return True
                if exc.code != "DependencyViolation" or time.monotonic() >= deadline:
                    if exc.code == "DependencyViolation":
                        return False
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 1.6, 5.0)

