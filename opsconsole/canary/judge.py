"""Is the canary as good as stable over a window? A pure function, so it is easy to test and explain."""

from __future__ import annotations

from dataclasses import dataclass

from opsconsole.config.model import CanaryConfig
from opsconsole.traffic.base import Counters


@dataclass(frozen=True)
class Verdict:
    outcome: str  # pass | fail | wait (too few canary requests to judge)
    reason: str


def judge(canary: Counters, stable: Counters, limits: CanaryConfig) -> Verdict:
    """Compare the canary's window with stable's: error rate and p95 latency, within the configured limits."""
    if canary.requests < limits.min_requests:
        return Verdict("wait", f"{canary.requests}/{limits.min_requests} canary requests so far: too few to judge")
    canary_rate = canary.error_rate or 0.0
    stable_rate = stable.error_rate or 0.0
    if canary_rate > stable_rate + limits.max_error_rate:
        return Verdict("fail", f"canary error rate {canary_rate:.1%} vs stable {stable_rate:.1%} "
                               f"(allowed +{limits.max_error_rate:.1%})")
    canary_p95, stable_p95 = canary.p95(), stable.p95()
    if canary_p95 is not None and stable_p95 is not None and stable_p95 > 0:
        # Latency buckets have a floor: a ratio of two tiny values says nothing, so allow 5 ms of slack.
        if canary_p95 > stable_p95 * limits.max_p95_ratio and canary_p95 - stable_p95 > 0.005:
            return Verdict("fail", f"canary p95 {canary_p95 * 1000:.0f}ms vs stable {stable_p95 * 1000:.0f}ms "
                                   f"(allowed ×{limits.max_p95_ratio:g})")
    p95 = f", p95 {canary_p95 * 1000:.0f}ms" if canary_p95 is not None else ""
    return Verdict("pass", f"{canary.requests} canary requests, error rate {canary_rate:.1%}{p95}")
