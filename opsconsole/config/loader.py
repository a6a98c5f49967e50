"""Load and validate the YAML config; errors name file, line and key path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from opsconsole.config.model import (
    AppConfig,
    BuildConfig,
    CanaryConfig,
    Config,
    GroupConfig,
    HealthConfig,
    HeartbeatConfig,
    JumpConfig,
    RolloutConfig,
    SshConfig,
    StaticHost,
)
from opsconsole.config.reader import MappingReader
from opsconsole.config.secrets import read_secrets
from opsconsole.yamlsource import YamlList, load_yaml

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
THEMES = ("dark", "light", "mono")


def default_state_dir(project: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opsconsole" / project


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read `path` and return a validated Config, or raise SourceError.

    `check_files=False` skips the rule that deploy and provisioning playbooks exist: the proxy reads its
    own section from a copy of the config on a host where the playbooks are not (`opsconsole proxy`)."""
    file = Path(path)
    data = load_yaml(file)
    top = MappingReader(data, file, "", 1)
    base = file.resolve().parent

    project = top.str("project", default="opsconsole")
    _check_name(top, "project", project)
    state_dir_text = top.str("state_dir")
    state_dir = _resolve(base, os.path.expandvars(os.path.expanduser(state_dir_text))) if state_dir_text else default_state_dir(project)
    readonly = top.bool("readonly")
    theme = top.str("theme", default="dark", choices=THEMES)

    hb = top.mapping("heartbeat")
    heartbeat = HeartbeatConfig(
        interval=hb.duration("interval", default=2.5, minimum=0.05),
        timeout=hb.duration("timeout", default=2.0, minimum=0.01),
        fall=hb.int("fall", default=3, minimum=1, maximum=100),
        rise=hb.int("rise", default=2, minimum=1, maximum=100),
        history=hb.int("history", default=100, minimum=1, maximum=100000),
        concurrency=hb.int("concurrency", default=100, minimum=1, maximum=10000),
        alert_command=hb.str("alert_command"),
        alert_webhook=hb.str("alert_webhook"),
        log_file=state_dir / "logs" / "heartbeat.log",
    )
    hb.done()

    known_groups = tuple(top.raw("groups") or {})
    groups = {g.name: g for g in top.each("groups", lambda r, name: _group(r, name, base, known_groups, check_files))}
    if not groups:
        raise top.error("groups" if top.has("groups") else None, "at least one host group is required under `groups:`")
    apps = {a.name: a for a in top.each("apps", lambda r, name: _app(r, name, base, groups, check_files))}

    notices: list[str] = []
    jump = None
    if top.has("jump") and top.raw("jump") is not None:
        j = top.mapping("jump")
        jump = JumpConfig(host=j.str("host", required=True), port=j.port("port", default=22),
                          user=j.str("user"), key=_path_text(base, j.str("key")))
        j.done()
    sr = top.mapping("ssh")
    ssh = SshConfig(
        known_hosts=_path_text(base, sr.str("known_hosts")),
        identity_files=tuple(_path_text(base, k) for k in sr.str_list("identity_files")),
        agent=sr.bool("agent", default=True), ssh_config=sr.bool("ssh_config"),
        max_channels=sr.int("max_channels", default=7, minimum=1, maximum=8),
        connect_timeout=sr.duration("connect_timeout", default=15.0, minimum=0.1),
        max_connecting=sr.int("max_connecting", default=10, minimum=1, maximum=1000),
    )
    sr.done()
    proxy = None
    if top.has("proxy") and top.raw("proxy") is not None:
        from opsconsole.proxy.config import parse_proxy_section

        proxy = parse_proxy_section(top.mapping("proxy"), groups)
        unknown = [a for a in proxy.frontends if a not in apps]
        if unknown:
            raise top.mapping("proxy").mapping("apps").error(unknown[0], f"no app named {unknown[0]!r} (apps: {', '.join(apps)})")

    keymap_reader = top.mapping("keymap")
    keymap = {}
    for binding_id in keymap_reader.data:
        keymap[str(binding_id)] = keymap_reader.str(str(binding_id), required=True)
    canary = _canary(top.mapping("canary"))
    builds = top.mapping("builds")
    max_parallel_builds = builds.int("max_parallel", default=2, minimum=1, maximum=64)
    builds.done()
    secrets = read_secrets(top.mapping("secrets"), base)
    if proxy is not None and proxy.token_secret and proxy.token_secret not in secrets:
        raise top.mapping("proxy").mapping("admin").error(
            "token_secret", f"no secret named {proxy.token_secret!r} under `secrets:` "
                            f"(secrets: {', '.join(secrets) or 'none configured'})")
    top.done()


    return Config(
        file=file, project=project, state_dir=state_dir, readonly=readonly, theme=theme,
        heartbeat=heartbeat, groups=groups, apps=apps, jump=jump, ssh=ssh, proxy=proxy, keymap=keymap,
        canary_step=canary.step, canary=canary, max_parallel_builds=max_parallel_builds, notices=tuple(notices),
        secrets=secrets,
    )


def _path_text(base: Path, text: str | None) -> str | None:
    """A path from the config as text: `~` expanded, relative to the config file."""
    if text is None:
        return None
    return str(_resolve(base, os.path.expanduser(text)))


def _resolve(base: Path, text: str) -> Path:
    p = Path(text)
    return p if p.is_absolute() else (base / p)


def _check_name(reader: MappingReader, key: str, value: str) -> None:
    if value is not None and not _NAME.match(value):
        raise reader.error(key, f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; starting with a letter)")


def _existing_file(reader: MappingReader, key: str, base: Path, required: bool = False,
                   check: bool = True) -> Path | None:
    text = reader.str(key, required=required)
    if text is None:
        return None
    path = _resolve(base, text)
    if check and not path.is_file():
        raise reader.error(key, f"file {text!r} does not exist (looked for {path})")
    return path


def _group(r: MappingReader, name: str, base: Path, known_groups: tuple[str, ...] = (),
           check_files: bool = True) -> GroupConfig:
    if not _NAME.match(name):
        raise MappingReader(None, r.file, r.path).error(None, f"{name!r} is not a valid group name")
    provider = r.str("provider", default="static", choices=("local", "static", "ec2", "kubernetes"))
    role = r.str("role", default="")
    vars_ = r.plain_mapping("vars")
    provision = _existing_file(r, "provision", base, check=check_files)
    health = _health(r.mapping("health")) if r.has("health") else None
    count = 0
    base_port = None
    hosts: list[StaticHost] = []
    if provider == "local":
        count = r.int("count", default=1, minimum=1, maximum=1000)
        base_port = r.port("base_port")
        if base_port is not None and base_port + count - 1 > 65535:
            # Host i listens on base_port + i: the last one must still be a port.
            raise r.error("base_port", f"{base_port} + {count} hosts runs past port 65535 "
                                       f"(the last host would get {base_port + count - 1})")
    elif provider == "static":
        raw_hosts = r.raw("hosts")
        if not isinstance(raw_hosts, list) or not raw_hosts:
            raise r.error("hosts" if r.has("hosts") else None, "a static group needs a non-empty `hosts:` list")
        for i, item in enumerate(raw_hosts):
            line = raw_hosts.line_of(i) if isinstance(raw_hosts, YamlList) else r.line_of("hosts")
            path = f"{r.key_path('hosts')}[{i}]"
            if isinstance(item, str):
                hosts.append(StaticHost(name=item, address=item))
                continue
            h = MappingReader(item, r.file, path, line)
            host_name = h.str("name", required=True)
            hosts.append(StaticHost(
                name=host_name, address=h.str("address", default=host_name), port=h.port("port"),
                ssh_port=h.port("ssh_port", default=22), user=h.str("user"), role=h.str("role", default=role),
                vars=h.plain_mapping("vars"),
            ))
            h.done()
    elif provider == "kubernetes":
        from opsconsole.kube.config import parse_kubernetes_section

        if not r.has("kubernetes"):
            raise r.error(None, "a group with `provider: kubernetes` needs a `kubernetes:` section (namespace, replicas, port, …)")
        k = r.mapping("kubernetes")
        kube = parse_kubernetes_section(k, _path_text(base, k.str("kubeconfig")))
    else:
        from opsconsole.ec2.config import parse_ec2_section

        count = r.int("count", default=1, minimum=0, maximum=1000)
        if not r.has("ec2"):
            raise r.error(None, "a group with `provider: ec2` needs an `ec2:` section (region, ami, …)")
        ec2 = parse_ec2_section(r.mapping("ec2"), name, group_role=role, known_groups=known_groups)
    r.done()
    return GroupConfig(name=name, provider=provider, role=role, count=count, base_port=base_port,
                       hosts=tuple(hosts), vars=vars_, provision=provision, health=health,
                       ec2=ec2 if provider == "ec2" else None,
                       kubernetes=kube if provider == "kubernetes" else None)


def _canary(c: MappingReader) -> CanaryConfig:
    steps = c.raw("steps", [5, 20, 50, 100])
    if not isinstance(steps, list) or not steps or not all(isinstance(x, int) and not isinstance(x, bool)
                                                           and 0 < x <= 100 for x in steps) \
            or list(steps) != sorted(set(steps)):
        raise c.error("steps", "must be a rising list of whole percentages, e.g. [5, 20, 50, 100]")
    config = CanaryConfig(
        step=c.int("step", default=10, minimum=1, maximum=100), steps=tuple(steps),
        confirm_steps=c.bool("confirm_steps", default=False),
        hold=c.duration("hold", default=30.0, minimum=0.0),
        min_requests=c.int("min_requests", default=50, minimum=1),
        max_wait=c.duration("max_wait", default=300.0, minimum=0.0),
        max_error_rate=c.float("max_error_rate", default=0.01, minimum=0.0, maximum=1.0),
        max_p95_ratio=c.float("max_p95_ratio", default=1.5, minimum=1.0),
    )
    c.done()
    return config


def _health(h: MappingReader) -> HealthConfig:
    path = h.str("path", default="/health")
    if not path.startswith("/"):
        raise h.error("path", f"must start with '/'; got {path!r}")
    health = HealthConfig(kind=h.str("kind", default="http", choices=("http", "tcp")),
                          path=path, status=h.int("status", default=200, minimum=100, maximum=599),
                          timeout=h.duration("timeout", default=2.0, minimum=0.01),
                          version_field=h.str("version_field", default="version"),
                          body=h.str("body"), port=h.port("port"), interval=h.duration("interval", minimum=0.05),
                          fall=h.int("fall", minimum=1, maximum=100), rise=h.int("rise", minimum=1, maximum=100))
    h.done()
    return health


def _app(r: MappingReader, name: str, base: Path, groups: dict[str, GroupConfig],
         check_files: bool = True) -> AppConfig:
    if not _NAME.match(name):
        raise MappingReader(None, r.file, r.path).error(None, f"{name!r} is not a valid app name")
    group = r.str("group", required=True)
    if group not in groups:
        raise r.error("group", f"no host group named {group!r} (groups: {', '.join(groups)})")
    repo_text = r.str("repo", required=True)
    repo = repo_text if "://" in repo_text or repo_text.startswith("git@") else str(_resolve(base, os.path.expanduser(repo_text)))
    branch = r.str("branch", default="production")
    demo_repo = r.bool("demo_repo")
    poll_interval = r.duration("poll_interval", default=10.0, minimum=0.1)

    b = r.mapping("build")
    build = BuildConfig(commands=tuple(b.str_list("commands")), artifact=b.str("artifact", default=""),
                        timeout=b.duration("timeout", default=600.0, minimum=0.1), env=tuple(b.str_list("env")),
                        host=b.str("host"))
    for i, env_name in enumerate(build.env):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env_name):
            raise b.error("env", f"env[{i}]: {env_name!r} is not an environment variable name")
    b.done()
    if build.commands and not build.artifact:
        raise b.error(None, "`artifact` is required when build `commands` are given")

    on_kubernetes = groups[group].provider == "kubernetes"
    image = r.str("image", required=on_kubernetes)
    if image is not None and not on_kubernetes:
        raise r.error("image", f"`image` is for apps on a kubernetes group; group {group!r} is {groups[group].provider}")
    manifests_dir = None
    if r.has("manifests"):
        if not on_kubernetes:
            raise r.error("manifests", f"`manifests` is for apps on a kubernetes group; group {group!r} is "
                                       f"{groups[group].provider}")
        text = r.str("manifests")
        manifests_dir = _resolve(base, text or "")
        if not manifests_dir.is_dir():
            raise r.error("manifests", f"directory {text!r} does not exist (looked for {manifests_dir})")
    d = r.mapping("deploy")
    # Kubernetes apps deploy by applying manifests: no playbook runs on a pod.
    playbook = _existing_file(d, "playbook", base, required=not on_kubernetes, check=check_files)
    on_build = d.str("on_build", default="none", choices=("none", "rolling", "canary"))
    d.done()

    health = _health(r.mapping("health"))
    s = r.mapping("service")
    service_name = s.str("name", default=name)
    _check_name(s, "name", service_name)
    service_command = s.str("command", default="")
    s.done()
    vars_ = r.plain_mapping("vars")
    rollout = _rollout(r.mapping("rollout"), groups)
    r.done()
    return AppConfig(service_name=service_name, service_command=service_command, name=name, group=group, repo=repo, branch=branch, demo_repo=demo_repo,
                     poll_interval=poll_interval, build=build, deploy_playbook=playbook, on_build=on_build,
                     health=health, vars=vars_, rollout=rollout, image=image,
                     manifests_dir=manifests_dir)


def _rollout(t: MappingReader, groups: dict[str, GroupConfig]) -> RolloutConfig:
    default = RolloutConfig()
    rollout = RolloutConfig(
        health_timeout=t.duration("health_timeout", default=default.health_timeout, minimum=0.1),
        drain_timeout=t.duration("drain_timeout", default=default.drain_timeout, minimum=0.0),
        deploy_timeout=t.duration("deploy_timeout", default=default.deploy_timeout, minimum=1.0),
        lock_ttl=t.duration("lock_ttl", default=default.lock_ttl, minimum=1.0),
        lock_renew=t.duration("lock_renew", default=default.lock_renew, minimum=0.1),
        lock_host=t.str("lock_host", default=""),
    )
    if rollout.lock_host:
        _check_name(t, "lock_host", rollout.lock_host)
        # Local and static hosts are named by the config: a typo is said here (and by --check), not at the
        # first roll. EC2 instances are named in the state, pods by the cluster: those are checked when used.
        named = {f"{g.name}-{i}" for g in groups.values() if g.provider == "local" for i in range(1, g.count + 1)} | \
            {h.name for g in groups.values() if g.provider == "static" for h in g.hosts}
        if rollout.lock_host not in named and all(g.provider in ("local", "static") for g in groups.values()):
            raise t.error("lock_host", f"{rollout.lock_host!r} is no host of the fleet (hosts: "
                                       f"{', '.join(sorted(named)[:8])}{', …' if len(named) > 8 else ''})")
    if rollout.lock_renew >= rollout.lock_ttl:
        key = "lock_renew" if t.has("lock_renew") else "lock_ttl"
        raise t.error(key, f"lock_renew ({rollout.lock_renew:g}s) must be shorter than lock_ttl ({rollout.lock_ttl:g}s), "
                           "or the lock goes stale between renewals")
    t.done()
    return rollout
