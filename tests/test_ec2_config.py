"""The `ec2:` section, the firewall intent it turns into, and AWS errors as one line (no AWS needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from opsconsole.config.reader import MappingReader
from opsconsole.ec2.config import parse_ec2_section
from opsconsole.ec2.errors import translate
from opsconsole.ec2.security import IngressRule, desired_rules
from opsconsole.yamlsource import SourceError, parse_yaml

GROUPS = ("itrust", "db", "edge", "jump")


def parse(text: str, group: str = "db", role: str = ""):
    data = parse_yaml(textwrap.dedent(text), "cfg.yaml")
    return parse_ec2_section(MappingReader(data, "cfg.yaml", f"groups.{group}.ec2", 1), group,
                             group_role=role, known_groups=GROUPS)


def test_db_section_and_its_rules() -> None:
    cfg = parse("""\
        region: eu-west-1
        ami: ami-0123456789abcdef0
        instance_type: t3.small
        key_name: deploy
        subnet_id: subnet-1
        security_groups: [sg-0ops, monitoring]
        tags: {Team: web, Cost: 42}
        ssh_user: ubuntu
        wait_timeout: 2m
        db_port: 3306
        app_group: itrust
        ssh_from: [jump, 10.0.0.5]
        """, role="db")
    assert cfg.firewall == "db"  # from the group's role
    assert (cfg.region, cfg.instance_type, cfg.key_name, cfg.subnet_id) == ("eu-west-1", "t3.small", "deploy", "subnet-1")
    assert cfg.security_groups == ("sg-0ops", "monitoring") and cfg.tags == {"Team": "web", "Cost": "42"}
    assert cfg.wait_timeout == 120.0 and cfg.ssh_user == "ubuntu"
    assert desired_rules(cfg) == [IngressRule(22, "jump", "ssh from the jump host"),
                                  IngressRule(22, "10.0.0.5/32", "ssh from the jump host"),
                                  IngressRule(3306, "itrust", "database, from the app group itrust")]


def test_proxy_is_open_on_its_listen_port_and_app_only_to_the_proxy() -> None:
    proxy = parse("region: r\nami: ami-1\nfirewall: proxy\nlisten_port: 80\n", group="edge")
    assert [(r.port, r.source) for r in desired_rules(proxy)] == [(80, "0.0.0.0/0")]
    app = parse("region: r\nami: ami-1\napp_port: 8080\nproxy_group: edge\n", group="itrust", role="app")
    assert [(r.port, r.source, r.from_group) for r in desired_rules(app)] == [(8080, "edge", True)]
    bare = parse("region: r\nami: ami-1\n", group="itrust", role="worker")
    assert bare.firewall == "none" and desired_rules(bare) == []  # no ssh_from: nothing is let in


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ("region: r\n", 1, "groups.db.ec2.ami", "required key is missing"),
    ("region: r\nami: ubuntu-22\n", 2, "groups.db.ec2.ami", "must be an AMI id"),
    ("region: r\nami: ami-1\nfirewall: db\n", 1, "groups.db.ec2.db_port", "required key is missing"),
    ("region: r\nami: ami-1\nfirewall: db\ndb_port: 3306\napp_group: nosuch\n", 5, "groups.db.ec2.app_group",
     "no host group named 'nosuch'"),
    ("region: r\nami: ami-1\nlisten_port: 80\n", 3, "groups.db.ec2.listen_port", "only applies to `firewall: proxy`"),
    ("region: r\nami: ami-1\ntags:\n  Project: x\n", 4, "groups.db.ec2.tags.Project", "set by opsconsole"),
    ("region: r\nami: ami-1\naws_secret_access_key: x\n", 3, "groups.db.ec2.aws_secret_access_key", "unknown key"),
    ("region: r\nami: ami-1\nfirewall: proxy\nlisten_port: 80\nlisten_from: [everyone]\n", 5,
     "groups.db.ec2.listen_from", "not a CIDR"),
    ("region: r\nami: ami-1\nendpoint_url: localhost:5000\n", 3, "groups.db.ec2.endpoint_url", "http://"),
])
def test_bad_sections_name_file_line_and_key(text: str, line: int, key: str, words: str) -> None:
    with pytest.raises(SourceError) as info:
        parse(text)
    assert (info.value.line, info.value.path) == (line, key)
    assert words in info.value.message and str(info.value).startswith(f"cfg.yaml:{line}: {key}:")


def client_error(code: str, message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize(("exc", "words"), [
    (client_error("RequestLimitExceeded", "Request limit exceeded."), "throttling the requests even after retrying"),
    (client_error("InstanceLimitExceeded", "You have requested more instances (21) than your current instance "
                                           "limit of 20 allows"), "request a quota increase"),
    (client_error("VcpuLimitExceeded"), "quota"),
    (client_error("InsufficientInstanceCapacity"), "no capacity"),
    (client_error("ExpiredToken"), "have expired"),
    (client_error("UnauthorizedOperation", "You are not authorized\nto perform this operation."), "not allowed"),
    (client_error("InvalidAMIID.NotFound"), "check `ami` and `region` under groups.db.ec2"),
    (client_error("AuthFailure"), "AWS refused the credentials"),
    (NoCredentialsError(), "no usable AWS credentials"),
    (client_error("SomethingNew", "odd"), "SomethingNew: odd"),
])
def test_aws_errors_become_one_line_that_says_what_to_do(exc: Exception, words: str) -> None:
    error = translate(exc, "creating 2 instances", "groups.db.ec2")
    text = str(error)
    assert text.startswith("groups.db.ec2: creating 2 instances failed: ")
    assert words in text and "\n" not in text and "Traceback" not in text


def test_the_inventory_side_does_not_import_boto3() -> None:
    # build_inventory runs at every start-up: it must stay fast and work without AWS libraries loaded.
    code = "import sys, opsconsole.ec2.inventory, opsconsole.ec2.config; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
