"""Ec2Fleet against a real moto_server process (the EC2 HTTP API on loopback)."""

from __future__ import annotations

import asyncio
import functools
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from opsconsole.config.model import GroupConfig
from opsconsole.config.reader import MappingReader
from opsconsole.ec2.api import RETRIES
from opsconsole.ec2.config import Ec2GroupConfig, parse_ec2_section
from opsconsole.ec2.errors import Ec2Error, translate
from opsconsole.ec2.fleet import Ec2Fleet
from opsconsole.ec2.inventory import ec2_hosts
from opsconsole.ec2.records import read_instances
from opsconsole.events import EventBus, Message
from opsconsole.yamlsource import parse_yaml

if TYPE_CHECKING:  # imported as a plugin below; importing it here first would skip its assert rewriting
    from tests.motoserver import MotoServer

pytest_plugins = ["tests.motoserver"]  # the moto_server (one per session) and aws fixtures

REGION = "us-east-1"
GROUPS = ("itrust", "db", "edge", "jump", "other")


def client(server: MotoServer, **credentials: str) -> Any:
    """A test-side client, made once per server and credentials (building one costs ~0.2s)."""
    return _client(server.url, tuple(sorted(credentials.items())))


@functools.cache
def _client(url: str, credentials: tuple[tuple[str, str], ...]) -> Any:
    return boto3.session.Session(**dict(credentials)).client("ec2", region_name=REGION, endpoint_url=url)


def an_ami(server: MotoServer) -> str:
    """The test image, registered on first use (the server loads no default AMIs)."""
    ec2 = client(server)
    mine = ec2.describe_images(Owners=["self"])["Images"]
    if mine:
        return mine[0]["ImageId"]
    return ec2.register_image(Name="opsconsole-test", RootDeviceName="/dev/sda1", Architecture="x86_64",
                              VirtualizationType="hvm")["ImageId"]


def ec2_config(server: MotoServer, extra: str = "", group: str = "itrust", role: str = "") -> Ec2GroupConfig:
    text = f"region: {REGION}\nami: {an_ami(server)}\nendpoint_url: {server.url}\nwait_timeout: 20s\n"
    data = parse_yaml(text + textwrap.dedent(extra), "cfg.yaml")
    return parse_ec2_section(MappingReader(data, "cfg.yaml", f"groups.{group}.ec2", 1), group, group_role=role,
                             known_groups=GROUPS)


class Recorder:
    def __init__(self) -> None:
        self.bus = EventBus()
        self.lines: list[str] = []
        self.bus.subscribe(lambda e: self.lines.append(e.text) if isinstance(e, Message) else None)


def fleet(server: MotoServer, tmp: Path, group: str, count: int, extra: str = "", *, role: str = "",
          project: str = "shop", rec: Recorder | None = None) -> Ec2Fleet:
    cfg = ec2_config(server, extra, group, role)
    return Ec2Fleet(project, group, cfg, count, tmp / "state", (rec or Recorder()).bus)


def tagged(server: MotoServer, project: str, group: str, states: tuple[str, ...] = ("pending", "running")) -> list[dict]:
    pages = client(server).describe_instances(Filters=[
        {"Name": "tag:Project", "Values": [project]}, {"Name": "tag:Group", "Values": [group]},
        {"Name": "instance-state-name", "Values": list(states)}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def sg(server: MotoServer, name: str) -> dict:
    found = client(server).describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    assert len(found) == 1, f"expected one security group {name}, got {found}"
    return found[0]


def ingress(group: dict) -> set[tuple[int, str]]:
    """(port, source) of every rule: source is a CIDR or a security group id."""
    out = set()
    for p in group["IpPermissions"]:
        out |= {(p["FromPort"], r["CidrIp"]) for r in p.get("IpRanges", [])}
        out |= {(p["FromPort"], g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
    return out


def our_groups(server: MotoServer) -> list[str]:
    groups = client(server).describe_security_groups()["SecurityGroups"]
    return sorted(g["GroupName"] for g in groups if g["GroupName"] != "default")


def all_instances(server: MotoServer) -> list[dict]:
    return [i for r in client(server).describe_instances()["Reservations"] for i in r["Instances"]]


APP = "app_port: 8080\nproxy_group: edge\nssh_from: [jump]\n"
DB = "db_port: 3306\napp_group: itrust\nssh_from: [10.0.0.5]\n"
PROXY = "listen_port: 80\nssh_from: [jump]\n"


async def test_provision_creates_exactly_count_tagged_instances_and_the_seed_rules(aws: MotoServer, tmp_path: Path) -> None:
    rec = Recorder()
    app = fleet(aws, tmp_path, "itrust", 2, APP, role="app", rec=rec)
    instances = await app.provision()
    db = await fleet(aws, tmp_path, "db", 1, DB, role="db").provision()
    await fleet(aws, tmp_path, "edge", 1, PROXY, role="proxy").provision()

    live = tagged(aws, "shop", "itrust")
    assert len(live) == 2 and {i["InstanceId"] for i in live} == {i.instance_id for i in instances}
    assert sorted(i.name for i in instances) == ["itrust-1", "itrust-2"]
    assert all(i.state == "running" and i.private_ip for i in instances)
    tags = {t["Key"]: t["Value"] for t in live[0]["Tags"]}
    assert tags["Project"] == "shop" and tags["Group"] == "itrust" and tags["Name"].startswith("shop-itrust-")
    app_sg, db_sg, edge_sg, jump_sg = (sg(aws, f"shop-{g}") for g in ("itrust", "db", "edge", "jump"))
    assert all(app_sg["GroupId"] in {g["GroupId"] for g in i["SecurityGroups"]} for i in live)
    # the database accepts its port only from the app group's instances; SSH only from the jump address
    assert ingress(db_sg) == {(3306, app_sg["GroupId"]), (22, "10.0.0.5/32")}
    assert ingress(edge_sg) == {(80, "0.0.0.0/0"), (22, jump_sg["GroupId"])}
    assert ingress(app_sg) == {(8080, edge_sg["GroupId"]), (22, jump_sg["GroupId"])}
    assert ingress(jump_sg) == set()  # made only to be referred to; its own group fills it

    assert "itrust: 0 of 2 instances exist; creating 2…" in rec.lines
    assert any(line.startswith("itrust: creating 2 instances") for line in rec.lines)
    assert any(line.startswith(f"itrust: {instances[0].instance_id} running at {instances[0].private_ip}")
               for line in rec.lines)
    # recorded in the state dir, and read back as ssh hosts by the inventory
    assert [i.instance_id for i in read_instances(tmp_path / "state", "itrust")] == [i.instance_id for i in instances]
    group = GroupConfig(name="itrust", provider="ec2", role="app", count=2, vars={"host_root": "/srv/x"})
    hosts = ec2_hosts(group, tmp_path / "state", ssh_user="ubuntu", port=8080)
    assert [(h.name, h.address, h.transport, h.root, h.port, h.ssh_user) for h in hosts] == [
        (i.name, i.private_ip, "ssh", "/srv/x", 8080, "ubuntu") for i in instances]
    assert hosts[0].vars["instance_id"] == instances[0].instance_id and hosts[0].vars["instance_state"] == "running"
    assert db[0].name == "db-1"


async def test_provision_again_creates_nothing_and_puts_drifted_rules_back(aws: MotoServer, tmp_path: Path) -> None:
    first = await fleet(aws, tmp_path, "db", 2, DB, role="db").provision()
    db_sg = sg(aws, "shop-db")
    # someone opens SSH to the world by hand
    client(aws).authorize_security_group_ingress(GroupId=db_sg["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    rec = Recorder()
    again = await fleet(aws, tmp_path, "db", 2, DB, role="db", rec=rec).provision()
    assert [i.instance_id for i in again] == [i.instance_id for i in first]
    assert len(tagged(aws, "shop", "db")) == 2 and len(all_instances(aws)) == 2
    assert "db: 2 instances exist (count 2); nothing to create" in rec.lines
    assert (22, "0.0.0.0/0") not in ingress(sg(aws, "shop-db"))
    assert len(our_groups(aws)) == 2  # shop-db and shop-itrust, none twice


async def test_scale_up_then_down_removes_the_newest_first(aws: MotoServer, tmp_path: Path) -> None:
    app = fleet(aws, tmp_path, "itrust", 2, APP, role="app")
    original = await app.provision()
    added, removed = await app.scale(4)
    assert (len(added), removed) == (2, [])
    assert sorted(i.name for i in added) == ["itrust-3", "itrust-4"]
    assert len(tagged(aws, "shop", "itrust")) == 4

    plan = await app.plan_scale(1)
    assert (plan.add, len(plan.remove)) == (0, 3)
    assert original[0].instance_id not in {i.instance_id for i in plan.remove}  # the oldest stays
    added, removed = await app.scale(1, plan)
    assert added == [] and {i.instance_id for i in removed} == {i.instance_id for i in plan.remove}
    assert [i["InstanceId"] for i in tagged(aws, "shop", "itrust")] == [original[0].instance_id]
    gone = {i["InstanceId"] for i in tagged(aws, "shop", "itrust", ("terminated",))}
    assert gone == {i.instance_id for i in plan.remove}
    assert [h.name for h in ec2_hosts(GroupConfig("itrust", "ec2"), tmp_path / "state")] == ["itrust-1"]
    # scaling up again reuses the free host names
    added, _ = await app.scale(2)
    assert [i.name for i in added] == ["itrust-2"]


async def test_decommission_terminates_only_this_groups_instances(aws: MotoServer, tmp_path: Path) -> None:
    app = fleet(aws, tmp_path, "itrust", 2, APP, role="app")
    await app.provision()
    db = await fleet(aws, tmp_path, "db", 1, DB, role="db").provision()
    elsewhere = await fleet(aws, tmp_path, "itrust", 1, APP, role="app", project="blog").provision()
    untagged = client(aws).run_instances(ImageId=an_ami(aws), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]

    plan = await app.decommission_plan()
    assert len(plan) == 2
    rec = Recorder()
    app.bus = rec.bus
    removed = await app.decommission(plan)
    assert {i.instance_id for i in removed} == {i.instance_id for i in plan}
    assert tagged(aws, "shop", "itrust") == []
    states = {i["InstanceId"]: i["State"]["Name"] for i in all_instances(aws)}
    assert {k: states[k] for k in (db[0].instance_id, elsewhere[0].instance_id, untagged)} == dict.fromkeys(
        (db[0].instance_id, elsewhere[0].instance_id, untagged), "running")
    assert all(states[i.instance_id] == "terminated" for i in plan)
    assert ec2_hosts(GroupConfig("itrust", "ec2"), tmp_path / "state") == []
    gone = ec2_hosts(GroupConfig("itrust", "ec2"), tmp_path / "state", include_gone=True)
    assert sorted(h.vars["instance_state"] for h in gone) == ["terminated", "terminated"]


async def test_bad_ami_is_one_clear_line_and_nothing_is_made(aws: MotoServer, tmp_path: Path) -> None:
    app = fleet(aws, tmp_path, "itrust", 2, APP, role="app")
    app.cfg = Ec2GroupConfig(**{**app.cfg.__dict__, "ami": "ami-0000000000deadbee"})
    app.api.cfg = app.cfg
    with pytest.raises(Ec2Error) as info:
        await app.provision()
    text = str(info.value)
    assert text == ("groups.itrust.ec2: checking AMI ami-0000000000deadbee failed: the AMI does not exist or is "
                    "not usable in this region (InvalidAMIID.NotFound); check `ami` and `region` under groups.itrust.ec2")
    assert all_instances(aws) == [] and our_groups(aws) == []


async def test_a_create_that_fails_half_way_removes_what_it_made(aws: MotoServer, tmp_path: Path) -> None:
    # The AMI is fine, so the security groups are made; then AWS refuses the instance type.
    rec = Recorder()
    app = fleet(aws, tmp_path, "itrust", 2, APP + "instance_type: t9.imaginary\n", role="app", rec=rec)
    with pytest.raises(Ec2Error) as info:
        await app.provision()
    assert "check `instance_type` under groups.itrust.ec2" in str(info.value) and "\n" not in str(info.value)
    assert any("removing the 0 instance(s) and 3 security group(s)" in line for line in rec.lines)
    assert all_instances(aws) == [] and our_groups(aws) == []


async def test_a_failure_after_instances_exist_terminates_them(aws: MotoServer, tmp_path: Path) -> None:
    # Three instances are asked for one by one (batches of one); moto refuses the third (its key pair
    # vanished between the check and the create, as when someone deletes it meanwhile).
    client(aws).create_key_pair(KeyName="deploy")
    rec = Recorder()
    app = fleet(aws, tmp_path, "itrust", 3, APP + "key_name: deploy\nlaunch_batch: 1\n", role="app", rec=rec)
    calls, done = 0, 0
    real_call = app.api.call

    async def flaky(doing: str, operation: str, **params: Any) -> dict:
        nonlocal calls, done
        if operation != "run_instances":
            return await real_call(doing, operation, **params)
        calls += 1
        if calls == 3:
            while done < 2:  # let the first two finish first
                await asyncio.sleep(0.01)
            client(aws).delete_key_pair(KeyName="deploy")
        answer = await real_call(doing, operation, **params)
        done += 1
        return answer

    app.api.call = flaky  # type: ignore[method-assign]
    with pytest.raises(Ec2Error) as info:
        await app.provision()
    assert "unknown key pair" in str(info.value)
    assert tagged(aws, "shop", "itrust") == []  # the two that were made are terminated again
    assert len(tagged(aws, "shop", "itrust", ("terminated",))) == 2
    assert our_groups(aws) == []


async def test_bad_credentials_are_one_clear_line_and_nothing_is_made(aws: MotoServer, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A real identity that moto knows, so we see that auth checking works and only the bad key is refused.
    iam = boto3.session.Session().client("iam", region_name=REGION, endpoint_url=aws.url)
    iam.create_user(UserName="ops")
    iam.put_user_policy(UserName="ops", PolicyName="ec2", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}'))
    key = iam.create_access_key(UserName="ops")["AccessKey"]
    app = fleet(aws, tmp_path, "itrust", 2, APP, role="app")
    aws.require_auth(True)
    try:
        good = client(aws, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        assert good.describe_instances()["Reservations"] == []
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-never-printed")
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        with pytest.raises(Ec2Error) as info:
            await app.provision()
    finally:
        aws.require_auth(False)
    text = str(info.value)
    assert text.startswith("groups.itrust.ec2: listing instances failed: AWS refused the credentials (")
    assert "standard chain" in text and "\n" not in text
    assert "s3cr3t" not in text and "AKIAWRONG" not in text
    assert all_instances(aws) == [] and our_groups(aws) == []


async def test_no_credentials_at_all(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = fleet(aws, tmp_path, "db", 1, DB, role="db")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(Ec2Error, match=r"^groups.db.ec2: listing instances failed: no usable AWS credentials found"):
        await db.provision()


async def test_throttling_while_waiting_is_retried_with_backoff(aws: MotoServer, tmp_path: Path) -> None:
    # botocore retries each call (standard mode); when AWS still throttles, our waiter backs off and polls again.
    app = fleet(aws, tmp_path, "itrust", 1, APP, role="app")
    assert app.api.client.meta.config.retries == RETRIES
    real_call = app.api.call
    throttled = 0

    async def throttling(doing: str, operation: str, **params: Any) -> dict:
        nonlocal throttled
        if operation == "describe_instances" and "InstanceIds" in params and throttled < 2:
            throttled += 1
            raise translate(ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}},
                                        "DescribeInstances"), doing, app.where)
        return await real_call(doing, operation, **params)

    app.api.call = throttling  # type: ignore[method-assign]
    instances = await app.provision()
    assert throttled == 2 and [i.state for i in instances] == ["running"]
