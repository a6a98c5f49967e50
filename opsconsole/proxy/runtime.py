"""The proxy process: listeners, admin API, checks, signals. Imports nothing of the console's engine."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Callable

from opsconsole.fsio import write_atomic
from opsconsole.proxy.admin import AdminApi
from opsconsole.proxy.balancer import AppState
from opsconsole.proxy.config import FrontendConfig, Listen, ProxyConfig, TlsConfig
from opsconsole.proxy.health import HealthChecker
from opsconsole.proxy.metrics import PromWriter
from opsconsole.proxy.server import ClientConnection, Frontend


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} proxy: {message}", file=sys.stderr, flush=True)


class ProxyRuntime:
    def __init__(self, config: ProxyConfig, token: str, *, reload_config: Callable[[], ProxyConfig] | None = None,
                 runtime_file: Path | None = None) -> None:
        self.config = config
        self.token = token
        self.reload_config = reload_config
        self.runtime_file = runtime_file
        self.apps: dict[str, AppState] = {}
        self.frontends: dict[str, Frontend] = {}
        self.listen: dict[str, tuple[Listen, TlsConfig | None]] = {}
        self.bound: dict[str, dict] = {}
        self.health = HealthChecker(log)
        self.admin = AdminApi(token, lambda: self.apps, metrics=self.metrics, state=self.state,
                              reload=self.reload, drain_timeout=lambda: self.config.drain_timeout,
                              members_changed=lambda: self.health.sync(self.apps), frontends=lambda: self.bound)
        self.admin_url = ""
        self.started = time.time()
        self._stop = asyncio.Event()
        self._sweeper: asyncio.Task | None = None
        self._retired: list[Frontend] = []
        self._tasks: set[asyncio.Task] = set()

    # -- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        for name, fe_cfg in self.config.frontends.items():
            await self._add_frontend(fe_cfg)
        self.admin_url = await self.admin.start(self.config.admin)
        self.health.sync(self.apps)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self._write_runtime_file()
        # Everything alive now lives as long as the process: keep it out of the cyclic GC's full
        # collections, whose pauses would otherwise land in the latency tail.
        gc.collect()
        gc.freeze()
        log(f"admin API on {self.admin_url}; " + ", ".join(f"{a} on {b['host']}:{b['port']}" for a, b in self.bound.items()))

    async def _add_frontend(self, cfg: FrontendConfig) -> None:
        app = self.apps.get(cfg.app) or AppState(cfg, log)
        self.apps[cfg.app] = app
        fe = Frontend(app, self.config, log, self.health, tls_context(cfg.tls) if cfg.tls else None)
        await self._listen(fe, cfg)
        self.frontends[cfg.app] = fe

    async def _listen(self, fe: Frontend, cfg: FrontendConfig) -> None:
        loop = asyncio.get_running_loop()
        listen = cfg.listen
        # A TLS handshake is part of a request head's time: a client that stalls in it is a slow client.
        tls = dict(ssl=fe.tls, ssl_handshake_timeout=self.config.head_timeout) if fe.tls is not None else {}
        if listen.unix:
            fe.server = await loop.create_unix_server(lambda: ClientConnection(fe), listen.unix, backlog=1024, **tls)
            self.bound[fe.app.name] = {"unix": listen.unix}
        else:
            fe.server = await loop.create_server(lambda: ClientConnection(fe), listen.host, listen.port,
                                                 reuse_address=True, backlog=1024, **tls)
            host, port = fe.server.sockets[0].getsockname()[:2]
            self.bound[fe.app.name] = {"host": host, "port": port}
        if cfg.tls is not None:
            self.bound[fe.app.name]["tls"] = True
        self.listen[fe.app.name] = (listen, cfg.tls)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        await self._stop.wait()
        await self.shutdown()
        return 0

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        """Stop accepting, let requests in flight finish (up to drain_timeout), then close everything."""
        log("draining: no new connections; finishing requests in flight")
        for fe in list(self.frontends.values()) + self._retired:
            fe.shutting_down = True
            if fe.server is not None:
                fe.server.close()
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline and any(c.busy for fe in self.frontends.values() for c in fe.clients):
            await asyncio.sleep(0.02)
        for fe in self.frontends.values():
            fe.flush_all()
            for c in list(fe.clients):
                c.transport.close()
            for m in fe.app.members.values():
                m.close_idle()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.health.close()
        await self.admin.close()
        if self.runtime_file is not None:
            try:
                self.runtime_file.unlink()
            except OSError:
                pass
        log("stopped")

    async def _sweep(self) -> None:
        # Timeouts are checked here, a few times a second, instead of a timer per request.
        period = max(0.02, min(0.25, self.config.upstream_idle / 4))
        while True:
            await asyncio.sleep(period)
            for fe in list(self.frontends.values()) + self._retired:
                try:
                    fe.sweep()
                except Exception:  # every timeout lives here: one bug must not end them all
                    fe.log_exception("sweep")
            # Members a runtime member set removed go once their requests finished (or the drain timed out).
            reaped = [app.reap_removed(self.config.drain_timeout) for app in list(self.apps.values()) if app.runtime_pools]
            if any(reaped):  # (every app reaps: a list, not a short-circuiting any() over a generator)
                self.health.sync(self.apps)

    # -- reload (SIGHUP) --------------------------------------------------------------
    def reload(self) -> str:
        """Re-read the config; listeners and connections stay; a bad config changes nothing."""
        if self.reload_config is None:
            return "no config file to reload from"
        try:
            new = self.reload_config()
            # Certificates are read now, so a bad one refuses the whole reload and changes nothing.
            contexts = {name: tls_context(fe.tls) for name, fe in new.frontends.items() if fe.tls is not None}
        except Exception as exc:  # a bad file must not take the proxy down
            log(f"reload refused, still running the old config: {exc}")
            return f"refused: {exc}"
        task = asyncio.get_running_loop().create_task(self._apply(new, contexts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return "ok"

    async def _apply(self, new: ProxyConfig, contexts: dict[str, ssl.SSLContext]) -> None:
        old_admin = self.config.admin
        self.config = new
        for name, cfg in new.frontends.items():
            if name not in self.apps:
                await self._add_frontend(cfg)
                continue
            app, fe = self.apps[name], self.frontends[name]
            left = app.apply_config(cfg, keep_weights=True)
            for m in left:
                m.close_idle()  # requests in flight to it finish on their own connections
            fe.configure(cfg, new)
            old_listen, old_tls = self.listen[name]
            if cfg.tls is not None and old_tls is not None and fe.tls is not None:
                # Same listener, new certificate: load it into the context in use. New handshakes get it;
                # connections already open keep theirs (nothing is dropped).
                try:
                    fe.tls.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
                except (OSError, ssl.SSLError) as exc:
                    log(f"{name}: certificate reload refused, keeping the old one: {exc}")
            if cfg.listen != old_listen or (cfg.tls is None) != (old_tls is None):
                old_server, old_ctx = fe.server, fe.tls
                fe.tls = contexts.get(name)
                try:
                    await self._listen(fe, cfg)
                except OSError as exc:
                    # e.g. turning TLS on at the same port: the old socket still holds it. Nothing changes.
                    fe.tls, fe.server = old_ctx, old_server
                    log(f"{name}: cannot listen on {cfg.listen.describe()} ({exc.strerror or exc}); "
                        "still on the old listener — restart the proxy to move it")
                    continue
                old_server.close()  # only the listening socket: accepted connections live on
            else:
                self.listen[name] = (cfg.listen, cfg.tls)
        for name in [n for n in self.apps if n not in new.frontends]:
            fe = self.frontends.pop(name)
            self.apps.pop(name)
            self.bound.pop(name, None)
            fe.shutting_down = True
            fe.server.close()
            self._retired.append(fe)
        if new.admin != old_admin:
            log("admin.listen changed; it takes effect on restart, not on reload")
        self.health.sync(self.apps)
        self._write_runtime_file()
        log("config reloaded")

    # -- reporting --------------------------------------------------------------------
    def state(self) -> dict:
        return {"pid": os.getpid(), "started": self.started, "admin": self.admin_url,
                "frontends": self.bound, "apps": {n: a.to_dict(self.config.drain_timeout) for n, a in self.apps.items()}}

    def metrics(self) -> str:
        w = PromWriter()
        for app in self.apps.values():
            w.sample("opsconsole_proxy_alert", "gauge", "1 while the canary alert is latched.", {"app": app.name},
                     1 if app.alert else 0)
            w.sample("opsconsole_proxy_client_errors_total", "counter", "Requests the proxy answered 5xx or cut.",
                     {"app": app.name}, app.client_errors)
            for code, n in sorted(app.answers.items()):
                w.sample("opsconsole_proxy_answers_total", "counter",
                         "Responses the proxy made itself, by status (cut = a response cut short).",
                         {"app": app.name, "code": code}, n)
            w.sample("opsconsole_proxy_tunnels_open", "gauge", "Upgraded connections (WebSocket) open now.",
                     {"app": app.name}, app.tunnels_open)
            w.sample("opsconsole_proxy_tunnels_total", "counter", "Upgraded connections opened.",
                     {"app": app.name}, app.tunnels_total)
            for pool in app.pools.values():
                labels = {"app": app.name, "pool": pool.name}
                w.sample("opsconsole_proxy_pool_weight", "gauge", "Configured pool weight (0-100).", labels, pool.weight)
                w.sample("opsconsole_proxy_pool_effective_weight", "gauge", "Weight in use after health and alert.",
                         labels, app.effective_weight(pool))
                w.sample("opsconsole_proxy_pool_panic", "gauge",
                         "1 while no member of the pool is healthy and it balances across all of them.",
                         labels, 1 if pool.panic else 0)
                w.sample("opsconsole_proxy_pool_queue", "gauge", "Requests waiting for a free member slot.",
                         labels, len(pool.queue))
                w.sample("opsconsole_proxy_pool_queued_total", "counter", "Requests that waited for a free slot.",
                         labels, pool.queued)
                w.sample("opsconsole_proxy_pool_queue_timeouts_total", "counter",
                         "Requests answered 503 after queue_timeout.", labels, pool.queue_timeouts)
                for m in pool.members:
                    ml = {**labels, "member": m.name}
                    w.sample("opsconsole_proxy_member_up", "gauge", "1 if the member passes its checks.", ml, 1 if m.healthy else 0)
                    w.sample("opsconsole_proxy_member_inflight", "gauge", "Requests in flight.", ml, m.inflight)
                    w.stats("opsconsole_proxy_member", ml, m.stats)
        return w.text()

    def _write_runtime_file(self) -> None:
        if self.runtime_file is None:
            return
        # Readers never see half a file. 0644 as before: it holds where the proxy listens, no secret.
        write_atomic(self.runtime_file, json.dumps({"pid": os.getpid(), "admin": self.admin_url, "frontends": self.bound}),
                     mode=0o644)


def tls_context(cfg: TlsConfig) -> ssl.SSLContext:
    """A server context with Python's secure defaults (TLS 1.2+); ValueError naming the file at fault."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cfg.cert} with key {cfg.key}: {exc}") from None
    return ctx
