"""What the console keeps per host for the detail screen: bounded, in order, and cheap for the garbage collector."""

from __future__ import annotations

import gc
from pathlib import Path

from textual.widgets import Static

from conftest import kill_services
from opsconsole.events import HealthChanged, HealthSample, HostState, Message, OutputLine, TaskFinished
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.history import LINES, SAMPLES, HostHistory
from opsconsole.ui.host_detail import HostDetailScreen
from test_ui import SIZE, make_engine, until


def probe(i: int) -> HealthSample:
    ok = i % 7 != 3
    return HealthSample(host="web-1", ok=ok, status=200 if ok else None, latency=i / 1000 if ok else None,
                        version=f"v{i}", error="" if ok else f"refused {i}", at=1_000_000.0 + i)


def test_history_keeps_the_last_lines_and_samples_of_each_host_in_order() -> None:
    history = HostHistory()
    history.add([OutputLine(host="web-1", line=f"line {i}", at=float(i)) for i in range(LINES + 30)])
    history.add([
        OutputLine(host="web-1", line="oops", stream="stderr", at=500.0),
        TaskFinished(host="web-1", task="unpack", status="failed", duration=0.1, message="disk full", at=501.0),
        TaskFinished(host="web-1", task="restart", status="changed", duration=0.1, at=502.0),
        HostState(host="web-1", group="web", activity="deploying", version="abc", detail="unpack", at=503.0),
        HealthChanged(host="web-1", healthy=False, reason="3 failed probes", at=504.0),
        Message(text="web-1 drained", level="warning", host="web-1", at=505.0),
        Message(text="not about a host", level="error", at=506.0),
        OutputLine(host="web-2", line="other host", at=507.0),
    ])
    history.add([probe(i) for i in range(SAMPLES + 10)])

    record = history.record("web-1")
    assert len(record.lines) == LINES
    assert list(record.lines)[:2] == [(36.0, "| line 36", ""), (37.0, "| line 37", "")]
    assert list(record.lines)[-6:] == [
        (500.0, "| oops", "warn"),
        (501.0, "failed  unpack: disk full", "bad"),
        (502.0, "changed restart", "busy"),
        (503.0, "now deploying abc — unpack", "dim"),
        (504.0, "▼ DOWN: 3 failed probes", "bad"),
        (505.0, "web-1 drained", "warn"),
    ]
    samples = record.samples
    assert len(samples) == SAMPLES and [s.version for s in samples] == [f"v{i}" for i in range(10, SAMPLES + 10)]
    failed = samples[17 - 10]  # probe 17: 17 % 7 == 3
    assert (failed.at, failed.ok, failed.status, failed.latency, failed.error) == (1_000_017.0, False, None, None,
                                                                                     "refused 17")
    assert list(history.record("web-2").lines) == [(507.0, "| other host", "")]


def test_a_hosts_history_is_one_object_for_the_garbage_collector() -> None:
    # A full collection walks every tracked container item by item: at 2,000 hosts the kept lines and samples
    # (260,000 entries) made it tens of milliseconds, the tail of the console's key-to-screen latency.
    history = HostHistory()
    for round_ in range(3):
        history.add([OutputLine(host=f"h{i}", line=f"step {round_}") for i in range(50)]
                    + [probe(i) for i in range(5)])
    gc.collect()
    gc.collect()  # (a collection may see the outer tuple before the lines in it)
    record = history.record("web-1")
    assert len(record.samples) == 15 and len(history.record("h7").lines) == 3
    assert not gc.is_tracked(history.record("h7").lines) and not gc.is_tracked(record.rows)


async def test_host_detail_shows_the_last_lines_and_probes(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    try:
        app = OpsConsoleApp(engine)
        async with app.run_test(size=SIZE) as pilot:
            host = "itrust-1"
            for i in range(LINES + 30):
                engine.bus.emit(OutputLine(host=host, line=f"line {i}"))
            for i in range(SAMPLES + 10):
                engine.bus.emit(HealthSample(host=host, ok=i != 35, status=200 if i != 35 else None, latency=0.004,
                                             version=f"v{i}", error="" if i != 35 else "connection refused"))
            await until(pilot, lambda: len(app.hosts_seen.record(host).samples) == SAMPLES, what="the probes kept")
            await pilot.press("slash", *host, "enter")  # the operator's way there: find the host, open it
            assert app.query_one(FleetPane).selected_host() == host
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), what="the host detail")
            screen = app.screen
            output = str(screen.query_one("#host-output", Static).content)
            beats = str(screen.query_one("#host-heartbeat", Static).content)
            shown = [line.split(" ", 1)[1] for line in output.splitlines()[1:]]
            assert shown == [f"| line {i}" for i in range(LINES, LINES + 30)]  # the last 30 of the last 100
            rows = beats.splitlines()[1:]
            assert len(rows) == 20 and [row.split()[-1] for row in rows if "✔" in row] == [
                f"v{i}" for i in range(SAMPLES - 10, SAMPLES + 10) if i != 35]
            assert any("✘ --- " in row and row.endswith("connection refused") for row in rows)
    finally:
        kill_services(tmp_path / "state")
