"""An haproxy.cfg with the embedded proxy's guarantees, generated from the same `proxy:` section.

- one backend per app; stable and canary members are its servers, their HAProxy
  weights (0-256) computed from pool weights (`server_weights`);
- active checks (`check inter/fall/rise`) plus passive ones (`observe layer7`,
  `on-error mark-down`): a failing server is out at once;
- `retry-on conn-failure empty-response response-timeout` + `option redispatch 1`,
  with `http-request disable-l7-retry` for anything but GET/HEAD: a request never
  sent is retried whatever its method, a POST that was sent never is;
- no auto_restore: canary servers get a `rise` too large to reach, so a canary
  that went down stays down (the latch) until `set server … health up` (clear_alert).
"""

from __future__ import annotations

from typing import Collection, Mapping

from opsconsole.proxy.config import FrontendConfig, ProxyConfig

LATCH_RISE = 100000  # checks before a latched canary comes back by itself: at 1s, more than a day
MAX_WEIGHT = 256


def backend_name(app: str) -> str:
    return f"be_{app}"


def server_weights(fe: FrontendConfig, pool_weights: Mapping[str, int],
                   out_of_rotation: Collection[str] = ()) -> dict[str, int]:
    """HAProxy weight per member so each pool gets its share and members split it by their own weights.

    HAProxy balances servers, not pools: a drained stable member would hand its share to everyone,
    canary included. So members out of rotation are left out and the pool's share goes to the rest.
    """
    total = sum(pool_weights.get(p, 0) for p in fe.pools)
    result: dict[str, int] = {}
    for pname, pool in fe.pools.items():
        share = (pool_weights.get(pname, 0) / total) if total else 0.0
        live = [m for m in pool.members if m.name not in out_of_rotation]
        mtotal = sum(m.weight for m in live)
        for m in pool.members:
            w = share * MAX_WEIGHT * (m.weight / mtotal) if (mtotal and m in live) else 0.0
            # A small but non-zero share must not round to 0, or the pool silently gets nothing.
            result[m.name] = max(1, round(w)) if w > 0 else 0
    return result


def _ms(seconds: float) -> str:
    return f"{max(1, int(round(seconds * 1000)))}ms"


def render_haproxy_config(config: ProxyConfig, *, stats_socket: str | None = None, nbthread: int | None = None,
                          pidfile: str | None = None, bind: Mapping[str, tuple[str, int]] | None = None) -> str:
    """The whole haproxy.cfg. `config` must have its group pools resolved (`resolve_members`).

    `bind` overrides an app's listen address (tests bind to ports they picked; port 0 means nothing to HAProxy).
    """
    sock = stats_socket or config.haproxy.stats_socket
    threads = nbthread if nbthread is not None else config.haproxy.nbthread
    g = ["global",
         f"    stats socket {sock} mode 600 level admin expose-fd listeners",
         "    stats timeout 30s",
         "    maxconn 4000"]  # two fds per connection must fit common fd limits
    if threads:
        g.append(f"    nbthread {threads}")
    if pidfile:
        g.append(f"    pidfile {pidfile}")
    out = g + ["",
               "defaults",
               "    mode http",
               "    option http-keep-alive",
               "    option forwardfor",
               f"    timeout connect {_ms(config.connect_timeout)}",
               f"    timeout client {_ms(config.client_idle)}",
               f"    timeout http-keep-alive {_ms(config.client_idle)}",
               f"    timeout server {_ms(config.response_timeout)}",
               "    timeout http-request 10s",
               "    timeout check 5s",
               "    http-reuse safe",
               ""]
    for app, fe in config.frontends.items():
        out += _frontend(config, fe, bind.get(app) if bind else None)
    return "\n".join(out) + "\n"


def _frontend(config: ProxyConfig, fe: FrontendConfig, bind: tuple[str, int] | None) -> list[str]:
    host, port = bind if bind else (fe.listen.host, fe.listen.port)
    if fe.listen.unix and not bind:
        addr = f"unix@{fe.listen.unix}"
    else:
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    be = backend_name(fe.app)
    methods = " ".join(f"!METH_{m}" for m in fe.retry.methods)
    h = fe.health
    lines = [f"frontend fe_{fe.app}",
             f"    bind {addr}",
             "    http-request set-header X-Forwarded-Proto http",
             f"    default_backend {be}",
             "",
             f"backend {be}",
             "    balance roundrobin",
             f"    retries {fe.retry.attempts}",
             "    option redispatch 1",
             "    retry-on conn-failure empty-response response-timeout",
             # L7 retries (after the request was sent) only for safe methods; a connect failure is retried for all.
             f"    http-request disable-l7-retry if {methods}"]
    if fe.split == "sticky":
        lines.append(f"    cookie {fe.cookie} insert indirect nocache httponly")
    if h.kind == "http":
        lines += [f"    option httpchk GET {h.path}", f"    http-check expect status {h.status}"]
    # pool-purge-delay: idle server connections go before the backends' own keep-alive closes them under us.
    observe = "    default-server check inter {i} fall {f} rise {r} pool-purge-delay {p}".format(
        i=_ms(h.interval), f=h.fall, r=h.rise, p=_ms(config.upstream_idle))
    if h.passive:
        # layer7 counts refused/reset connections, timeouts and bad answers — and, unlike the embedded
        # proxy's default (health.on_5xx: false), also 5xx answers other than 501/505.
        observe += " observe layer7 error-limit 1 on-error mark-down"
    lines.append(observe)
    weights = server_weights(fe, {p: pool.weight for p, pool in fe.pools.items()})
    for pname, pool in fe.pools.items():
        for m in pool.members:
            extra = f" cookie {m.name}" if fe.split == "sticky" else ""
            if pname == "canary" and not fe.auto_restore:
                extra += f" rise {LATCH_RISE}"
            lines.append(f"    server {m.name} {m.address}:{m.port} weight {weights[m.name]}{extra}")
    return lines + [""]
