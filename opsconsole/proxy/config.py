"""The `proxy:` section of the config: what the traffic proxy serves and how it is steered.

`parse_proxy_section(reader, groups)` validates the section with the same
located errors as the rest of the config. Pools may name a host group; such
members are resolved to addresses only in the proxy process (`resolve_members`),
because a local group's ports live in the state dir, not in the file.

The commented block in `EXAMPLE_YAML` is the reference for the schema.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from opsconsole.config.reader import MappingReader
from opsconsole.fsio import read_private
from opsconsole.login_env import ENV_NAME, NOT_AN_ENV_NAME
from opsconsole.yamlsource import YamlList

POOLS = ("stable", "canary")
SPLIT_MODES = ("request", "sticky")
DRIVERS = ("embedded", "haproxy")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Listen:
    """A TCP address (port 0 = let the kernel pick) or a unix socket path."""

    host: str = "127.0.0.1"
    port: int = 0
    unix: str | None = None

    def describe(self) -> str:
        return f"unix:{self.unix}" if self.unix else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MemberConfig:
    name: str
    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class PoolConfig:
    name: str  # stable | canary
    weight: int  # 0-100: the pool's share against the other pool's weight
    members: tuple[MemberConfig, ...] = ()
    group: str | None = None  # members come from this host group (resolved by the proxy process)
    group_port: int | None = None  # port for the group's hosts; None = each host's app port
    group_weight: int = 1


@dataclass(frozen=True)
class HealthCheckConfig:
    kind: str = "http"  # http | tcp
    path: str = "/health"
    status: int = 200
    interval: float = 1.0
    # Longer than one SYN retransmit (1 s on Linux): a check that lands on a full accept queue is slow, not dead.
    timeout: float = 2.0
    fall: int = 2
    rise: int = 2
    passive: bool = True  # live traffic is evidence too (outlier detection, below)
    on_5xx: bool = False  # a 5xx answer also counts as a passive failure
    # Outlier detection on live traffic, as Envoy does it: a member is ejected only after this many
    # consecutive failures (connect timeouts, resets, response timeouts, 5xx with on_5xx) …
    passive_failures: int = 5
    # … but a refused connection means nothing listens (the process is gone): that is the canary-death signal.
    passive_refused: int = 1
    # Passive evidence never takes more than this share of the stable pool out (at least one member may go).
    # The canary pool has no cap: a canary with no healthy member sends everything to stable and latches the alert.
    max_ejection_percent: int = 10


CONNECT_RETRIES = 3  # a request not yet sent may try this many other members (HAProxy's retries + redispatch)


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 1  # extra tries of a sent GET/HEAD with nothing yet sent to the client (never sent: connect_attempts)
    methods: tuple[str, ...] = ("GET", "HEAD")

    @property
    def connect_attempts(self) -> int:
        """Extra tries of a request never sent (its connection failed): never fewer than CONNECT_RETRIES, as
        HAProxy's default `retries 3` with `redispatch`. A dying member refuses a burst of connections before
        anyone has marked it out, so one retry can land on it again."""
        return max(self.attempts, CONNECT_RETRIES)


@dataclass(frozen=True)
class TlsConfig:
    """TLS termination on a frontend: PEM certificate chain and key, reloaded on SIGHUP."""

    cert: Path
    key: Path


UPGRADES = ("websocket",)


@dataclass(frozen=True)
class FrontendConfig:
    app: str
    listen: Listen
    split: str = "request"  # request | sticky
    cookie: str = "opsconsole_bucket"
    auto_restore: bool = False  # canary back healthy → alert clears by itself
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    health: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    # Connections to one member at once (HAProxy's `maxconn` on a server line); more requests wait in the
    # pool's queue, first in first out, for `queue_timeout`. 32 lets a stdlib ThreadingHTTPServer (one
    # thread per connection, listen backlog 5) serve hundreds of clients through the proxy.
    max_conns: int = 32
    # Open tunnels (WebSocket) to one member at once. A tunnel gives back its request slot once the member
    # answers 101, so without this bound a WebSocket-heavy client base could open connections without end;
    # 1024 is Envoy's default circuit-breaker figure for connections. Past it an upgrade is answered 503.
    max_tunnels: int = 1024
    tls: TlsConfig | None = None
    upgrades: tuple[str, ...] = UPGRADES  # protocols a client may switch to (tunnelled to the chosen member)


@dataclass(frozen=True)
class HaproxyConfig:
    stats_socket: str = "/run/haproxy/admin.sock"
    config_path: str = "/etc/haproxy/haproxy.cfg"
    host: str | None = None  # run the runtime API through this host's transport (socat); None = this machine
    nbthread: int | None = None  # None: HAProxy's default (all cores)
    slots: int = 0  # spare servers per pool (`server-template`) for members set at runtime (Kubernetes endpoints)


@dataclass(frozen=True)
class ProxyConfig:
    driver: str = "embedded"
    admin: Listen = field(default_factory=Listen)
    token_env: str | None = None
    token_file: Path | None = None
    token_secret: str | None = None  # the name of a `secrets:` entry holding the token (the console's config)
    runtime_file: Path | None = None  # where the proxy writes its pid and bound ports; None = the caller decides
    upstream_idle: float = 2.0
    client_idle: float = 30.0
    # 5 s like HAProxy's and Envoy's examples: a dropped SYN (full accept queue) is retried by the kernel at
    # 1 s and 3 s; a timeout at or under 1 s turns every one of those into a failure.
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    drain_timeout: float = 30.0
    queue_timeout: float = 10.0  # a request waiting for a free member slot longer than this gets 503 + Retry-After
    head_timeout: float = 10.0  # the whole request head must arrive within this (HAProxy's `timeout http-request`)
    max_head_bytes: int = 32 * 1024  # a larger request head gets 431
    tunnel_idle: float = 3600.0  # an upgraded connection (WebSocket) with no traffic either way is closed after this
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For we extend; anyone else's is replaced
    frontends: dict[str, FrontendConfig] = field(default_factory=dict)
    haproxy: HaproxyConfig = field(default_factory=HaproxyConfig)
    # embedded: the inventory host the proxy runs on (provisioned by playbooks/proxy-host.yml); the console
    # reaches its admin API through an SSH-forwarded loopback port. None = this machine.
    host: str | None = None

    def read_token(self, secrets: Mapping[str, str] | None = None) -> str:
        """The admin bearer token; ValueError saying where it was looked for when there is none.

        `secrets` is the config's `secrets:` section, where `token_secret` names the token."""
        if self.token_secret:
            if secrets is not None and self.token_secret in secrets:
                return secrets[self.token_secret]
            if secrets is None:  # `opsconsole proxy` given the console's own config
                raise ValueError(f"proxy.admin.token_secret {self.token_secret!r} is a secret of the console: "
                                 "run the proxy with the config `provision` renders for its host (it reads "
                                 "the token from a 0600 file), or give it token_env or token_file")
            raise ValueError(f"no admin token: proxy.admin.token_secret names {self.token_secret!r}, "
                             "which is not in the config's `secrets:` section")
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if value:
                return value
        if self.token_file:
            try:
                value = read_private(self.token_file).strip()  # open to others: another user could steer traffic
            except ValueError as exc:
                raise ValueError(f"admin token file {exc}") from None
            except OSError as exc:
                raise ValueError(f"cannot read the admin token file {self.token_file}: {exc.strerror}") from None
            if value:
                return value
        places = [f"${self.token_env}" if self.token_env else "", str(self.token_file) if self.token_file else ""]
        raise ValueError("no admin token: set " + " or ".join(p for p in places if p)
                         + " (the admin API refuses to run without one)")


def parse_listen(text: str | int, *, loopback_only: bool) -> Listen:
    """`8080`, `127.0.0.1:0`, `[::1]:9000` or `unix:/path`; ValueError with a message otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not an address")
    if isinstance(text, int):
        if not 0 <= text <= 65535:
            raise ValueError(f"port {text} is out of range (0-65535)")
        return Listen("127.0.0.1", text)
    s = str(text).strip()
    if s.startswith("unix:"):
        path = s[5:]
        if not path:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/opsconsole/proxy.sock")
        return Listen(unix=os.path.expanduser(path))
    host, sep, port_text = s.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", s
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{s!r} is not HOST:PORT, PORT or unix:PATH")
    if loopback_only:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise ValueError(f"the admin API listens on loopback or a unix socket only; got {host!r}")
    return Listen(host, int(port_text))


def parse_proxy_section(reader: MappingReader, groups: Mapping[str, Any]) -> ProxyConfig:
    """Validate the `proxy:` mapping. `groups` maps group names to GroupConfig (only the names and hosts are read)."""
    base = Path(reader.file).resolve().parent
    driver = reader.str("driver", default="embedded", choices=DRIVERS)

    a = reader.mapping("admin")
    admin = _listen(a, "listen", "127.0.0.1:0", loopback_only=True)
    token_env = a.str("token_env")
    if token_env and not ENV_NAME.match(token_env):  # (empty: not set, as before)
        raise a.error("token_env", NOT_AN_ENV_NAME)
    token_file_text = a.str("token_file")
    token_secret = a.str("token_secret")
    if token_secret and (token_env or token_file_text):
        # token_env falls back to token_file; a secret is the whole answer, so mixing them is a mistake
        raise a.error("token_secret", "give `token_secret` alone, without `token_env` or `token_file`")
    token_file = _resolve(base, token_file_text) if token_file_text else None
    if token_file is not None and token_file.is_file():
        # Checked as the config is read (and so by --check), not first at the traffic command that needs it;
        # a file not there yet (`make demo` makes it) is said when it is read.
        try:
            read_private(token_file)
        except ValueError as exc:
            raise a.error("token_file", str(exc)) from None
        except OSError:
            pass  # unreadable: read_token says so, with its reason, where the token is needed
    a.done()
    if driver == "embedded" and not (token_env or token_file_text or token_secret):
        raise a.error(None, "the admin API needs a token: set `token_secret` (a name in `secrets:`), "
                            "`token_env` (an environment variable) or `token_file`")
    runtime_text = reader.str("runtime_file")
    host = reader.str("host")

    timeouts = dict(
        upstream_idle=reader.duration("upstream_idle", default=2.0, minimum=0.05),
        client_idle=reader.duration("client_idle", default=30.0, minimum=0.1),
        connect_timeout=reader.duration("connect_timeout", default=5.0, minimum=0.01),
        response_timeout=reader.duration("response_timeout", default=30.0, minimum=0.01),
        drain_timeout=reader.duration("drain_timeout", default=30.0, minimum=0.0),
        queue_timeout=reader.duration("queue_timeout", default=10.0, minimum=0.0),
        head_timeout=reader.duration("head_timeout", default=10.0, minimum=0.05),
        max_head_bytes=reader.int("max_head_bytes", default=32 * 1024, minimum=1024, maximum=1024 * 1024),
        tunnel_idle=reader.duration("tunnel_idle", default=3600.0, minimum=0.1),
    )
    trusted = tuple(reader.str_list("trusted_proxies"))
    for i, cidr in enumerate(trusted):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise reader.error("trusted_proxies", f"entry {i + 1}: {cidr!r} is not an address or CIDR "
                                                  "(e.g. 10.0.0.0/8)") from None
    h = reader.mapping("haproxy")
    haproxy = HaproxyConfig(
        stats_socket=h.str("stats_socket", default="/run/haproxy/admin.sock"),
        config_path=h.str("config", default="/etc/haproxy/haproxy.cfg"),
        host=h.str("host"), nbthread=h.int("nbthread", minimum=1, maximum=64),
        slots=h.int("slots", default=0, minimum=0, maximum=1000),
    )
    h.done()
    frontends = {f.app: f for f in reader.each("apps", lambda r, name: _frontend(r, name, groups))}
    if not frontends:
        raise reader.error("apps" if reader.has("apps") else None, "at least one app is required under `proxy.apps:`")
    reader.done()
    return ProxyConfig(
        driver=driver, admin=admin, token_env=token_env,
        token_file=token_file, token_secret=token_secret,
        runtime_file=_resolve(base, runtime_text) if runtime_text else None,
        frontends=frontends, haproxy=haproxy, trusted_proxies=trusted, host=host, **timeouts,
    )


def _resolve(base: Path, text: str) -> Path:
    p = Path(os.path.expanduser(os.path.expandvars(text)))
    return p if p.is_absolute() else base / p


def _listen(r: MappingReader, key: str, default: str, *, loopback_only: bool) -> Listen:
    raw = r.raw(key, default)
    try:
        return parse_listen(raw, loopback_only=loopback_only)
    except ValueError as exc:
        raise r.error(key, str(exc)) from None


def _frontend(r: MappingReader, app: str, groups: Mapping[str, Any]) -> FrontendConfig:
    if not _NAME.match(app):
        raise r.error(None, f"{app!r} is not a valid app name")
    listen = _listen(r, "listen", "127.0.0.1:0", loopback_only=False)
    split = r.str("split", default="request", choices=SPLIT_MODES)
    cookie = r.str("cookie", default="opsconsole_bucket")
    auto_restore = r.bool("auto_restore")
    health = _health(r.mapping("health"))
    retry = _retry(r.mapping("retry"))
    max_conns = r.int("max_conns", default=32, minimum=1, maximum=100_000)
    max_tunnels = r.int("max_tunnels", default=1024, minimum=1, maximum=1_000_000)
    tls = _tls(r.mapping("tls"), Path(r.file).resolve().parent) if r.has("tls") else None
    upgrades = tuple(u.lower() for u in (r.str_list("upgrades") if r.has("upgrades") else UPGRADES))
    for u in upgrades:
        if u not in UPGRADES:
            raise r.error("upgrades", f"unknown protocol {u!r} (this proxy can tunnel: {', '.join(UPGRADES)})")
    p = r.mapping("pools")
    pools: dict[str, PoolConfig] = {}
    for name in list(p.data):
        if name not in POOLS:
            raise p.error(name, f"unknown pool (pools are: {', '.join(POOLS)})")
        pools[name] = _pool(p.mapping(name), name, groups)
    p.done()
    if "stable" not in pools:
        raise p.error(None, "a `stable` pool is required")
    pools.setdefault("canary", PoolConfig(name="canary", weight=0))
    seen: dict[str, str] = {}
    for pool in pools.values():
        for m in pool.members:
            if m.name in seen:
                raise p.error(pool.name, f"member name {m.name!r} is used twice (also in pool {seen[m.name]})")
            seen[m.name] = pool.name
    r.done()
    return FrontendConfig(app=app, listen=listen, split=split, cookie=cookie, auto_restore=auto_restore,
                          pools=pools, health=health, retry=retry, max_conns=max_conns, max_tunnels=max_tunnels,
                          tls=tls, upgrades=upgrades)


def _tls(t: MappingReader, base: Path) -> TlsConfig:
    paths = {}
    for key in ("cert", "key"):
        text = t.str(key, required=True)
        path = _resolve(base, text)
        if not path.is_file():
            raise t.error(key, f"no such file: {path}")
        paths[key] = path
    t.done()
    return TlsConfig(cert=paths["cert"], key=paths["key"])


def _pool(r: MappingReader, name: str, groups: Mapping[str, Any]) -> PoolConfig:
    weight = r.int("weight", default=100 if name == "stable" else 0, minimum=0, maximum=100)
    group = r.str("group")
    group_port = r.port("port")
    group_weight = r.int("member_weight", default=1, minimum=0, maximum=256)
    members: list[MemberConfig] = []
    raw = r.raw("members")
    if raw is not None:
        if not isinstance(raw, list):
            raise r.error("members", "must be a list of {name, address, port, weight}")
        for i, item in enumerate(raw):
            line = raw.line_of(i) if isinstance(raw, YamlList) else r.line_of("members")
            m = MappingReader(item, r.file, f"{r.key_path('members')}[{i}]", line)
            address = m.str("address", default="127.0.0.1")
            port = m.port("port", required=True)
            mname = m.str("name", default=f"{name}-{i + 1}")
            if not _NAME.match(mname):
                raise m.error("name", f"{mname!r} is not a valid member name")
            members.append(MemberConfig(name=mname, address=address, port=port,
                                        weight=m.int("weight", default=1, minimum=0, maximum=256)))
            m.done()
    if group is not None and group not in groups:
        raise r.error("group", f"no host group named {group!r} (groups: {', '.join(groups)})")
    if group is None and not members and name == "stable":
        raise r.error(None, "the stable pool needs `group:` or `members:`")
    r.done()
    return PoolConfig(name=name, weight=weight, members=tuple(members), group=group,
                      group_port=group_port, group_weight=group_weight)


def _health(h: MappingReader) -> HealthCheckConfig:
    path = h.str("path", default="/health")
    if not path.startswith("/"):
        raise h.error("path", f"must start with '/'; got {path!r}")
    cfg = HealthCheckConfig(
        kind=h.str("kind", default="http", choices=("http", "tcp")), path=path,
        status=h.int("status", default=200, minimum=100, maximum=599),
        interval=h.duration("interval", default=1.0, minimum=0.05),
        timeout=h.duration("timeout", default=2.0, minimum=0.01),
        fall=h.int("fall", default=2, minimum=1, maximum=100), rise=h.int("rise", default=2, minimum=1, maximum=100),
        passive=h.bool("passive", default=True), on_5xx=h.bool("on_5xx"),
        passive_failures=h.int("passive_failures", default=5, minimum=1, maximum=1000),
        passive_refused=h.int("passive_refused", default=1, minimum=1, maximum=1000),
        max_ejection_percent=h.int("max_ejection_percent", default=10, minimum=0, maximum=100),
    )
    h.done()
    return cfg


def _retry(r: MappingReader) -> RetryConfig:
    methods = tuple(m.upper() for m in (r.str_list("methods") or ["GET", "HEAD"]))
    unsafe = [m for m in methods if m not in ("GET", "HEAD", "OPTIONS")]
    if unsafe:
        # Resending a POST the backend may already have acted on could do it twice.
        raise r.error("methods", f"only idempotent, safe methods may be retried after sending; got {', '.join(unsafe)}")
    cfg = RetryConfig(attempts=r.int("attempts", default=1, minimum=0, maximum=5), methods=methods)
    r.done()
    return cfg


# -- resolving group pools to addresses (in the proxy process) ----------------

@dataclass(frozen=True)
class GroupHost:
    name: str
    address: str
    port: int | None


def resolve_members(config: ProxyConfig, hosts_by_group: Mapping[str, Iterable[GroupHost]]) -> ProxyConfig:
    """Turn every `group:` pool into explicit members; SourceError-free ValueError if a host has no port."""
    frontends = {}
    for app, fe in config.frontends.items():
        pools = {}
        for pname, pool in fe.pools.items():
            members = list(pool.members)
            if pool.group is not None:
                for host in hosts_by_group.get(pool.group, ()):
                    port = pool.group_port or host.port
                    if port is None:
                        raise ValueError(f"proxy.apps.{app}.pools.{pname}: host {host.name} of group {pool.group} "
                                         "has no port; set `port:` on the pool")
                    members.append(MemberConfig(name=host.name, address=host.address, port=port,
                                                weight=pool.group_weight))
            pools[pname] = replace(pool, members=tuple(members), group=None)
        frontends[app] = replace(fe, pools=pools)
    return replace(config, frontends=frontends)


EXAMPLE_YAML = """\
# proxy: the traffic proxy in front of an app's stable and canary pools.
# proxy:
#   driver: embedded              # embedded (`opsconsole proxy`) | haproxy (a real HAProxy via its runtime API)
#   admin:
#     listen: 127.0.0.1:0         # loopback HOST:PORT (0 = pick a free port) or unix:/path/admin.sock
#     token_env: OPSCONSOLE_PROXY_TOKEN   # bearer token from this environment variable …
#     token_file: proxy.token     # … or from this file (relative to this config); the proxy refuses to start without one
#                                 # … or, alone, token_secret: NAME, the `secrets:` entry of that name (a proxy on its
#                                 #   own host: `provision` hands it to the proxy host's 0600 token file, no_log)
#   runtime_file: proxy.json      # the proxy writes its pid, admin URL and bound ports here (default <state_dir>/proxy/runtime.json)
#   upstream_idle: 2s             # idle keep-alive to backends; keep it shorter than the backends' own
#   client_idle: 30s              # idle keep-alive to clients
#   connect_timeout: 5s           # over 1 s: a dropped SYN is retried by the kernel at 1 s and 3 s
#   response_timeout: 30s         # no response header within this → a failure (GET/HEAD retried)
#   drain_timeout: 30s            # a draining member counts as drained after this even with requests in flight
#   queue_timeout: 10s            # a request waiting for a free member slot (max_conns) this long gets 503 + Retry-After
#   head_timeout: 10s             # a request head must arrive whole within this, else 408 (slow clients)
#   max_head_bytes: 32768         # a larger request head gets 431
#   tunnel_idle: 1h               # a WebSocket tunnel with no traffic either way is closed after this
#   trusted_proxies: []           # CIDRs of proxies in front of this one whose X-Forwarded-For is extended;
#                                 # from anyone else the header is replaced by the client's address
#   host: proxy-1                 # embedded: the proxy runs on this inventory host (playbooks/proxy-host.yml);
#                                 # its admin API is reached through an SSH-forwarded port. omit = this machine
#   haproxy:                      # driver: haproxy only
#     stats_socket: /run/haproxy/admin.sock
#     config: /etc/haproxy/haproxy.cfg   # where `opsconsole` writes the generated config
#     host: proxy-1               # HAProxy runs on this inventory host (runtime API via socat over SSH); omit = this machine
#     nbthread: 1
#     slots: 16                   # spare servers per pool for members set at runtime: a Kubernetes app's
#                                 # pods (EndpointSlices) need one each; default 0 (config members only)
#   apps:
#     checkbox:
#       listen: 127.0.0.1:0       # where clients connect (0 = pick; the runtime file tells which)
#       split: request            # request: smooth weighted round robin per request | sticky: a cookie keeps each client on one pool
#       cookie: opsconsole_bucket # sticky mode's cookie
#       auto_restore: false       # false: a failed canary stays at 0% until `canary checkbox clear`
#       max_conns: 32             # connections to one member at once; more requests wait in a queue (queue_timeout)
#       max_tunnels: 1024         # open WebSocket tunnels to one member at once; past it an upgrade gets 503
#       upgrades: [websocket]     # protocol upgrades tunnelled to the chosen member; [] refuses them all
#       # tls:                    # terminate TLS here (PEM files; SIGHUP reloads them without dropping connections)
#       #   cert: /etc/opsconsole/checkbox.crt
#       #   key: /etc/opsconsole/checkbox.key
#       pools:
#         stable:
#           group: checkbox       # members are this group's hosts at their app port …
#           port: 9000            # … or at this port
#           member_weight: 1
#           weight: 100           # 0-100, the pool's share against the canary's
#         canary:
#           members:              # … or an explicit list
#             - {name: checkbox-canary, address: 127.0.0.1, port: 9100, weight: 1}
#           weight: 0
#       health:                   # active checks of every member, and passive ones on live traffic
#         kind: http              # http | tcp
#         path: /health
#         status: 200
#         interval: 1s
#         timeout: 2s
#         fall: 2                 # failed checks before a member is out
#         rise: 2                 # good checks before it is back (also after a passive ejection)
#         passive: true           # live traffic counts too (outlier detection):
#         passive_failures: 5     #   consecutive timeouts/resets (and 5xx with on_5xx) before a member is ejected
#         passive_refused: 1      #   consecutive refused connects (nothing listens: the process is gone)
#         max_ejection_percent: 10  # passive ejection never takes more of the stable pool (at least one member);
#                                 #   with every stable member down the proxy balances across all of them (panic)
#         on_5xx: false           # a 5xx answer counts as a passive failure too
#       retry:
#         attempts: 1             # a GET/HEAD sent, with nothing yet sent to the client, is tried again on another member (a request never sent: at least 3 times)
#         methods: [GET, HEAD]    # never POST: it may already have been acted on
"""

