'''The `ec2:` mapping of a host group with `provider: ec2`.

Paste-able reference for config.example.yaml:

```yaml
groups:
  itrust:
    provider: ec2
    role: app
    count: 3                      # instances `provision itrust` keeps running
    ec2:
      region: eu-west-1           # required
      ami: ami-0123456789abcdef0  # required; checked to exist before anything is created
      instance_type: t3.small     # default t3.micro
      key_name: deploy            # EC2 key pair put on the instances (optional)
      subnet_id: subnet-0abc      # optional; default: the region's default VPC
      security_groups: [sg-0ops]  # optional: existing groups (ids or names) attached as well
      tags: {Team: web}           # added to every instance; Project/Group/Name/Index/IndexBase are ours
      ssh_user: ubuntu            # the login of the AMI (default: the ssh section's)
      wait_timeout: 5m            # how long to wait for instances to run / terminate
      launch_batch: 50            # instances per RunInstances call (a fleet of 200 is 4 calls)
      page_size: 100              # items per Describe* page (5–1000); every page is read
      calls_per_second: 20        # EC2 API calls this group makes per second at most (AWS throttles bursts)
      # endpoint_url: http://127.0.0.1:5000   # AWS-compatible endpoints and tests only
      # Firewall intent: opsconsole manages one security group per group, named
      # <project>-<group>, and lets in only what is listed here.
      firewall: app               # app | db | proxy | none (default: the group's `role` when it is one of these)
      app_port: 8080              # app: the app's port, open to the proxy group's instances
      proxy_group: edge           # app: the group whose instances may reach app_port
      ssh_from: [bastion]         # who may SSH in: group names (their security group) or CIDRs, e.g. 10.0.0.5/32
  db:
    provider: ec2
    role: db
    count: 1
    ec2:
      region: eu-west-1
      ami: ami-0123456789abcdef0
      db_port: 3306               # db: the database port, open only to app_group's instances
      app_group: itrust
      ssh_from: [bastion]
  edge:
    provider: ec2
    role: proxy
    count: 1
    ec2:
      region: eu-west-1
      ami: ami-0123456789abcdef0
      listen_port: 80             # proxy: open to listen_from
      listen_from: [0.0.0.0/0]    # default: everyone
      ssh_from: [bastion]
```

Credentials are not configurable here on purpose: boto3's standard chain
(profile, environment, instance role) is the only source, so a config file
can be shared and committed without leaking a key.
'''

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from opsconsole.config.reader import MappingReader

FIREWALL_ROLES = ("app", "db", "proxy", "none")
RESERVED_TAGS = ("Project", "Group", "Name", "Index", "IndexBase")  # we find our instances by these
_AMI = re.compile(r"^ami-[0-9a-zA-Z]+$")


@dataclass(frozen=True)
class Ec2GroupConfig:
    region: str
    ami: str
    instance_type: str = "t3.micro"
    key_name: str | None = None
    subnet_id: str | None = None
    security_groups: tuple[str, ...] = ()  # extra, existing groups (ids or names), attached as they are
    tags: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None
    ssh_user: str | None = None
    wait_timeout: float = 300.0
    firewall: str = "none"  # app | db | proxy | none
    app_port: int | None = None
    proxy_group: str | None = None
    db_port: int | None = None
    app_group: str | None = None
    listen_port: int | None = None
    listen_from: tuple[str, ...] = ("0.0.0.0/0",)
    ssh_from: tuple[str, ...] = ()  # group names or CIDRs
    launch_batch: int = 50
    page_size: int = 100
    calls_per_second: int = 20


def is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text or text.count(".") == 3


def parse_ec2_section(reader: MappingReader, group_name: str, *, group_role: str = "",
                      known_groups: Collection[str] = ()) -> Ec2GroupConfig:
    """Read a group's `ec2:` mapping (`reader` is `group_reader.mapping("ec2")`).

    `group_role` is the group's own `role:`, the default firewall intent.
    `known_groups` (all group names of the file), when given, lets us refuse a
    `app_group`/`proxy_group`/`ssh_from` that names no group. Raises
    SourceError naming file, line and key.
    """
    region = reader.str("region", required=True)
    ami = reader.str("ami", required=True)
    if not _AMI.match(ami):
        raise reader.error("ami", f"must be an AMI id like ami-0123456789abcdef0; got {ami!r}")
    tags = reader.plain_mapping("tags")
    for key, value in tags.items():
        if key in RESERVED_TAGS:
            raise reader.mapping("tags").error(key, f"tag {key!r} is set by opsconsole (it finds its instances by "
                                                    f"{', '.join(RESERVED_TAGS)}); use another name")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise reader.mapping("tags").error(key, "tag values must be strings")
    firewall = reader.str("firewall", choices=FIREWALL_ROLES,
                          default=group_role if group_role in FIREWALL_ROLES else "none")
    cfg = Ec2GroupConfig(
        region=region, ami=ami,
        instance_type=reader.str("instance_type", default="t3.micro"),
        key_name=reader.str("key_name"),
        subnet_id=reader.str("subnet_id"),
        security_groups=tuple(reader.str_list("security_groups")),
        tags={str(k): str(v) for k, v in tags.items()},
        endpoint_url=reader.str("endpoint_url"),
        ssh_user=reader.str("ssh_user"),
        wait_timeout=reader.duration("wait_timeout", default=300.0, minimum=1.0),
        firewall=firewall,
        app_port=reader.port("app_port"),
        proxy_group=reader.str("proxy_group"),
        db_port=reader.port("db_port", required=firewall == "db"),
        app_group=reader.str("app_group", required=firewall == "db"),
        listen_port=reader.port("listen_port", required=firewall == "proxy"),
        listen_from=tuple(reader.str_list("listen_from") or ["0.0.0.0/0"]),
        ssh_from=tuple(reader.str_list("ssh_from")),
        launch_batch=reader.int("launch_batch", default=50, minimum=1, maximum=1000),
        page_size=reader.int("page_size", default=100, minimum=5, maximum=1000),
        calls_per_second=reader.int("calls_per_second", default=20, minimum=1, maximum=1000),
    )
    if cfg.endpoint_url is not None and not re.match(r"^https?://", cfg.endpoint_url):
        raise reader.error("endpoint_url", f"must be an http:// or https:// URL; got {cfg.endpoint_url!r}")
    for key in ("listen_from",):
        for item in getattr(cfg, key):
            if not is_cidr(item):
                raise reader.error(key, f"{item!r} is not a CIDR such as 0.0.0.0/0")
    if cfg.app_port is not None and cfg.proxy_group is None and firewall == "app":
        raise reader.error("app_port", "needs `proxy_group`: the group whose instances may reach it")
    _check_unused(reader, firewall)
    references = [("app_group", cfg.app_group), ("proxy_group", cfg.proxy_group)]
    references += [("ssh_from", s) for s in cfg.ssh_from if not is_cidr(s)]
    for key, name in references:
        if name is None:
            continue
        if name == group_name and key != "ssh_from":
            raise reader.error(key, f"names this group itself ({name!r})")
        if known_groups and name not in known_groups:
            raise reader.error(key, f"no host group named {name!r} (groups: {', '.join(known_groups)})")
    reader.done()
    return cfg


def _check_unused(reader: MappingReader, firewall: str) -> None:
    """A port key for another role is a mistake (a db_port on an app group opens nothing)."""
    own = {"app": ("app_port", "proxy_group"), "db": ("db_port", "app_group"),
           "proxy": ("listen_port", "listen_from")}.get(firewall, ())
    for key in ("app_port", "proxy_group", "db_port", "app_group", "listen_port", "listen_from"):
        if reader.has(key) and key not in own:
            raise reader.error(key, f"only applies to `firewall: {_role_of(key)}` (this group's firewall is {firewall!r})")


def _role_of(key: str) -> str:
    return {"app_port": "app", "proxy_group": "app", "db_port": "db", "app_group": "db"}.get(key, "proxy")
