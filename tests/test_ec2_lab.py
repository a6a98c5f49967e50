"""End to end: moto hands out the lab's addresses, so `provision` goes on over SSH through the jump host.

moto_server plays EC2; the SSH lab (network namespaces with a real sshd each)
plays the instances. The VPC and subnet are made with the lab's own ranges and
the addresses below the lab's app hosts are reserved (an "explicit" subnet CIDR
reservation, which EC2 never auto-assigns from), so the private IPs moto gives
the new instances are exactly the addresses the lab's app hosts answer on.
"""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from opsconsole.config.model import GroupConfig
from opsconsole.config.reader import MappingReader
from opsconsole.ec2.config import parse_ec2_section
from opsconsole.ec2.fleet import Ec2Fleet
from opsconsole.ec2.inventory import ec2_hosts
from opsconsole.events import EventBus, OutputLine, TaskFinished
from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from opsconsole.yamlsource import parse_yaml
from tests.lab import Lab
from tests.lab.inventory import ssh_options
from tests.lab.net import PRIVATE, Subnets

if TYPE_CHECKING:  # imported as a plugin below; importing it here first would skip its assert rewriting
    from tests.motoserver import MotoServer

pytest_plugins = ["tests.lab.fixtures", "tests.motoserver"]

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
REGION = "us-east-1"


def lab_vpc(ec2: Any, lab: Lab) -> str:
    """A VPC on the lab's range whose subnet hands out the lab app hosts' addresses next; returns the subnet id."""
    nets = Subnets.parse(lab.config.cidr)
    private = nets.subnet(PRIVATE)
    vpc = ec2.create_vpc(CidrBlock=str(nets.cidr))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=str(private))["Subnet"]["SubnetId"]
    wanted = sorted(ipaddress.ip_address(h.address) for h in lab.apps)
    assert [int(a) - int(wanted[0]) for a in wanted] == list(range(len(wanted))), "lab app hosts must be consecutive"
    for block in ipaddress.summarize_address_range(private.network_address, wanted[0] - 1):
        ec2.create_subnet_cidr_reservation(SubnetId=subnet, Cidr=str(block), ReservationType="explicit")
    return subnet


async def test_provision_on_moto_then_the_app_server_playbook_over_ssh(lab: Lab, aws: MotoServer,
                                                                       tmp_path: Path) -> None:
    ec2 = boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=aws.url)
    subnet = lab_vpc(ec2, lab)
    ami = ec2.register_image(Name="lab", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.import_key_pair(KeyName="lab", PublicKeyMaterial=Path(f"{lab.client_key}.pub").read_bytes())
    section = textwrap.dedent(f"""\
        region: {REGION}
        ami: {ami}
        endpoint_url: {aws.url}
        subnet_id: {subnet}
        key_name: lab
        ssh_user: {lab.user}
        app_port: 8080
        proxy_group: edge
        ssh_from: [{lab.jump.lan_address}]
        """)
    cfg = parse_ec2_section(MappingReader(parse_yaml(section, "cfg.yaml"), "cfg.yaml", "groups.itrust.ec2", 1),
                            "itrust", group_role="app")
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    state = tmp_path / "state"
    instances = await Ec2Fleet("lab", "itrust", cfg, len(lab.apps), state, bus).provision()

    by_address = {h.address: h for h in lab.apps}
    assert sorted(i.private_ip for i in instances) == sorted(by_address)  # type: ignore[type-var]
    app_sg = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["lab-itrust"]}])["SecurityGroups"][0]
    assert {(p["FromPort"], r["CidrIp"]) for p in app_sg["IpPermissions"] for r in p.get("IpRanges", [])} == {
        (22, f"{lab.jump.lan_address}/32")}

    group = GroupConfig(name="itrust", provider="ec2", role="app", count=len(lab.apps))
    hosts = ec2_hosts(group, state, ssh_user=cfg.ssh_user, port=cfg.app_port)
    assert len(hosts) == len(lab.apps)
    pool = SshPool(ssh_options(lab))
    transports: dict[str, SshTransport] = {}

    def transport_for(host: Host) -> SshTransport:
        return transports.setdefault(host.name, SshTransport(host, pool))

    try:
        for host in hosts:  # a fresh machine: nothing another lab test deployed
            await transport_for(host).run("rm -rf current releases run log")
        result = await PlaybookRunner(bus, transport_for).run(load_playbook(PLAYBOOKS / "app-server.yml"), hosts)
        assert result.ok, result.failures
        assert result.host_status == {h.name: "ok" for h in hosts}
    finally:
        await pool.close()

    for host in hosts:
        files = Path(by_address[host.address].files)  # the lab host this instance's address belongs to
        assert all((files / d).is_dir() for d in ("releases", "run", "log")), host.name
        lines = [e.line for e in events if isinstance(e, OutputLine) and e.host == host.name]
        assert any(line.startswith(f"{host.name} ready under /srv/opsconsole (Python 3") for line in lines), lines
        skipped = [e.task for e in events if isinstance(e, TaskFinished) and e.host == host.name and e.status == "skipped"]
        assert "run the deployed release" in skipped  # nothing deployed yet: nothing started
