"""The fleet pane at 2,000 hosts (issue 18): folded groups, a `/` filter and a sort, on the real engine.

Four local groups of 500 hosts each. What is asserted is what an operator sees
(the screen's text) plus the table's rows, and that the table makes cells only
for the rows it paints.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import test_ui
from big_fleet import GROUPS, PER_GROUP, big_fleet_config

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthSample
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.testing import screen_text

SIZE = (120, 40)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = Engine(load_config(big_fleet_config(tmp_path)))
    assert len(engine.views) == len(GROUPS) * PER_GROUP
    return engine


until = functools.partial(test_ui.until, timeout=20.0)  # 2,000 hosts: a longer wait than test_ui's default


def lines_with(app: OpsConsoleApp, word: str) -> list[str]:
    return [line for line in screen_text(app).splitlines() if word in line]


async def test_a_big_fleet_starts_folded_and_a_group_unfolds_and_folds(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        table = fleet.table
        await until(pilot, lambda: table.row_count == len(GROUPS), what="one summary row per group")
        assert fleet.shown_hosts() == []
        for group in GROUPS:
            assert lines_with(app, f"▸ {group} "), f"no folded summary row for {group}:\n{screen_text(app)}"
            assert "500 hosts" in lines_with(app, f"▸ {group} ")[0]
        # The cursor is on the first group, web: `o` unfolds it, and only what is on screen is drawn.
        drawn: list[str] = []
        source = table.cells
        table.cells = lambda key: (drawn.append(key), source(key))[1]  # type: ignore[method-assign]
        await pilot.press("o")
        await until(pilot, lambda: table.row_count == len(GROUPS) + PER_GROUP, what="web unfolded")
        await until(pilot, lambda: "web-1 " in screen_text(app), what="web's hosts on screen")
        assert lines_with(app, "▾ web ") and fleet.selected_group() == "web"
        assert 0 < len(set(drawn)) <= SIZE[1], f"{len(set(drawn))} rows drawn for a {SIZE[1]}-line screen"
        # A host inside changes: its group's row says so at the next refresh.
        engine.views["web-2"].healthy = False
        engine.bus.emit(HealthSample(host="web-2", ok=False, status=503, latency=0.01, version="v1"))
        await until(pilot, lambda: any("✘ 1" in line for line in lines_with(app, "▾ web ")), what="web: 1 down")
        await pilot.press("down", "down", "o")  # from a host row, `o` folds its group and lands on its row
        await until(pilot, lambda: table.row_count == len(GROUPS), what="web folded again")
        assert fleet.selected_group() == "web" and fleet.selected_host() is None
        assert lines_with(app, "▸ web ")
        await pilot.press("O")  # every group unfolded
        await until(pilot, lambda: table.row_count == len(GROUPS) * (PER_GROUP + 1), what="all unfolded")


async def test_filter_finds_hosts_inside_folded_groups(engine: Engine) -> None:
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: fleet.table.row_count == len(GROUPS), what="one summary row per group")
        await pilot.press("slash", *"api-42", "enter")
        wanted = ["api-42"] + [f"api-42{i}" for i in range(10)]
        await until(pilot, lambda: fleet.shown_hosts() == wanted, what="api-42* shown")
        assert fleet.table.row_count == 1 + len(wanted)  # api's summary row, then its matches
        text = screen_text(app)
        assert lines_with(app, "▾ api ") and "11 of 500" in lines_with(app, "▾ api ")[0], text
        assert not lines_with(app, "web-") and not lines_with(app, "▸ web") and "api-429" in text
        assert "/api-42 11 shown" in str(fleet.border_subtitle)
        await pilot.press("slash", "escape")  # cleared: back to the folded groups
        await until(pilot, lambda: fleet.table.row_count == len(GROUPS), what="the filter cleared")


async def test_sort_by_latency_within_an_unfolded_group(engine: Engine) -> None:
    for i, name in enumerate(n for n in engine.views if n.startswith("batch-")):
        engine.views[name].latency = 0.001 * (i % 50)
    engine.views["batch-333"].latency = 0.9
    engine.views["batch-77"].latency = 0.5
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        await until(pilot, lambda: fleet.table.row_count == len(GROUPS), what="one summary row per group")
        await pilot.press("down", "down", "o")
        await until(pilot, lambda: fleet.selected_group() == "batch" and fleet.table.row_count == len(GROUPS) + PER_GROUP)
        while fleet.sort_key != "latency":
            await pilot.press("s")
        hosts = fleet.shown_hosts()
        assert hosts[:2] == ["batch-333", "batch-77"] and len(hosts) == PER_GROUP
        assert fleet.selected_group() == "batch"  # the cursor stayed on the group's row
        await pilot.press("down")
        await until(pilot, lambda: fleet.selected_host() == "batch-333")
        text = screen_text(app)
        assert text.index("batch-333") < text.index("batch-77 "), text
        assert "sort latency" in str(fleet.border_subtitle)


async def test_a_flood_keeps_every_log_at_its_bound(engine: Engine) -> None:
    from opsconsole.events import OutputLine
    from opsconsole.ui.app import EVENT_LINES
    from opsconsole.ui.heartbeat import LOG_CAPACITY, HeartbeatPane
    from opsconsole.ui.history import LINES

    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        hosts = list(engine.views)
        for i in range(LOG_CAPACITY + 500):  # every sample a change (ok flips), so every one is a log line
            engine.bus.emit(HealthSample(host=hosts[i % 7], ok=i % 2 == 0, status=200, latency=0.01, version="v1"))
        for i in range(EVENT_LINES + 500):
            engine.bus.emit(OutputLine(host="web-1", line=f"line {i}"))
        await until(pilot, lambda: not app.feed._pending, what="the flood drained")
        log = app.query_one(HeartbeatPane).log
        await until(pilot, lambda: len(log.ring) == LOG_CAPACITY, what="the heartbeat log full")
        assert len(app.event_lines) == EVENT_LINES and app.event_lines[-1].text.endswith(f"line {EVENT_LINES + 499}")
        assert len(app.hosts_seen.record("web-1").lines) == LINES and app.feed.dropped == 0
