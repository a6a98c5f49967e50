"""The heartbeat log belongs to the heartbeat: written whichever front end runs, bounded, private."""

from __future__ import annotations

import asyncio
import re
import stat
from pathlib import Path

import pytest

from opsconsole.cli.main import main
from opsconsole.config.model import HealthConfig, HeartbeatConfig
from opsconsole.events import EventBus, HeartbeatCycle, Message
from opsconsole.heartbeat.log import HeartbeatLog
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.heartbeat.probe import ProbeTarget
from opsconsole.heartbeat.rawhttp import RawProber
from opsconsole.hosts import Host
from tests.conftest import write_config
from tests.httpstub import SwitchableServer

STAMP = r"\d\d:\d\d:\d\d"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def log_of(cfg: Path) -> Path:
    return cfg.parent / "state" / "logs" / "heartbeat.log"


def test_headless_script_writes_the_heartbeat_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, count=2)
    script = tmp_path / "probe.ops"
    script.write_text("probe itrust-1\n")
    main(["--config", str(cfg), "--script", str(script)])  # the host is not running: the probe fails
    capsys.readouterr()
    log = log_of(cfg)
    lines = log.read_text().splitlines()
    assert lines and re.fullmatch(rf"{STAMP} ✘ itrust-1 +--- +- .*refused.*", lines[0]), lines
    assert any(re.match(rf"{STAMP} ▼ itrust-1 +DOWN", line) for line in lines), lines
    assert mode(log) == 0o600


def test_heartbeat_subcommand_writes_the_heartbeat_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, count=2)
    assert main(["heartbeat", "--count", "2", "--config", str(cfg)]) == 0
    capsys.readouterr()
    lines = log_of(cfg).read_text().splitlines()
    cycles = [line for line in lines if re.fullmatch(rf"{STAMP} ○ 0/2 up, 2 down │ itrust-\d:DOWN itrust-\d:DOWN", line)]
    assert len(cycles) >= 2, lines
    assert sum(1 for line in lines if " ✘ itrust-1 " in line) >= 2
    assert mode(log_of(cfg)) == 0o600


async def test_monitor_writes_every_probe_verdict_and_cycle(tmp_path: Path) -> None:
    servers = [await SwitchableServer(version="v7").start() for _ in range(2)]
    check = HealthConfig(path="/health", status=200, timeout=0.5)
    targets = [ProbeTarget(Host(name=f"web-{i}", group="web", address="127.0.0.1", port=s.port), check)
               for i, s in enumerate(servers)]
    bus = EventBus()
    cycles: list[HeartbeatCycle] = []
    bus.subscribe(lambda e: cycles.append(e) if isinstance(e, HeartbeatCycle) else None)
    path = tmp_path / "logs" / "heartbeat.log"
    config = HeartbeatConfig(interval=0.1, timeout=0.5, log_file=path)
    prober = RawProber()
    monitor = HeartbeatMonitor(bus, prober, targets, config)
    task = asyncio.ensure_future(monitor.run())
    try:
        while len(cycles) < 2:
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await prober.aclose()
        for s in servers:
            await s.close()
    lines = path.read_text().splitlines()
    assert re.fullmatch(rf"{STAMP} ✔ web-\d +200 +\d+ms v7", lines[0]), lines
    assert any(re.fullmatch(rf"{STAMP} ▲ web-0 +UP", line) for line in lines), lines
    assert sum(1 for line in lines if re.fullmatch(rf"{STAMP} ○ 2/2 up │ web-\d:200 web-\d:200", line)) >= 2
    assert mode(path) == 0o600


def test_log_is_bounded_and_private(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "heartbeat.log"
    path.parent.mkdir()
    path.write_text("from an older console\n")
    path.chmod(0o644)
    log = HeartbeatLog(path, max_bytes=1000)
    line = "12:00:00 ✔ web-1          200   3ms v1"
    for _ in range(200):
        log.write([line])
    log.close()
    rotated = path.with_name("heartbeat.log.1")
    assert path.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["heartbeat.log", "heartbeat.log.1"]
    assert set(path.read_text().splitlines()) == {line}
    assert mode(path) == 0o600 and mode(rotated) == 0o600


def test_a_log_that_cannot_be_written_is_reported_once_and_the_monitor_goes_on(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the directory should be")
    said: list[str] = []
    log = HeartbeatLog(tmp_path / "logs" / "heartbeat.log", on_error=said.append)
    log.write(["one"])
    log.write(["two"])
    assert len(said) == 1 and "heartbeat log" in said[0]


def test_monitor_reports_an_unwritable_log_as_a_warning(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the directory should be")
    bus = EventBus()
    said: list[Message] = []
    bus.subscribe(lambda e: said.append(e) if isinstance(e, Message) else None)
    config = HeartbeatConfig(log_file=tmp_path / "logs" / "heartbeat.log")
    monitor = HeartbeatMonitor(bus, RawProber(), [], config)
    from opsconsole.events import HealthSample

    for _ in range(3):
        monitor.record(HealthSample(host="web-0", ok=True, status=200, latency=0.001))
    assert [m.level for m in said] == ["warning"] and "heartbeat log" in said[0].text
