"""Pools, members and the choice of where a request goes.

Two levels of smooth weighted round robin (nginx's algorithm: even spread, no
bursts): first the pool by its effective weight, then a member of it that has a
free connection slot (`max_conns`). Sticky mode replaces the first level by a
per-client bucket 0-99 kept in a cookie, so raising the canary from 20 to 50
moves exactly the clients with buckets 20-49 and nobody flips back and forth.

Health follows the trusted proxies (see shared/REFERENCE.md):
- active checks take a member out after `fall` failures and bring it back after `rise`;
- live traffic ejects a member only after `passive_failures` consecutive failures
  (Envoy's consecutive_5xx), or `passive_refused` refused connects (nothing listens);
- passive evidence never takes more than `max_ejection_percent` of the stable pool;
- with no healthy stable member left, the stable pool balances across all its enabled
  members anyway (Envoy's panic mode) instead of answering 503 to everyone;
- the canary pool has neither cap nor panic: with no healthy canary, traffic goes to
  stable and the alert latches (the seed's rule).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Callable

from opsconsole.proxy.config import FrontendConfig, MemberConfig
from opsconsole.proxy.metrics import Stats

if TYPE_CHECKING:
    from opsconsole.proxy.server import ClientConnection, Request
    from opsconsole.proxy.upstream import UpstreamConnection

ENABLED, DRAINING, DISABLED = "enabled", "draining", "disabled"


class Member:
    def __init__(self, cfg: MemberConfig, pool: str, max_conns: int) -> None:
        self.name = cfg.name
        self.address = cfg.address
        self.port = cfg.port
        self.weight = cfg.weight
        self.pool = pool
        self.pool_ref: "Pool" = None  # type: ignore[assignment]  # set when its Pool is built (the per-request path reads it)
        self.max_conns = max_conns
        self.healthy = True  # like HAProxy: up until checks say otherwise
        self.ejected = False  # out because of passive evidence (counts toward the ejection cap)
        self.admin = ENABLED
        self.admin_since = time.time()
        self.inflight = 0  # requests holding a connection slot
        self.stats = Stats()
        self.idle: list["UpstreamConnection"] = []
        self.tunnels: set["ClientConnection"] = set()  # upgraded connections (WebSocket) to this member
        self.failures = 0  # consecutive failures on live traffic
        self.refused = 0  # consecutive refused connects
        self.check_ok = 0  # consecutive good active checks
        self.check_bad = 0
        self.last_check = ""  # what the last check said, for the operator
        self.current = 0  # smooth WRR state
        self.removed = False  # taken out of its pool's member set at runtime: draining until reaped

    @property
    def available(self) -> bool:
        return self.healthy and self.admin == ENABLED and self.weight > 0

    @property
    def free(self) -> bool:
        return self.inflight < self.max_conns

    def close_idle(self) -> None:
        conns, self.idle = self.idle, []
        for conn in conns:
            conn.close()

    def to_dict(self, drain_timeout: float) -> dict:
        drained = self.admin != ENABLED and self.inflight == 0 and not self.tunnels
        timed_out = self.admin == DRAINING and not drained and time.time() - self.admin_since >= drain_timeout
        return {
            "name": self.name, "address": self.address, "port": self.port, "pool": self.pool,
            "weight": self.weight, "healthy": self.healthy, "ejected": self.ejected, "admin": self.admin,
            "inflight": self.inflight, "max_conns": self.max_conns, "tunnels": len(self.tunnels),
            "drained": drained or timed_out, "drain_timed_out": timed_out, "check": self.last_check,
            "removed": self.removed,
            **self.stats.to_dict(),
        }


class Pool:
    def __init__(self, name: str, weight: int, members: list[Member]) -> None:
        self.name = name
        self.weight = weight
        self.members = members
        for m in members:
            m.pool_ref = self
        self.live: list[Member] = [m for m in members if m.available]  # kept current by AppState.refresh()
        self.panic = False  # no healthy member: balancing across all enabled ones (stable only)
        self.current = 0
        self.queue: deque["Request"] = deque()  # requests waiting for a free slot, oldest first
        self.queued = 0  # requests that ever waited here
        self.queue_timeouts = 0
        self.failed = 0  # client-visible failures the proxy made here with no member to blame (503 queue timeout …)

    def pick(self, exclude: Member | None = None) -> Member | None:
        """The next live member with a free connection slot, by smooth WRR; None if all are busy."""
        live = self.live
        if len(live) == 1:
            m = live[0]
            return m if (m is not exclude and m.inflight < m.max_conns) else None
        best: Member | None = None
        total = 0
        for m in live:
            if m is exclude or m.inflight >= m.max_conns:
                continue
            m.current += m.weight
            total += m.weight
            if best is None or m.current > best.current:
                best = m
        if best is not None:
            best.current -= total
        return best

    def has_available(self) -> bool:
        return bool(self.live)


class Alert:
    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.since = time.time()

    def to_dict(self) -> dict:
        return {"reason": self.reason, "since": self.since}


class AppState:
    """One frontend's pools, split, canary alert and the answers the proxy made itself."""

    def __init__(self, cfg: FrontendConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.name = cfg.app
        self.log = log
        self.pools: dict[str, Pool] = {}
        self.members: dict[str, Member] = {}
        self.alert: Alert | None = None
        self.answers: Counter[str] = Counter()  # status the proxy answered itself ("503" …) or "cut" → count
        self.tunnels_total = 0
        self.on_change: Callable[[], None] | None = None  # the frontend re-routes its queues
        self.runtime_pools: set[str] = set()  # pools whose members were set at runtime (a reload keeps them)
        self._eff: dict[str, int] = {}
        self.only_pool: Pool | None = None  # the one pool with traffic, when there is just one (the common case)
        self.apply_config(cfg, keep_weights=False)

    @property
    def client_errors(self) -> int:
        """Requests that failed as the client saw it: 5xx the proxy answered, and responses cut short."""
        return sum(n for k, n in self.answers.items() if k == "cut" or k.startswith("5"))

    @property
    def tunnels_open(self) -> int:
        return sum(len(m.tunnels) for m in self.members.values())

    def refresh(self) -> None:
        """Recompute what the per-request path reads; called on every change of health, admin state or weight."""
        for pool in self.pools.values():
            live = [m for m in pool.members if m.available]
            panic = False
            if not live and pool.name == "stable":
                # Panic: every stable member failed its checks. Balancing across all of them beats a 503 for
                # everyone (Envoy's panic threshold); a member that is really gone refuses fast and is retried.
                live = [m for m in pool.members if m.admin == ENABLED and m.weight > 0]
                panic = bool(live)
            if panic != pool.panic:
                pool.panic = panic
                self.log(f"{self.name}/{pool.name}: " + ("PANIC: no healthy member; balancing across all "
                                                         f"{len(live)} enabled members" if panic else "panic over"))
            pool.live = live
        eff = {name: self._effective(pool) for name, pool in self.pools.items()}
        stable = self.pools.get("stable")
        if stable is not None and stable.live and not any(eff.values()):
            eff["stable"] = 100  # the weights are relative: with the canary out, stable takes everything
        self._eff = eff
        with_traffic = [self.pools[n] for n, w in eff.items() if w > 0]
        self.only_pool = with_traffic[0] if len(with_traffic) == 1 else None
        if self.on_change is not None:
            self.on_change()

    def set_weights(self, weights: dict[str, int]) -> None:
        for pool, w in weights.items():
            self.pools[pool].weight = w
        self.refresh()

    def apply_config(self, cfg: FrontendConfig, *, keep_weights: bool) -> list[Member]:
        """Adopt `cfg`; keep state of members that stay; return members that left (to drain)."""
        self.cfg = cfg
        old = self.members
        self.members = {}
        for pname, pcfg in cfg.pools.items():
            members = []
            runtime = keep_weights and pname in self.runtime_pools and pname in self.pools
            if runtime:
                # Set at runtime (e.g. from EndpointSlices): the config file does not know them, keep them.
                for m in self.pools[pname].members:
                    m.max_conns = cfg.max_conns
                    members.append(m)
                    self.members[m.name] = m
            for mcfg in () if runtime else pcfg.members:
                m = old.get(mcfg.name)
                if m is None or (m.address, m.port, m.pool) != (mcfg.address, mcfg.port, pname):
                    m = Member(mcfg, pname, cfg.max_conns)
                else:
                    m.max_conns = cfg.max_conns
                    if not keep_weights:
                        m.weight = mcfg.weight
                members.append(m)
                self.members[m.name] = m
            pool = self.pools.get(pname)
            # Weights set at runtime are the operator's decision; a reload must not undo a canary step.
            weight = pool.weight if (pool is not None and keep_weights) else pcfg.weight
            new = Pool(pname, weight, members)
            if pool is not None:  # requests waiting and counters outlive a reload
                new.queue, new.queued, new.queue_timeouts, new.failed = pool.queue, pool.queued, pool.queue_timeouts, pool.failed
                new.panic = pool.panic
            self.pools[pname] = new
        left = [m for name, m in old.items() if self.members.get(name) is not m]
        for m in left:
            # Requests still in flight to it finish; they must not pull queued requests to where it was.
            m.pool_ref = Pool(m.pool, 0, [])
        self.update_alert()
        self.refresh()
        return left

    # -- runtime member sets -------------------------------------------------------
    def set_members(self, pool_name: str, wanted: list[MemberConfig]) -> tuple[list[Member], list[Member]]:
        """Make `wanted` the pool's members at once; return (added, removed). The caller validated `wanted`.

        A member that stays keeps its state and counters. A new one starts healthy, as a config member
        does and as Envoy adds a host (ignore_new_hosts_until_first_hc is off by default): whoever sets
        members has checked them already (Kubernetes lists an endpoint ready only once its readiness
        probe, our own health path, passed), and a dead one is out on its first refused connection, the
        request retried elsewhere. A removed member drains: no new requests, those in flight finish;
        `reap_removed` drops it once it is idle.
        """
        pool = self.pools[pool_name]
        current = {m.name: m for m in pool.members}
        members: list[Member] = []
        added: list[Member] = []
        for mcfg in wanted:
            m = current.get(mcfg.name)
            if m is not None and (m.address, m.port) == (mcfg.address, mcfg.port):
                m.weight = mcfg.weight
                if m.removed:  # back before it was reaped: in rotation again
                    m.removed = False
                    m.admin, m.admin_since = ENABLED, time.time()
            else:
                m = Member(mcfg, pool_name, self.cfg.max_conns)
                m.pool_ref = pool
                added.append(m)
            members.append(m)
        names = {m.name for m in members}
        kept = set(map(id, members))
        removed = []
        for m in pool.members:
            if id(m) in kept:
                continue
            if not m.removed:
                m.removed = True
                m.admin, m.admin_since = DRAINING, time.time()
                m.close_idle()
                removed.append(m)
            if (m.inflight or m.tunnels) and m.name not in names:  # finishing requests: shown, draining, until reaped
                members.append(m)
            else:  # (a new member under the same name replaced it: its requests in flight still finish)
                self._forget(m)
        pool.members = members
        for m in members:
            self.members[m.name] = m
        self.runtime_pools.add(pool_name)
        self.update_alert()
        self.refresh()
        if added or removed:
            self.log(f"{self.name}/{pool_name}: members set: " + ", ".join(
                [f"+{m.name} {m.address}:{m.port}" for m in added] + [f"-{m.name} (draining)" for m in removed]))
        return added, removed

    def reap_removed(self, drain_timeout: float) -> list[Member]:
        """Drop removed members that finished their requests (or whose drain timed out); return them."""
        now = time.time()
        gone = []
        for pool in self.pools.values():
            done = [m for m in pool.members if m.removed and
                    ((not m.inflight and not m.tunnels) or now - m.admin_since >= drain_timeout)]
            if done:
                pool.members = [m for m in pool.members if m not in done]
                for m in done:
                    self._forget(m)
                gone += done
        if gone:
            self.refresh()
        return gone

    def _forget(self, m: Member) -> None:
        if self.members.get(m.name) is m:
            del self.members[m.name]
        m.close_idle()
        # Requests still in flight to it finish; they must not pull queued requests to where it was.
        m.pool_ref = Pool(m.pool, 0, [])

    # -- choosing ------------------------------------------------------------
    def effective_weight(self, pool: Pool) -> int:
        return self._eff.get(pool.name, 0)

    def _effective(self, pool: Pool) -> int:
        if pool.name == "canary" and self.alert is not None:
            return 0
        return pool.weight if pool.live else 0

    def canary_percent(self) -> float | None:
        """The share of traffic the canary gets now, or None when no pool can take traffic."""
        s = self.effective_weight(self.pools["stable"])
        c = self.effective_weight(self.pools["canary"])
        return None if s + c == 0 else 100.0 * c / (s + c)

    def pick_pool(self, bucket: int | None) -> Pool | None:
        if bucket is not None:
            pct = self.canary_percent()
            if pct is None:
                return None
            return self.pools["canary" if bucket < pct else "stable"]
        if self.only_pool is not None:
            return self.only_pool
        best: Pool | None = None
        total = 0
        eff = self._eff
        for pool in self.pools.values():
            w = eff[pool.name]
            if w <= 0:
                continue
            pool.current += w
            total += w
            if best is None or pool.current > best.current:
                best = pool
        if best is not None:
            best.current -= total
        return best

    def retry_pool(self, failed: Member) -> Pool | None:
        """A retry goes to stable when it can take traffic (the canary may be dying), else back to the failed pool."""
        for name in ("stable", failed.pool):
            pool = self.pools[name]
            if pool.live and any(m is not failed for m in pool.live):
                return pool
        return self.pools[failed.pool] if failed.available else None

    # -- health and the canary alert ------------------------------------------
    def mark(self, member: Member, healthy: bool, why: str) -> None:
        """An active check's verdict (or the operator's): no cap applies."""
        if member.healthy == healthy:
            if healthy:
                member.ejected = False
            return
        member.healthy = healthy
        member.ejected = False
        member.failures = member.refused = 0
        if not healthy:
            member.check_ok = 0  # back only after `rise` good checks, however it went down
            member.close_idle()
        self.log(f"{self.name}/{member.pool}/{member.name} is {'up' if healthy else 'DOWN'}: {why}")
        self.update_alert()
        self.refresh()

    def eject(self, member: Member, why: str) -> bool:
        """Passive evidence says `member` is failing: take it out unless the stable pool's cap forbids it."""
        if not member.healthy:
            return False
        pool = self.pools[member.pool]
        if pool.name == "stable":
            out = sum(1 for m in pool.members if m.ejected and not m.healthy)
            cap = self.cfg.health.max_ejection_percent
            if out > 0 and (out + 1) * 100 > cap * len(pool.members):
                self.log(f"{self.name}/{member.pool}/{member.name} not ejected ({why}): {out} of "
                         f"{len(pool.members)} already out and max_ejection_percent is {cap}")
                member.failures = 0
                return False
        member.healthy = False
        member.ejected = True
        member.failures = member.refused = 0
        member.check_ok = 0
        member.close_idle()
        self.log(f"{self.name}/{member.pool}/{member.name} is DOWN (ejected): {why}")
        self.update_alert()
        self.refresh()
        return True

    def update_alert(self) -> None:
        canary = self.pools.get("canary")
        if canary is None:
            return
        wanted = [m for m in canary.members if m.admin != DISABLED and not m.removed]
        dead = bool(wanted) and not any(m.healthy for m in wanted)
        if dead and self.alert is None:
            self.alert = Alert("no healthy canary member; traffic goes 100% to stable")
            self.log(f"{self.name}: ALERT latched: {self.alert.reason}")
        elif not dead and self.alert is not None and self.cfg.auto_restore:
            self.log(f"{self.name}: alert cleared (auto_restore): a canary member is healthy again")
            self.alert = None

    def clear_alert(self) -> bool:
        """Clear the latch; if the canary is still dead it latches again at once. Returns whether it stays clear."""
        self.alert = None
        self.update_alert()
        self.refresh()
        self.log(f"{self.name}: alert cleared by the operator" + ("" if self.alert is None else "; canary still down, latched again"))
        return self.alert is None

    def set_admin(self, member: Member, state: str) -> None:
        member.admin = state
        member.admin_since = time.time()
        if state != ENABLED:
            # New requests stop at once; idle connections go so the member can be stopped cleanly.
            member.close_idle()
        self.update_alert()
        self.refresh()
        self.log(f"{self.name}/{member.pool}/{member.name}: {state}")

    def to_dict(self, drain_timeout: float) -> dict:
        pools = {}
        for p in self.pools.values():
            total = Stats()
            for m in p.members:
                total.add(m.stats)
            d = total.to_dict()
            d["failed"] += p.failed
            pools[p.name] = {
                "weight": p.weight, "effective_weight": self.effective_weight(p), "panic": p.panic,
                "queue": len(p.queue), "queued": p.queued, "queue_timeouts": p.queue_timeouts,
                "members": [m.to_dict(drain_timeout) for m in p.members], **d,
            }
        pct = self.canary_percent()
        return {"app": self.name, "split": self.cfg.split, "auto_restore": self.cfg.auto_restore,
                "alert": self.alert.to_dict() if self.alert else None, "client_errors": self.client_errors,
                "answers": dict(self.answers), "panic": any(p.panic for p in self.pools.values()),
                "tunnels": {"open": self.tunnels_open, "total": self.tunnels_total},
                "canary_percent": pct, "pools": pools}
