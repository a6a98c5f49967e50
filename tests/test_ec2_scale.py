"""EC2 at 200 instances (issue 18): batched launches, every Describe* page read, throttling retried.

A real moto_server, reached through a small proxy that answers RequestLimitExceeded
to the first calls (as AWS does under a burst), so botocore's backoff is what
makes the provision succeed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from opsconsole.config.reader import MappingReader
from opsconsole.ec2.config import parse_ec2_section
from opsconsole.ec2.fleet import Ec2Fleet, launch_batches
from opsconsole.ec2.records import read_instances
from opsconsole.yamlsource import parse_yaml
from test_ec2_fleet import REGION, Recorder, an_ami, tagged

if TYPE_CHECKING:
    from tests.motoserver import MotoServer

pytest_plugins = ["tests.motoserver"]

COUNT = 200
BATCH = 25  # moto pages by reservation (one a batch): 8 of them, 5 a page, is 2 pages
THROTTLED = 3


def big_fleet(server: MotoServer, endpoint: str, tmp: Path, rec: Recorder) -> Ec2Fleet:
    text = textwrap.dedent(f"""\
        region: {REGION}
        ami: {an_ami(server)}
        endpoint_url: {endpoint}
        wait_timeout: 120s
        launch_batch: {BATCH}
        page_size: 5
        calls_per_second: 200
        """)
    cfg = parse_ec2_section(MappingReader(parse_yaml(text, "cfg.yaml"), "cfg.yaml", "groups.web.ec2", 1), "web")
    return Ec2Fleet("shop", "web", cfg, COUNT, tmp / "state", rec.bus)


def test_launch_batches_are_runs_of_consecutive_indexes() -> None:
    assert launch_batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert launch_batches([2, 3, 7, 8, 9, 12], 50) == [[2, 3], [7, 8, 9], [12]]  # gaps left by terminations
    assert launch_batches([], 50) == []


async def test_200_instances_in_batches_paged_and_throttled(aws: MotoServer, tmp_path: Path) -> None:
    from tests.motoserver import ThrottlingProxy  # after the plugin is loaded, so its asserts stay rewritten

    rec = Recorder()
    with ThrottlingProxy(aws.url, throttle_first=THROTTLED) as proxy:
        web = big_fleet(aws, proxy.url, tmp_path, rec)
        instances = await web.provision()

        # Throttled calls were answered RequestLimitExceeded, retried by botocore with backoff, and succeeded.
        assert len(proxy.throttled) == THROTTLED
        assert len(instances) == COUNT and all(i.state == "running" for i in instances)
        assert sorted(i.name for i in instances) == sorted(f"web-{n}" for n in range(1, COUNT + 1))
        assert len({i.instance_id for i in instances}) == COUNT
        # In batches: one RunInstances per 25 instances, not one per instance.
        actions = [action for action, _ in proxy.forwarded]
        assert actions.count("RunInstances") == COUNT // BATCH
        # Every page of the listings was read: some DescribeInstances carried a NextToken.
        assert any(action == "DescribeInstances" and paged for action, paged in proxy.forwarded)
        # Progress, as the console and a script print it.
        assert f"web: launched {COUNT}/{COUNT} (batch {COUNT // BATCH}/{COUNT // BATCH})" in rec.lines
        assert f"web: waiting for {COUNT} new instance(s) to run: {COUNT}/{COUNT} running" in rec.lines
        assert len(read_instances(tmp_path / "state", "web")) == COUNT

        # scale launches in batches too, into the next indexes.
        before = actions.count("RunInstances")
        added, removed = await web.scale(COUNT + 30)
        runs = [action for action, _ in proxy.forwarded].count("RunInstances") - before
    assert runs == 2 and removed == []  # 30 = 25 + 5
    assert sorted(i.name for i in added) == sorted(f"web-{n}" for n in range(COUNT + 1, COUNT + 31))
    assert len(tagged(aws, "shop", "web")) == COUNT + 30


async def test_waiting_for_ssh_on_many_new_hosts_is_bounded_and_shows_progress(tmp_path: Path) -> None:
    # Real transports (local: each attempt runs `true` in a process); only counted, not faked.
    from conftest import write_config
    from opsconsole.config.loader import load_config
    from opsconsole.engine.engine import Engine
    from opsconsole.events import Message

    hosts = 60
    engine = Engine(load_config(write_config(tmp_path, count=hosts, extra="ssh:\n  max_connecting: 4\n")))
    said: list[str] = []
    engine.bus.subscribe(lambda e: said.append(e.text) if isinstance(e, Message) else None)
    in_flight, most, tried = 0, 0, set()
    for host in engine.fleet.inventory.group("itrust"):
        transport = engine.fleet.transport_for(host)
        real_run = transport.run

        async def counted(command: str, *args: object, _real=real_run, _name=host.name, **kwargs: object) -> object:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            tried.add(_name)
            try:
                return await _real(command, *args, **kwargs)
            finally:
                in_flight -= 1

        transport.run = counted  # type: ignore[method-assign]
    await engine.cloud._wait_for_ssh(engine.config.groups["itrust"])
    assert len(tried) == hosts and 2 <= most <= 4, f"{most} attempts in flight at once"
    assert f"itrust: waiting for SSH on {hosts} host(s), 4 at a time" in said
    assert f"itrust: SSH up on {hosts}/{hosts} host(s)" in said
    assert sum("SSH up on" in line for line in said) <= 11  # progress about every tenth, not per host
