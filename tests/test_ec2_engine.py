"""EC2 through the engine's commands: `provision`, `scale`, `decommission` — moto plays AWS, the lab plays the machines."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from tests.lab import Lab
from tests.test_ec2_lab import REGION, lab_vpc

if TYPE_CHECKING:
    from tests.motoserver import MotoServer

pytest_plugins = ["tests.lab.fixtures", "tests.motoserver"]

ROOT = Path(__file__).resolve().parent.parent


async def test_provision_scale_decommission_commands(lab: Lab, aws: "MotoServer", tmp_path: Path) -> None:
    ec2 = boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=aws.url)
    subnet = lab_vpc(ec2, lab)
    ami = ec2.register_image(Name="lab", RootDeviceName="/dev/sda1")["ImageId"]
    for host in lab.apps:  # fresh machines: nothing another lab test left
        lab.exec(host.name, "sh", "-c", "rm -rf /srv/opsconsole/releases /srv/opsconsole/run /srv/opsconsole/log")
    cfg = tmp_path / "ec2.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: lab
        state_dir: {tmp_path / 'state'}
        groups:
          itrust:
            provider: ec2
            role: app
            count: {len(lab.apps)}
            provision: {ROOT / 'playbooks' / 'app-server.yml'}
            ec2:
              region: {REGION}
              ami: {ami}
              endpoint_url: {aws.url}
              subnet_id: {subnet}
              ssh_user: {lab.user}
              app_port: 8080
              proxy_group: edge
              ssh_from: [{lab.jump.lan_address}]
          edge:
            provider: static
            role: proxy
            hosts: [{{name: edge-1, address: {lab.proxy.address}}}]
        jump: {{host: {lab.jump.address}, user: {lab.user}, key: {lab.client_key}}}
        ssh: {{known_hosts: {lab.known_hosts}, identity_files: [{lab.client_key}], agent: false}}
        """))
    engine = Engine(load_config(cfg))
    engine.prepare()
    try:
        outcome = await engine.execute(engine.parse("provision itrust"))
        assert outcome.ok, outcome.message
        assert f"{len(lab.apps)} instance(s) of itrust running" in outcome.message
        assert sorted(h.address for h in engine.inventory.group("itrust")) == sorted(h.address for h in lab.apps)
        for host in lab.apps:  # the provisioning playbook ran on the machine behind each address
            assert (Path(host.files) / "releases").is_dir()
        again = await engine.execute(engine.parse("provision itrust"))
        instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        assert again.ok and len(instances) == len(lab.apps)  # nothing new was created

        refused = await engine.execute(engine.parse("scale itrust 2"))
        # the newest goes; instances launched in the same second are equally new, so read which one
        match = re.search(r"would terminate 1: (itrust-\d) \(i-", refused.message)
        assert not refused.ok and match and "--yes" in refused.message, refused.message
        doomed = match.group(1)
        assert len(engine.inventory.group("itrust")) == 3
        scaled = await engine.execute(engine.parse("scale itrust 2 --yes"))
        assert scaled.ok, scaled.message
        assert sorted(h.name for h in engine.inventory.group("itrust")) == sorted(
            {"itrust-1", "itrust-2", "itrust-3"} - {doomed})
        assert doomed not in engine.monitor.targets and doomed not in engine.names.hosts

        # The scaled count is remembered: `status` shows it, and a later `provision` — here by another
        # console over the same state dir — keeps 2 instead of going back to the config's 3.
        lines: list[str] = []
        engine.bus.subscribe(lambda e: lines.append(getattr(e, "text", "")))
        status = await engine.execute(engine.parse("status"))
        assert status.ok and any("itrust: scaled to 2 (config count 3)" in line for line in lines), lines
        other = Engine(load_config(cfg))
        other.prepare()
        try:
            kept = await other.execute(other.parse("provision itrust"))
            assert kept.ok and "2 instance(s) of itrust running" in kept.message, kept.message
            alive = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                     if i["State"]["Name"] == "running"]
            assert len(alive) == 2
        finally:
            await other.close()

        asked = await engine.execute(engine.parse("decommission itrust"))
        assert not asked.ok and "would terminate 2 instance(s): itrust-1 (i-" in asked.message
        done = await engine.execute(engine.parse("decommission itrust --yes"))
        assert done.ok, done.message
        assert engine.inventory.group("itrust") == []
        states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
        assert states == {"terminated"}
    finally:
        await engine.close()
