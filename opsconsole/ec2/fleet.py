"""Provision, scale, describe and decommission the EC2 instances of one host group.

Our instances are the ones tagged Project=<project> and Group=<group>; nothing
else is ever terminated. Every create is all-or-nothing: when any step after
the first create fails (or the operator cancels), what this call made —
instances and security groups — is removed again before the error is raised,
so a rerun starts from a clean slate and a half-made fleet never lingers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsconsole.ec2.api import Ec2Api
from opsconsole.ec2.config import Ec2GroupConfig
from opsconsole.ec2.errors import Ec2Error
from opsconsole.ec2.records import GONE, Ec2Instance, write_instances
from opsconsole.ec2.security import SecurityGroups, desired_rules, sg_name
from opsconsole.events import EventBus, Message

IDS_PER_CALL = 100  # instance ids named in one DescribeInstances (AWS pages no id list; keep requests small)
_RETRY_IN_WAIT = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InvalidInstanceID.NotFound"}


@dataclass(frozen=True)
class ScalePlan:
    """What `scale(target)` would do: create `add` instances, or terminate `remove` (newest first)."""

    target: int
    current: int
    add: int
    remove: tuple[Ec2Instance, ...]


class Ec2Fleet:
    def __init__(self, project: str, group: str, cfg: Ec2GroupConfig, count: int, state_dir: Path,
                 bus: EventBus) -> None:
        self.project = project
        self.group = group
        self.cfg = cfg
        self.count = count
        self.state_dir = state_dir
        self.bus = bus
        self.where = f"groups.{group}.ec2"
        self.api = Ec2Api(cfg, self.where)

    # -- reading -----------------------------------------------------------
    async def describe(self) -> list[Ec2Instance]:
        """Every instance AWS reports for this group (stopped and terminated too), recorded in the inventory."""
        instances = await self._find()
        self._record(instances)
        return instances

    async def _find(self, ids: list[str] | None = None) -> list[Ec2Instance]:
        """Our instances by tag, every page read; `ids` narrows them (here: AWS pages no id list)."""
        filters = [{"Name": "tag:Project", "Values": [self.project]}, {"Name": "tag:Group", "Values": [self.group]}]
        reservations = await self.api.pages("listing instances", "describe_instances", "Reservations",
                                            Filters=filters)
        found = [Ec2Instance.from_api(self.group, i) for r in reservations for i in r.get("Instances", [])]
        if ids is not None:
            wanted = set(ids)
            found = [i for i in found if i.instance_id in wanted]
        return sorted(found, key=lambda i: (i.index, i.instance_id))

    async def _alive(self) -> list[Ec2Instance]:
        return [i for i in await self._find() if i.alive]

    # -- provision ---------------------------------------------------------
    async def provision(self) -> list[Ec2Instance]:
        """Make `count` instances run: create only the missing ones, converge the security groups.

        Returns the group's live instances once all of them run.
        """
        alive = await self._alive()
        for stopped in (i for i in alive if i.state in ("stopped", "stopping")):
            self._say(f"{stopped.instance_id} ({stopped.name}) is {stopped.state}: it counts towards count "
                      f"{self.count}; start it or decommission it", "warning", stopped.name)
        missing = self.count - len(alive)
        if missing > 0:
            self._say(f"{len(alive)} of {self.count} instances exist; creating {missing}…")
            await self._create(missing, alive)
        else:
            surplus = f"; `scale {self.group} {self.count}` removes the surplus" if missing < 0 else ""
            self._say(f"{len(alive)} instances exist (count {self.count}); nothing to create{surplus}")
            await self._converge_security(await self._vpc_id())
        pending = [i.instance_id for i in alive if i.state == "pending"]
        if pending:
            await self._wait_states(pending, {"running"}, "waiting for pending instances to run")
        return await self._settle()

    async def _create(self, n: int, alive: list[Ec2Instance]) -> list[Ec2Instance]:
        await self._precheck()
        vpc_id = await self._vpc_id()
        groups = SecurityGroups(self.api, self.project, vpc_id)
        created: list[str] = []
        runs: list[asyncio.Future[None]] = []
        try:
            extra = await groups.resolve_extra(self.cfg.security_groups)
            await groups.converge(self.group, desired_rules(self.cfg))
            own = await groups.ensure(self.group)
            taken = {i.index for i in alive}
            indexes = [i for i in range(1, len(alive) + n + 1) if i not in taken][:n]
            batches = launch_batches(indexes, self.cfg.launch_batch)
            self._say(f"creating {n} instance{'s' if n != 1 else ''} ({self.cfg.instance_type}, {self.cfg.ami}) "
                      f"in {len(batches)} batch{'es' if len(batches) != 1 else ''} of up to {self.cfg.launch_batch}…")
            # One RunInstances call a batch, one batch after another: AWS counts calls against its request
            # limit, so 200 instances in 4 calls stay far below it. A cancel lets the call in flight finish
            # (shield) so the instances it makes are known and removed by the rollback.
            for number, batch in enumerate(batches, 1):
                run = asyncio.ensure_future(self._run_batch(batch, [own, *extra], created))
                runs.append(run)
                await asyncio.shield(run)
                self._say(f"launched {len(created)}/{n} (batch {number}/{len(batches)})")
            await self._wait_states(created, {"running"}, f"waiting for {n} new instance(s) to run")
        except BaseException as exc:
            await asyncio.shield(self._undo(runs, created, groups.created, exc))
            raise
        return [i for i in await self._find(created)]

    async def _run_batch(self, indexes: list[int], sg_ids: list[str], created: list[str]) -> None:
        """Launch instances `indexes` (consecutive) in one call, each findable by its tags from birth.

        Tags of a call are the same for all its instances, so a batch carries `IndexBase` (its first
        index) and each instance's index is that plus its AmiLaunchIndex (0, 1, … within the launch).
        A batch of one carries its own `Index`, as every instance did before batches.
        """
        first, last = indexes[0], indexes[-1]
        tags = {**self.cfg.tags, "Project": self.project, "Group": self.group}
        if len(indexes) == 1:
            tags.update(Name=f"{self.project}-{self.group}-{first}", Index=str(first))
        else:
            tags.update(Name=f"{self.project}-{self.group}-{first}..{last}", IndexBase=str(first))
        params: dict[str, Any] = {
            "ImageId": self.cfg.ami, "InstanceType": self.cfg.instance_type,
            "MinCount": len(indexes), "MaxCount": len(indexes),  # all of the batch or none of it
            "SecurityGroupIds": sg_ids,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
            # botocore retries a timed-out call with the same token, and EC2 then answers with the first
            # launch instead of starting a second one.
            "ClientToken": f"opsconsole-{uuid.uuid4().hex}",
        }
        if self.cfg.key_name:
            params["KeyName"] = self.cfg.key_name
        if self.cfg.subnet_id:
            params["SubnetId"] = self.cfg.subnet_id
        what = f"{self.group}-{first}" if first == last else f"{self.group}-{first}..{last}"
        answer = await self.api.call(f"creating instance{'s' if first != last else ''} {what}", "run_instances",
                                     **params)
        created.extend(i["InstanceId"] for i in answer.get("Instances", []))

    async def _precheck(self) -> None:
        """Refuse a bad AMI, key pair or subnet before anything is created (AWS would, half-way through)."""
        images = await self.api.call(f"checking AMI {self.cfg.ami}", "describe_images", ImageIds=[self.cfg.ami])
        usable = [i for i in images.get("Images", []) if i.get("State", "available") == "available"]
        if not usable:
            raise Ec2Error(f"{self.where}: AMI {self.cfg.ami} does not exist (or is not available) in "
                           f"{self.cfg.region}; check `ami` and `region` under {self.where}", "InvalidAMIID.NotFound")
        if self.cfg.key_name:
            await self.api.call(f"checking key pair {self.cfg.key_name}", "describe_key_pairs",
                                KeyNames=[self.cfg.key_name])

    async def _vpc_id(self) -> str:
        if self.cfg.subnet_id:
            answer = await self.api.call(f"checking subnet {self.cfg.subnet_id}", "describe_subnets",
                                         SubnetIds=[self.cfg.subnet_id])
            return str(answer["Subnets"][0]["VpcId"])
        answer = await self.api.call("finding the default VPC", "describe_vpcs",
                                     Filters=[{"Name": "isDefault", "Values": ["true"]}])
        if not answer.get("Vpcs"):
            raise Ec2Error(f"{self.where}: {self.cfg.region} has no default VPC; set `subnet_id` under {self.where}",
                           "NoDefaultVpc")
        return str(answer["Vpcs"][0]["VpcId"])

    async def _converge_security(self, vpc_id: str) -> None:
        groups = SecurityGroups(self.api, self.project, vpc_id)
        try:
            added, revoked = await groups.converge(self.group, desired_rules(self.cfg))
        except BaseException as exc:
            await asyncio.shield(self._rollback([], groups.created, exc))
            raise
        if added or revoked:
            self._say(f"security group {sg_name(self.project, self.group)}: {added} rule(s) added, {revoked} revoked")

    async def _undo(self, runs: list[asyncio.Future[None]], created: list[str], sg_ids: list[str],
                    cause: BaseException) -> None:
        # A create already sent to AWS finishes in its thread even when we are cancelled: wait for it,
        # so the instance it makes is known and removed too.
        await asyncio.gather(*runs, return_exceptions=True)
        await self._rollback(created, sg_ids, cause)

    async def _rollback(self, instance_ids: list[str], sg_ids: list[str], cause: BaseException) -> None:
        """Remove what a failed create made; say what could not be removed. Never raises."""
        why = "cancelled" if isinstance(cause, asyncio.CancelledError) else "failed"
        if not instance_ids and not sg_ids:
            return
        self._say(f"create {why}: removing the {len(instance_ids)} instance(s) and {len(sg_ids)} security "
                  f"group(s) it made", "warning")
        left: list[str] = []
        try:
            if instance_ids:
                await self.api.call("terminating instances of a failed create", "terminate_instances",
                                    InstanceIds=instance_ids)
                await self._wait_states(instance_ids, {"terminated"}, "waiting for them to terminate")
        except Ec2Error as exc:
            left += instance_ids
            self._say(f"rollback: {exc}", "error")
        groups = SecurityGroups(self.api, self.project, "")
        for sg_id in reversed(sg_ids):  # referenced groups were made first: delete them last
            try:
                if not await groups.delete(sg_id, self.cfg.wait_timeout):
                    left.append(sg_id)
            except Ec2Error as exc:
                left.append(sg_id)
                self._say(f"rollback: {exc}", "error")
        if left:
            self._say(f"rollback left behind {', '.join(left)}: delete them in the AWS console", "error")

    # -- scale -------------------------------------------------------------
    async def plan_scale(self, target: int) -> ScalePlan:
        """Which instances `scale(target)` would add or remove — to drain and confirm before calling it."""
        if target < 0:
            raise Ec2Error(f"{self.where}: cannot scale to {target} instances", "BadTarget")
        alive = await self._alive()
        newest_first = sorted(alive, key=lambda i: (i.launch_time is not None, i.launch_time, i.index), reverse=True)
        surplus = max(0, len(alive) - target)
        return ScalePlan(target=target, current=len(alive), add=max(0, target - len(alive)),
                         remove=tuple(newest_first[:surplus]))

    async def scale(self, target: int, plan: ScalePlan | None = None) -> tuple[list[Ec2Instance], list[Ec2Instance]]:
        """Add or remove instances to reach `target`; returns (added, removed).

        Given the `plan` the operator confirmed, exactly its instances are removed (those still ours and
        alive), never others that appeared since.
        """
        plan = plan or await self.plan_scale(target)
        added: list[Ec2Instance] = []
        removed: list[Ec2Instance] = []
        if plan.add:
            self._say(f"scaling {plan.current} → {plan.target}: creating {plan.add}…")
            added = await self._create(plan.add, await self._alive())
        if plan.remove:
            self._say(f"scaling {plan.current} → {plan.target}: terminating "
                      f"{', '.join(f'{i.instance_id} ({i.name})' for i in plan.remove)}…")
            removed = await self._terminate(list(plan.remove))
        self.count = target
        await self._settle()
        return added, removed

    # -- decommission ------------------------------------------------------
    async def decommission_plan(self) -> list[Ec2Instance]:
        """The instances `decommission()` would terminate: every live one of this group."""
        return await self._alive()

    async def decommission(self, plan: list[Ec2Instance] | None = None) -> list[Ec2Instance]:
        """Terminate the group's instances (those of `plan` when given), then its own security group if unused."""
        targets = plan if plan is not None else await self.decommission_plan()
        if targets:
            self._say(f"terminating {len(targets)} instance(s): {', '.join(i.instance_id for i in targets)}…")
        removed = await self._terminate(targets)
        if not await self._alive():
            await self._delete_own_security_group()
        await self._settle()
        return removed

    async def _terminate(self, targets: list[Ec2Instance]) -> list[Ec2Instance]:
        # Re-read by tag right before terminating: an id from a stale plan that is no longer ours is skipped.
        ours = {i.instance_id: i for i in await self._alive()}
        ids = [i.instance_id for i in targets if i.instance_id in ours]
        if not ids:
            return []
        await self.api.call(f"terminating {len(ids)} instance(s)", "terminate_instances", InstanceIds=ids)
        await self._wait_states(ids, {"terminated"}, f"waiting for {len(ids)} instance(s) to terminate")
        for instance_id in ids:
            self._say(f"{instance_id} terminated", host=ours[instance_id].name)
        return [ours[i] for i in ids]

    async def _delete_own_security_group(self) -> None:
        answer = await self.api.call("looking up the group's security group", "describe_security_groups",
                                     Filters=[{"Name": "tag:Project", "Values": [self.project]},
                                              {"Name": "tag:Group", "Values": [self.group]},
                                              {"Name": "tag:ManagedBy", "Values": ["opsconsole"]}])
        groups = SecurityGroups(self.api, self.project, "")
        for sg in answer.get("SecurityGroups", []):
            if await groups.delete(sg["GroupId"], min(self.cfg.wait_timeout, 60.0)):
                self._say(f"security group {sg['GroupName']} deleted")
            else:
                self._say(f"security group {sg['GroupName']} kept: another group's rules still refer to it",
                          "warning")

    # -- waiting and recording ----------------------------------------------
    async def _wait_states(self, ids: list[str], want: set[str], doing: str) -> None:
        """Poll until every instance is in one of `want`, with our own backoff on top of botocore's retries."""
        if not ids:
            return
        deadline = time.monotonic() + self.cfg.wait_timeout
        pause = 0.2
        reached = 0
        while True:
            try:
                states: dict[str, tuple[str, str]] = {}
                for start in range(0, len(ids), IDS_PER_CALL):
                    answer = await self.api.call(doing, "describe_instances", InstanceIds=ids[start:start + IDS_PER_CALL])
                    states.update({i["InstanceId"]: (i["State"]["Name"], i.get("StateReason", {}).get("Message", ""))
                                   for r in answer.get("Reservations", []) for i in r.get("Instances", [])})
                done = sum(1 for state, _ in states.values() if state in want)
                if len(ids) > 1 and done != reached:  # progress, once per change: 200 hosts take a while
                    reached = done
                    self._say(f"{doing}: {done}/{len(ids)} {'/'.join(sorted(want))}")
                if "running" in want:
                    dead = [f"{k} is {s}" + (f" ({why})" if why else "") for k, (s, why) in states.items() if s in GONE]
                    if dead:
                        raise Ec2Error(f"{self.where}: {doing} failed: {'; '.join(dead)}", "InstanceDied")
                if len(states) == len(ids) and all(s in want for s, _ in states.values()):
                    return
            except Ec2Error as exc:
                if exc.code not in _RETRY_IN_WAIT:
                    raise
            if time.monotonic() >= deadline:
                raise Ec2Error(f"{self.where}: {doing} timed out after {self.cfg.wait_timeout:g}s; raise "
                               f"`wait_timeout` under {self.where} or look at the instances in the AWS console",
                               "WaitTimeout")
            await asyncio.sleep(pause)
            pause = min(pause * 1.6, 5.0)

    async def _settle(self) -> list[Ec2Instance]:
        """Record what AWS reports now and announce the live instances; returns them."""
        instances = await self.describe()
        alive = [i for i in instances if i.alive]
        for i in alive:
            where = f" at {i.private_ip}" if i.private_ip else ""
            self._say(f"{i.instance_id} {i.state}{where}" + (f" (public {i.public_ip})" if i.public_ip else ""),
                      host=i.name)
        return alive

    def _record(self, instances: list[Ec2Instance]) -> None:
        # Per host name keep the live instance, else the newest gone one: a terminated instance stays
        # visible (the fleet pane shows it so) until its index is reused.
        best: dict[int, Ec2Instance] = {}
        for i in instances:
            held = best.get(i.index)
            if held is None or (i.alive, _stamp(i)) > (held.alive, _stamp(held)):
                best[i.index] = i
        write_instances(self.state_dir, self.group, self.project, self.cfg.region, list(best.values()))

    def _say(self, text: str, level: str = "info", host: str | None = None) -> None:
        self.bus.emit(Message(text=f"{self.group}: {text}", level=level, host=host))


def launch_batches(indexes: list[int], size: int) -> list[list[int]]:
    """`indexes` (ascending) cut into runs of consecutive numbers of at most `size`: one RunInstances each."""
    batches: list[list[int]] = []
    for index in indexes:
        if batches and index == batches[-1][-1] + 1 and len(batches[-1]) < size:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _stamp(instance: Ec2Instance) -> float:
    return instance.launch_time.timestamp() if instance.launch_time else 0.0
