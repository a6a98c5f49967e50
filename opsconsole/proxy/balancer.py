"""Pools, members and the choice of where a request goes.

Two levels of smooth weighted round robin (nginx's algorithm: even spread, no
bursts): first the pool by its effective weight, then a member of it. Sticky
mode replaces the first level by a per-client bucket 0-99 kept in a cookie, so
raising the canary from 20 to 50 moves exactly the clients with buckets 20-49
and nobody flips back and forth.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from opsconsole.proxy.config import FrontendConfig, MemberConfig
from opsconsole.proxy.metrics import Stats

if TYPE_CHECKING:
    from opsconsole.proxy.upstream import UpstreamConnection

ENABLED, DRAINING, DISABLED = "enabled", "draining", "disabled"


class Member:
    def __init__(self, cfg: MemberConfig, pool: str) -> None:
        self.name = cfg.name
        self.address = cfg.address
        self.port = cfg.port
        self.weight = cfg.weight
        self.pool = pool
        self.healthy = True  # like HAProxy: up until checks say otherwise; passive checks catch a dead one at once
        self.admin = ENABLED
        self.admin_since = time.time()
        self.inflight = 0
        self.stats = Stats()
        self.idle: list["UpstreamConnection"] = []
        self.check_ok = 0  # consecutive good active checks
        self.check_bad = 0
        self.last_check = ""  # what the last check said, for the operator
        self.current = 0  # smooth WRR state

    @property
    def available(self) -> bool:
        return self.healthy and self.admin == ENABLED and self.weight > 0

    def close_idle(self) -> None:
        conns, self.idle = self.idle, []
        for conn in conns:
            conn.close()

    def to_dict(self, drain_timeout: float) -> dict:
        drained = self.admin != ENABLED and self.inflight == 0
        timed_out = self.admin == DRAINING and not drained and time.time() - self.admin_since >= drain_timeout
        return {
            "name": self.name, "address": self.address, "port": self.port, "pool": self.pool,
            "weight": self.weight, "healthy": self.healthy, "admin": self.admin, "inflight": self.inflight,
            "drained": drained or timed_out, "drain_timed_out": timed_out, "check": self.last_check,
            **self.stats.to_dict(),
        }


class Pool:
    def __init__(self, name: str, weight: int, members: list[Member]) -> None:
        self.name = name
        self.weight = weight
        self.members = members
        self.live: list[Member] = [m for m in members if m.available]  # kept current by AppState.refresh()
        self.current = 0

    def pick(self, exclude: Member | None = None) -> Member | None:
        live = self.live
        if len(live) == 1 and exclude is None:
            return live[0]
        best: Member | None = None
        total = 0
        for m in live:
            if m is exclude:
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
    """One frontend's pools, split and canary alert."""

    def __init__(self, cfg: FrontendConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.name = cfg.app
        self.log = log
        self.pools: dict[str, Pool] = {}
        self.members: dict[str, Member] = {}
        self.alert: Alert | None = None
        self.client_errors = 0  # requests we answered 502/503/504 or cut short
        self._eff: dict[str, int] = {}
        self._only: Pool | None = None  # the one pool with traffic, when there is just one (the common case)
        self.apply_config(cfg, keep_weights=False)

    def refresh(self) -> None:
        """Recompute what the per-request path reads; called on every change of health, admin state or weight."""
        for pool in self.pools.values():
            pool.live = [m for m in pool.members if m.available]
        self._eff = {name: self._effective(pool) for name, pool in self.pools.items()}
        with_traffic = [self.pools[n] for n, w in self._eff.items() if w > 0]
        self._only = with_traffic[0] if len(with_traffic) == 1 else None

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
            for mcfg in pcfg.members:
                m = old.get(mcfg.name)
                if m is None or (m.address, m.port, m.pool) != (mcfg.address, mcfg.port, pname):
                    m = Member(mcfg, pname)
                elif not keep_weights:
                    m.weight = mcfg.weight
                members.append(m)
                self.members[m.name] = m
            pool = self.pools.get(pname)
            # Weights set at runtime are the operator's decision; a reload must not undo a canary step.
            weight = pool.weight if (pool is not None and keep_weights) else pcfg.weight
            self.pools[pname] = Pool(pname, weight, members)
        self.update_alert()
        self.refresh()
        return [m for name, m in old.items() if self.members.get(name) is not m]

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
        if self._only is not None:
            return self._only
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

    def pick(self, bucket: int | None) -> Member | None:
        pool = self.pick_pool(bucket)
        return pool.pick() if pool is not None else None

    def pick_retry(self, failed: Member) -> Member | None:
        """A retry goes to a healthy stable member other than the one that failed (the canary may be dying)."""
        m = self.pools["stable"].pick(exclude=failed)
        if m is None and failed.pool != "stable":
            m = self.pools[failed.pool].pick(exclude=failed)
        if m is None and failed.available:
            # Not marked down (a kept-alive connection died): the same member on a fresh connection is fine.
            m = failed
        return m

    # -- health and the canary alert ------------------------------------------
    def mark(self, member: Member, healthy: bool, why: str) -> None:
        if member.healthy == healthy:
            return
        member.healthy = healthy
        if not healthy:
            member.check_ok = 0  # back only after `rise` good checks, however it went down
            member.close_idle()
        self.log(f"{self.name}/{member.pool}/{member.name} is {'up' if healthy else 'DOWN'}: {why}")
        self.update_alert()
        self.refresh()

    def update_alert(self) -> None:
        canary = self.pools.get("canary")
        if canary is None:
            return
        wanted = [m for m in canary.members if m.admin != DISABLED]
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
            pools[p.name] = {
                "weight": p.weight, "effective_weight": self.effective_weight(p),
                "members": [m.to_dict(drain_timeout) for m in p.members], **total.to_dict(),
            }
        pct = self.canary_percent()
        return {"app": self.name, "split": self.cfg.split, "auto_restore": self.cfg.auto_restore,
                "alert": self.alert.to_dict() if self.alert else None, "client_errors": self.client_errors,
                "canary_percent": pct, "pools": pools}
