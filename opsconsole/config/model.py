"""The typed result of loading a config file. Every part reads these, never raw YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # their modules read their own sections; importing them here would make a circle
    from opsconsole.ec2.config import Ec2GroupConfig
    from opsconsole.kube.config import KubeGroupConfig
    from opsconsole.proxy.config import ProxyConfig


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: float = 2.5
    timeout: float = 2.0
    fall: int = 3
    rise: int = 2
    history: int = 100  # samples kept in memory per host
    concurrency: int = 100  # probes in flight at once
    alert_command: str | None = None  # run on each state change, the event as JSON on stdin
    alert_webhook: str | None = None  # POSTed the event as JSON on each state change
    # Every probe, verdict and cycle as a line (the console's heartbeat pane shows the same lines);
    # the loader puts it at <state_dir>/logs/heartbeat.log. None: no log on disk.
    log_file: Path | None = None


@dataclass(frozen=True)
class StaticHost:
    name: str
    address: str
    port: int | None = None
    ssh_port: int = 22
    user: str | None = None
    role: str = ""
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupConfig:
    name: str
    provider: str  # local | static | ec2 | kubernetes
    role: str = ""
    count: int = 0  # local and ec2
    base_port: int | None = None  # local: first port; None = pick free ports once and remember them
    hosts: tuple[StaticHost, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)
    provision: Path | None = None  # provisioning playbook
    health: "HealthConfig | None" = None  # probe for hosts that run no app (e.g. tcp for a database)
    ec2: Ec2GroupConfig | None = None  # for provider ec2
    kubernetes: KubeGroupConfig | None = None  # for provider kubernetes


@dataclass(frozen=True)
class BuildConfig:
    commands: tuple[str, ...] = ()
    artifact: str = ""
    timeout: float = 600.0
    # Names of the console's environment variables a build may see, beyond the small allow-list
    # (opsconsole.builds.environment): a build runs whatever the branch says, so it gets no more.
    env: tuple[str, ...] = ()
    # An inventory host the build runs on (over its transport, as Jenkins on an agent); None: this machine.
    host: str | None = None


@dataclass(frozen=True)
class HealthConfig:
    kind: str = "http"  # http | tcp
    path: str = "/health"
    status: int = 200
    timeout: float = 2.0
    version_field: str | None = "version"  # JSON field of the health answer that reports the version
    body: str | None = None  # a substring the answer must contain
    port: int | None = None  # None: the host's app port
    interval: float | None = None  # None: the heartbeat section's
    fall: int | None = None
    rise: int | None = None


@dataclass(frozen=True)
class RolloutConfig:
    """An app's rollout timing (`apps.X.rollout`)."""

    health_timeout: float = 60.0  # how long a deployed host has to answer healthy with the new version
    drain_timeout: float = 30.0  # how long a drained host's requests in flight get before it is deployed anyway
    # How long one host's deploy may take: past it that host alone fails (unreachable, stalled), the batch goes on.
    deploy_timeout: float = 300.0
    lock_ttl: float = 60.0  # a deploy lock not renewed for this long is stale: its console died
    lock_renew: float = 10.0  # how often a running rollout renews its lock (below lock_ttl)
    # The host that keeps the deploy lock file; "" is the app group's first host. Every console of a team must
    # name the same one. Set when that first host may be down: a dead lock host stops every rollout.
    lock_host: str = ""


@dataclass(frozen=True)
class AppConfig:
    name: str
    group: str
    repo: str
    branch: str = "production"
    demo_repo: bool = False  # create `repo` with the bundled sample app if missing
    poll_interval: float = 10.0
    build: BuildConfig = field(default_factory=BuildConfig)
    deploy_playbook: Path | None = None
    on_build: str = "none"  # none | rolling | canary
    health: HealthConfig = field(default_factory=HealthConfig)
    service_name: str = ""  # defaults to the app name
    service_command: str = ""  # Jinja2 template, e.g. "python3 current/app.py --port {{ port }}"
    vars: dict[str, Any] = field(default_factory=dict)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    # Kubernetes apps: the container image, a Jinja2 template of the version,
    # e.g. "registry.example/checkbox:{{ version }}"
    image: str | None = None
    manifests_dir: Path | None = None  # Kubernetes apps: Jinja2 manifest templates instead of the generated ones


@dataclass(frozen=True)
class JumpConfig:
    host: str
    port: int = 22
    user: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class CanaryConfig:
    step: int = 10  # +/- keys change the canary weight by this much
    confirm_steps: bool = False  # +/- ask first; off by default: a small step is steering, 0 and promote always ask
    steps: tuple[int, ...] = (5, 20, 50, 100)  # `canary APP steps` walks these percentages
    hold: float = 30.0  # seconds each step is held and judged
    min_requests: int = 50  # canary requests a step needs before it can be judged
    max_wait: float = 300.0  # how long a step may wait for enough requests before it fails
    max_error_rate: float = 0.01  # canary error rate allowed above stable's
    max_p95_ratio: float = 1.5  # canary p95 latency allowed, as a multiple of stable's


@dataclass(frozen=True)
class SshConfig:
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    identity_files: tuple[str, ...] = ()  # empty: ~/.ssh/id_* and the agent
    agent: bool = True
    ssh_config: bool = False  # honour ~/.ssh/config
    max_channels: int = 7
    connect_timeout: float = 15.0
    # SSH handshakes in flight at once (Ansible's forks, for connection set-up only): sshd's MaxStartups
    # 10:30:100 starts refusing unauthenticated connections past 10, and a bastion is one sshd for all.
    max_connecting: int = 10


@dataclass(frozen=True)
class Config:
    file: Path
    project: str
    state_dir: Path
    readonly: bool
    theme: str
    heartbeat: HeartbeatConfig
    groups: dict[str, GroupConfig]
    apps: dict[str, AppConfig]
    jump: JumpConfig | None = None
    ssh: SshConfig = field(default_factory=SshConfig)
    proxy: ProxyConfig | None = None  # when a `proxy:` section is given
    keymap: dict[str, str] = field(default_factory=dict)
    canary_step: int = 10
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    max_parallel_builds: int = 2
    notices: tuple[str, ...] = ()  # things we accepted but cannot do yet, told to the operator
    # `secrets:`: name -> value, read from env vars or private files; masked wherever shown or written.
    secrets: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.file.parent
