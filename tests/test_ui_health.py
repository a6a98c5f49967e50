"""One truth for health (issue 15, item 5): the fleet, its border, the heartbeat summary and the host detail all
derive from the monitor's verdict after fall/rise; a last probe that disagrees shows as flapping, a deploy's
failing probes as restarting, and "up" always comes with a latency.

Samples go through the engine's real monitor (`monitor.record`: the fall/rise state machine and the bus),
so the verdicts are the monitor's own, not the test's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import kill_services
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthSample, HostState
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.heartbeat import HeartbeatPane
from opsconsole.ui.host_detail import HostDetailScreen
from opsconsole.ui.testing import screen_text
from test_ui import make_engine, until

SIZE = (200, 40)  # wide enough for the whole rolling line
HOSTS = ("itrust-1", "itrust-2", "itrust-3")


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(tmp_path)  # fall 3, rise 2: the defaults
    yield engine
    kill_services(tmp_path / "state")


def probe(engine: Engine, host: str, ok: bool) -> None:
    engine.monitor.record(HealthSample(host=host, ok=ok, status=200 if ok else None, latency=0.004 if ok else None,
                                       error="" if ok else "connection refused", at=time.time()))


def cycle(engine: Engine) -> None:
    """The monitor's rolling line for this moment, made by the monitor from each host's last probe."""
    samples = [engine.monitor.states[h].last for h in HOSTS]
    engine.bus.emit(engine.monitor.cycle_event([s for s in samples if s is not None], lag=0.0, duration=0.01))


def cells(fleet: FleetPane, host: str) -> tuple[str, str]:
    return str(fleet.table.get_cell(host, "health")), str(fleet.table.get_cell(host, "ms"))


async def test_summary_fleet_border_and_detail_tell_one_story(engine: Engine) -> None:
    assert engine.config.heartbeat.fall == 3
    app = OpsConsoleApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.query_one(FleetPane)
        for host in HOSTS:
            probe(engine, host, True)
        # itrust-1 misses one probe: fall is 3, so it is up — and shown as flapping, everywhere.
        probe(engine, "itrust-1", False)
        # itrust-2 is being deployed and refuses connections: a restart, not an outage.
        engine.views["itrust-2"].activity = "deploying"
        engine.bus.emit(HostState(host="itrust-2", group="itrust", activity="deploying", detail="restart"))
        probe(engine, "itrust-2", False)
        cycle(engine)
        await until(pilot, lambda: cells(fleet, "itrust-1")[0] == "~ flap", what="itrust-1 flapping in the fleet")
        await until(pilot, lambda: cells(fleet, "itrust-2")[0] == "⟳ restart", what="itrust-2 restarting")
        assert cells(fleet, "itrust-3") == ("✔ up", "4ms")
        for host in HOSTS:  # "✔ up" never stands beside "-" ms
            health, ms = cells(fleet, host)
            assert not (health == "✔ up" and ms == "-"), (host, health, ms)
        heartbeat = app.query_one(HeartbeatPane)
        # The summary counts three up; no host's word says DOWN beside it. (Waited for: the fleet's cells are
        # made when read, so they can be current before the heartbeat pane has had its next flush.)
        line = "○ 3/3 up │ itrust-1:up~DOWN(1/3) itrust-2:up~DOWN(1/3) itrust-3:200"
        await until(pilot, lambda: line in screen_text(app), what="the heartbeat's cycle line")
        assert "3/3 up" in heartbeat.border_subtitle
        assert "✔3 up · ✘0 down" in fleet.border_subtitle

        # Two more failures: now the verdict is down, and every view says so.
        probe(engine, "itrust-1", False)
        probe(engine, "itrust-1", False)
        cycle(engine)
        await until(pilot, lambda: cells(fleet, "itrust-1")[0] == "✘ DOWN", what="itrust-1 down in the fleet")
        await until(pilot, lambda: "✔2 up · ✘1 down" in fleet.border_subtitle, what="the fleet border")
        await until(pilot, lambda: "○ 2/3 up, 1 down │ itrust-1:DOWN " in screen_text(app), what="the cycle line")

        # A deploy that failed on a host is counted in the border, not left as ✘0 beside a FAILED row.
        engine.views["itrust-3"].activity = "failed"
        engine.bus.emit(HostState(host="itrust-3", group="itrust", activity="failed", detail="exit code 2"))
        await until(pilot, lambda: "1 FAILED" in fleet.border_subtitle, what="FAILED in the border")

        # The detail view reads the same word as the row.
        while fleet.selected_host() != "itrust-2":
            await pilot.press("down")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), what="the host detail")
        assert "health ⟳ restart  latency -" in screen_text(app)
