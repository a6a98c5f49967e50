"""An haproxy.cfg with the embedded proxy's guarantees, generated from the same `proxy:` section.

- one backend per app; stable and canary members are its servers, their HAProxy
  weights (0-256) computed from pool weights (`server_weights`);
- `maxconn <max_conns>` on every server: the excess waits in the backend's queue
  (first in, first out) for `timeout queue <queue_timeout>`, then gets 503;
- active checks (`check inter/fall/rise`, `timeout check` = the health timeout) plus
  passive ones: `observe layer4 error-limit <passive_failures> on-error fail-check`,
  so failed connections count toward `fall` and one error takes nobody down;
  canary servers `error-limit <passive_refused> on-error mark-down`: a dead canary
  is out on its first refused connection (see `_frontend`);
- `retries <connect_attempts>` + `option redispatch 1` + `retry-on` (`retry_on`):
  conn-failure always, empty-response when `attempts` > 0, response-timeout only when
  `attempts` >= 3; with `http-request disable-l7-retry` for anything but GET/HEAD: a
  request never sent is retried whatever its method, a POST that was sent never is;
- the edge owns the forwarding fields: a client's X-Forwarded-For is deleted unless it
  comes from `trusted_proxies`, then `option forwardfor` adds the client's address;
  X-Forwarded-Proto is always set (https on a TLS frontend);
- `timeout http-request <head_timeout>` and a 431 for a head over `max_head_bytes`;
- no auto_restore: canary servers get a `rise` too large to reach, so a canary
  that went down stays down (the latch) until `set server … health up` (clear_alert).

Where HAProxy 2.6 cannot do what the embedded proxy does:
- `max_ejection_percent`: HAProxy has no cap on how many servers passive checks take out;
- one retry count for connects and sent requests (`retries`, max(attempts, 3)): a GET/HEAD
  the member closed on without an answer may be tried up to that many more times, not
  `attempts`; and so that a slow member is not sent the same GET four times, holding the
  client for 4 x response_timeout, a GET/HEAD whose answer timed out is retried only when
  `attempts` is 3 or more (the embedded proxy retries it `attempts` times);
- passive evidence cannot tell a refused connection from a connect timeout (both are one
  layer-4 error), so a canary whose connect times out is marked down (and latched) too;
- a request head larger than `tune.bufsize` - `tune.maxrewrite` (16 KiB - 1 KiB by default;
  left at the defaults) is answered 400 by HAProxy itself before the 431 rule can see it.
"""

from __future__ import annotations

import ipaddress
from typing import Collection, Mapping

from opsconsole.proxy.config import CONNECT_RETRIES, FrontendConfig, ProxyConfig, RetryConfig, TlsConfig
from opsconsole.proxy.http1 import FORWARDING, UNDERSCORED

LATCH_RISE = 100000  # checks before a latched canary comes back by itself: at 1s, more than a day
MAX_WEIGHT = 256


def backend_name(app: str) -> str:
    return f"be_{app}"


def slot_names(pool: str, slots: int) -> list[str]:
    """The spare servers `server-template` makes for a pool: members set at runtime take them
    (`set server … addr`, then `state ready`); unused ones stay in maintenance at address 0.0.0.0:0."""
    return [f"{pool}.slot{i}" for i in range(1, slots + 1)]


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


def _tls_crt(tls: TlsConfig) -> str:
    """The `crt` argument for a TLS bind: HAProxy 2.6 takes one path and finds the key in that same PEM
    or, failing that, at `<cert>.key` (its default `ssl-load-extra-files all`). A key anywhere else
    cannot be named on a bind line, so it is refused here rather than by HAProxy at start."""
    cert, key = str(tls.cert), str(tls.key)
    if key in (cert, cert + ".key"):
        return cert
    try:
        has_key = "PRIVATE KEY-----" in tls.cert.read_text(errors="replace")
    except OSError:
        has_key = False
    if has_key:
        return cert
    raise ValueError(f"HAProxy needs the TLS key in the certificate's PEM ({cert}) or at {cert}.key; "
                     f"got key {key}: concatenate them or move the key there")


def render_haproxy_config(config: ProxyConfig, *, stats_socket: str | None = None, nbthread: int | None = None,
                          pidfile: str | None = None, bind: Mapping[str, tuple[str, int]] | None = None) -> str:
    """The whole haproxy.cfg. `config` must have its group pools resolved (`resolve_members`).

    `bind` overrides an app's listen address (tests bind to ports they picked; port 0 means nothing to HAProxy).
    ValueError if a TLS frontend's key is somewhere HAProxy cannot find it (see `_tls_crt`).
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
               # Adds the client's address as the last X-Forwarded-For; the frontend first deletes whatever an
               # untrusted client sent (see _frontend).
               "    option forwardfor",
               f"    timeout connect {_ms(config.connect_timeout)}",
               f"    timeout client {_ms(config.client_idle)}",
               f"    timeout http-keep-alive {_ms(config.client_idle)}",
               f"    timeout server {_ms(config.response_timeout)}",
               f"    timeout tunnel {_ms(config.tunnel_idle)}",  # WebSocket: idle time, like tunnel_idle
               f"    timeout queue {_ms(config.queue_timeout)}",
               f"    timeout http-request {_ms(config.head_timeout)}",
               "    http-reuse safe",
               ""]
    for app, fe in config.frontends.items():
        out += _frontend(config, fe, bind.get(app) if bind else None)
    return "\n".join(out) + "\n"


def retry_on(retry: RetryConfig) -> str:
    """HAProxy's `retry-on` for the embedded proxy's retry settings. `retries` (connect_attempts) counts
    every kind: a member that closed without an answer (empty-response) is retried when `attempts` allows
    any retry of a sent request, a timed-out answer (response-timeout) only when the count is the
    user's own (attempts >= CONNECT_RETRIES), never 3 x response_timeout more than asked for."""
    kinds = ["conn-failure"]
    if retry.attempts:
        kinds.append("empty-response")
    if retry.attempts >= CONNECT_RETRIES:
        kinds.append("response-timeout")
    return " ".join(kinds)


def _frontend(config: ProxyConfig, fe: FrontendConfig, bind: tuple[str, int] | None) -> list[str]:
    host, port = bind if bind else (fe.listen.host, fe.listen.port)
    if fe.listen.unix and not bind:
        addr = f"unix@{fe.listen.unix}"
    else:
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    be = backend_name(fe.app)
    methods = " ".join(f"!METH_{m}" for m in fe.retry.methods)
    h = fe.health
    tls = f" ssl crt {_tls_crt(fe.tls)}" if fe.tls else ""
    lines = [f"frontend fe_{fe.app}",
             f"    bind {addr}{tls}"]
    # 431 for a head over max_head_bytes. HAProxy 2.6 has no `req.hdrs_len` (`haproxy -c`: unknown fetch
    # method) and no built-in 431 page, hence `req.hdrs,length` (the header block without the request
    # line) and an inline body. Heads over tune.bufsize - tune.maxrewrite (about 15 KiB at the defaults)
    # never get here: HAProxy answers them 400 itself.
    lines.append(f"    http-request deny deny_status 431 content-type text/plain "
                 f"string \"request header fields too large\" if {{ req.hdrs,length gt {config.max_head_bytes} }}")
    # We are the edge: a client's X-Forwarded-For is a claim, not a fact. Only proxies we trust may pass
    # one on; `option forwardfor` then adds the address this connection came from.
    if config.trusted_proxies:
        cidrs = " ".join(str(ipaddress.ip_network(c, strict=False)) for c in config.trusted_proxies)
        lines += [f"    acl from_trusted_proxy src {cidrs}",
                  "    http-request del-header X-Forwarded-For if !from_trusted_proxy"]
    else:
        lines.append("    http-request del-header X-Forwarded-For")
    # The other forwarding claims, as the embedded proxy drops them (kept from a trusted proxy); and the
    # underscore spellings of fields we manage, which a CGI or WSGI app reads as the dashed ones.
    only_untrusted = " if !from_trusted_proxy" if config.trusted_proxies else ""
    lines += [f"    http-request del-header {name.decode()}{only_untrusted}" for name in sorted(FORWARDING)]
    lines += [f"    http-request del-header {name.decode()}" for name in sorted(UNDERSCORED)]
    lines += [f"    http-request set-header X-Forwarded-Proto {'https' if fe.tls else 'http'}",
              f"    default_backend {be}",
              "",
              f"backend {be}",
              "    balance roundrobin",
              # One count in HAProxy for both kinds of retry: a failed connect gets the embedded proxy's
              # connect_attempts (a dying canary refuses a burst before it is marked down, and a redispatch
              # can pick it again: with `retries 1`, 2 in 8 SIGKILLs under 200 clients failed some requests).
              f"    retries {fe.retry.connect_attempts}",
              "    option redispatch 1",
              f"    retry-on {retry_on(fe.retry)}",
              # L7 retries (after the request was sent) only for safe methods; a connect failure is retried for all.
              f"    http-request disable-l7-retry if {methods}",
              # HAProxy bounds a check's connect by min(inter, timeout connect) and its answer by this:
              # never less than the health timeout the embedded proxy gives a check.
              f"    timeout check {_ms(h.timeout)}"]
    if fe.split == "sticky":
        lines.append(f"    cookie {fe.cookie} insert indirect nocache httponly")
    if h.kind == "http":
        lines += [f"    option httpchk GET {h.path}", f"    http-check expect status {h.status}"]
    # pool-purge-delay: idle server connections go before the backends' own keep-alive closes them under us.
    observe = "    default-server check inter {i} fall {f} rise {r} pool-purge-delay {p}".format(
        i=_ms(h.interval), f=h.fall, r=h.rise, p=_ms(config.upstream_idle))
    # Passive checks, as the embedded proxy's outlier detection: `passive_failures` consecutive errors on
    # live traffic count as one failed check (`fail-check`), so a server goes down after `fall` of those
    # (or of active checks), never on one error. layer4 counts failed connection attempts (refused, connect
    # timeout); with health.on_5xx, layer7 also counts 5xx answers (but 501/505), resets and read timeouts.
    layer = "layer7" if h.on_5xx else "layer4"
    canary_death = ""
    if h.passive:
        observe += f" observe {layer} error-limit {h.passive_failures} on-error fail-check"
        if layer == "layer4":
            # Canary servers: a failed connection means nothing listens there (the embedded proxy's
            # passive_refused, 1 by default), and the canary is what a rollout is judging, so it goes down
            # on that at once (`mark-down`), not after fall x passive_failures errors, and with no
            # auto_restore stays down (the latch below). With fail-check a SIGKILLed canary would still be
            # detected (its refused connections and failed active checks count toward `fall`), only later.
            # Under layer7 one error could be a single 5xx, so the canary keeps the stable servers' rule.
            canary_death = f" error-limit {h.passive_refused} on-error mark-down"
    lines.append(observe)
    weights = server_weights(fe, {p: pool.weight for p, pool in fe.pools.items()})
    for pname, pool in fe.pools.items():
        for m in pool.members:
            extra = f" maxconn {fe.max_conns}"
            if fe.split == "sticky":
                extra += f" cookie {m.name}"
            if pname == "canary":
                extra += canary_death
                if not fe.auto_restore:
                    extra += f" rise {LATCH_RISE}"
            lines.append(f"    server {m.name} {m.address}:{m.port} weight {weights[m.name]}{extra}")
        if config.haproxy.slots:
            # (no `cookie`: whether a template numbers it per server is not documented for 2.6, so sticky
            # mode balances slot members without a server cookie)
            extra = f" maxconn {fe.max_conns}"
            if pname == "canary":
                extra += canary_death + ("" if fe.auto_restore else f" rise {LATCH_RISE}")
            lines.append(f"    server-template {pname}.slot 1-{config.haproxy.slots} 0.0.0.0:0 disabled weight 0{extra}")
    return lines + [""]
