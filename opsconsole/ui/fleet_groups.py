"""A host group in one row of the fleet pane: how many hosts are up, down and busy, on which versions.

In a big fleet the pane shows a summary row above each group's hosts, and a big group
starts folded: its summary row alone says what an operator looks for first (anything
down, anything still deploying, a version spread), and unfolding it shows its hosts.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from rich.text import Text

from opsconsole.ui.style import latency_text, styled

if TYPE_CHECKING:
    from opsconsole.engine.fleet import HostView

# Group rows only in a fleet of more hosts than this: a smaller one fits a screen or two as a plain list.
GROUPED_FROM = 50
# In a grouped fleet, a group of more hosts than this starts folded: unfolded, it would fill half of a
# 40-line terminal and push the groups after it off screen, where a down host would go unseen.
FOLD_FROM = 20

_PREFIX = "\0group:"  # a row key no host name can be


def group_key(group: str) -> str:
    return _PREFIX + group


def group_of_key(key: str) -> str | None:
    """The group a summary row's key names; None for a host row."""
    return key[len(_PREFIX):] if key.startswith(_PREFIX) else None


@dataclass
class GroupSummary:
    name: str
    hosts: int = 0
    up: int = 0
    down: int = 0
    busy: int = 0
    latencies: list[float] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)


def summarize(name: str, views: Iterable["HostView"]) -> GroupSummary:
    summary = GroupSummary(name)
    for view in views:
        summary.hosts += 1
        summary.up += view.healthy is True
        summary.down += view.healthy is False
        summary.busy += view.activity != "idle"
        if view.latency is not None:
            summary.latencies.append(view.latency)
        summary.versions[view.version or "-"] += 1
    return summary


def summary_cells(summary: GroupSummary, folded: bool, matching: int | None,
                  styles: dict[str, str]) -> list[object]:
    """The cells of a group row, in the fleet's columns (host, health, ms, version, now, group/role, address).

    `matching` is how many of its hosts a filter in force lets through (None: no filter).
    """
    marker = "▸" if folded else "▾"
    if summary.down:
        health = styled(f"✘ {summary.down}", "bad", styles)
    elif summary.up:
        health = styled(f"✔ {summary.up}", "ok", styles)
    else:
        health = styled("? n/a", "dim", styles)
    latency = statistics.median(summary.latencies) if summary.latencies else None
    common = summary.versions.most_common()
    activity = styled(f"⟳ {summary.busy} busy", "busy", styles) if summary.busy else styled("· idle", "", styles)
    count = f"{matching} of {summary.hosts}" if matching is not None else f"{summary.hosts} hosts"
    spread = " ".join(f"{version}×{n}" for version, n in common[:4]) if len(common) > 1 else ""
    if len(common) > 4:
        spread += f" +{len(common) - 4} more"
    return [Text(f"{marker} {summary.name}", style="bold", no_wrap=True, overflow="ellipsis"), health,
            Text(latency_text(latency)), Text(common[0][0] if common else "-"), activity, Text(count),
            Text(f"versions {spread}" if spread else "")]
