"""Heartbeat against real HTTP servers on loopback: fall/rise, no flapping, timeouts, history, alerts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path

import pytest

from opsconsole.config.model import HealthConfig, HeartbeatConfig
from opsconsole.events import EventBus, HealthChanged, HealthSample, HeartbeatCycle
from opsconsole.heartbeat.monitor import HeartbeatMonitor
from opsconsole.heartbeat.probe import Prober, ProbeTarget
from opsconsole.heartbeat.rawhttp import RawProber
from opsconsole.hosts import Host
from tests.httpstub import SwitchableServer

INTERVAL = 0.15


class Recorder:
    def __init__(self, bus: EventBus) -> None:
        self.events: list = []
        bus.subscribe(self.events.append)

    def samples(self, host: str) -> list[HealthSample]:
        return [e for e in self.events if isinstance(e, HealthSample) and e.host == host]

    def changes(self, host: str) -> list[HealthChanged]:
        return [e for e in self.events if isinstance(e, HealthChanged) and e.host == host]

    async def wait_change(self, host: str, healthy: bool, count: int, timeout: float = 10.0) -> None:
        async def poll() -> None:
            while len([c for c in self.changes(host) if c.healthy == healthy]) < count:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(poll(), timeout)

    def cycles(self) -> int:
        return sum(isinstance(e, HeartbeatCycle) for e in self.events)

    async def wait_cycles(self, count: int, timeout: float = 10.0) -> None:
        """Until the monitor has finished `count` cycles in all."""
        async with asyncio.timeout(timeout):
            while self.cycles() < count:
                await asyncio.sleep(0.01)


PROBERS = {"httpx": Prober, "raw": RawProber}


@contextlib.asynccontextmanager
async def running(monitor: HeartbeatMonitor, prober: Prober, servers: list[SwitchableServer]):
    """The monitor probing in the background; stopped, and every server closed, whatever the test did."""
    task = asyncio.ensure_future(monitor.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await prober.aclose()
        for s in servers:
            await s.close()


async def _fleet(n: int, tmp_path: Path, prober_kind: str = "raw", *, timeout: float = 0.1,
                 interval: float = INTERVAL, **hb: object):
    servers = [await SwitchableServer().start() for _ in range(n)]
    check = HealthConfig(path="/health", status=200, timeout=timeout)
    targets = [ProbeTarget(Host(name=f"web-{i}", group="web", address="127.0.0.1", port=s.port), check)
               for i, s in enumerate(servers)]
    bus = EventBus()
    rec = Recorder(bus)
    prober = PROBERS[prober_kind]()
    config = HeartbeatConfig(interval=interval, timeout=timeout, fall=3, rise=2, **hb)  # type: ignore[arg-type]
    monitor = HeartbeatMonitor(bus, prober, targets, config, change_log=tmp_path / "changes.jsonl")
    return servers, monitor, rec, prober


@pytest.mark.parametrize("kind", sorted(PROBERS))
@pytest.mark.parametrize("failure", ["error", "closed", "hang"])
async def test_down_after_fall_failures_and_up_after_rise(tmp_path: Path, failure: str, kind: str) -> None:
    servers, monitor, rec, prober = await _fleet(3, tmp_path, kind)
    async with running(monitor, prober, servers):
        for i in range(3):
            await rec.wait_change(f"web-{i}", True, 1)
        before = len(rec.samples("web-1"))
        await servers[1].set_mode(failure)
        await rec.wait_change("web-1", False, 1)
        after = rec.samples("web-1")[before:]
        # exactly `fall` consecutive failures brought it down — not one, not two
        down_at = next(i for i, e in enumerate(after) if not e.ok)
        failures_until_down = [s for s in after[down_at:] if not s.ok]
        assert len(failures_until_down) >= 3
        change = rec.changes("web-1")[-1]
        first_failure = after[down_at]
        third_failure = failures_until_down[2]
        assert first_failure.at < third_failure.at <= change.at
        assert change.reason  # says why: status, refused, timed out
        if failure == "hang":
            assert "timed out" in change.reason
        # the others never changed
        assert [c.healthy for c in rec.changes("web-0")] == [True]
        assert [c.healthy for c in rec.changes("web-2")] == [True]
        n_before_up = len(rec.samples("web-1"))
        await servers[1].set_mode("ok")
        await rec.wait_change("web-1", True, 2)
        oks = [s for s in rec.samples("web-1")[n_before_up:] if s.ok]
        assert len(oks) >= 2
        log = [json.loads(line) for line in (tmp_path / "changes.jsonl").read_text().splitlines()]
        assert [(e["host"], e["healthy"]) for e in log if e["host"] == "web-1"] == [("web-1", True), ("web-1", False), ("web-1", True)]


async def test_single_failure_does_not_flap(tmp_path: Path) -> None:
    servers, monitor, rec, prober = await _fleet(2, tmp_path)
    async with running(monitor, prober, servers):
        await rec.wait_change("web-0", True, 1)
        servers[0].fail_next = 2  # two failures in a row, fall is 3
        while servers[0].fail_next:
            await asyncio.sleep(0.02)
        # Both failures answered; had they counted as three, the change would come within these cycles.
        await rec.wait_cycles(rec.cycles() + 4)
        assert any(not s.ok for s in rec.samples("web-0"))
        assert [c.healthy for c in rec.changes("web-0")] == [True]


async def test_cycle_line_shows_the_verdict_it_counts_and_a_flapping_probe_as_such(tmp_path: Path) -> None:
    """Issue 15 item 5: "8/8 up │ itrust-1:DOWN" — the count was of verdicts, the host's word a raw probe."""
    servers, monitor, rec, prober = await _fleet(2, tmp_path)
    async with running(monitor, prober, servers):
        await rec.wait_change("web-0", True, 1)
        await rec.wait_change("web-1", True, 1)
        servers[0].fail_next = 2  # two failures in a row, fall is 3: still up, but flapping
        while servers[0].fail_next:
            await asyncio.sleep(0.02)
        await rec.wait_cycles(rec.cycles() + 3)
    cycles = [e for e in rec.events if isinstance(e, HeartbeatCycle)]
    for cycle in cycles:
        # Every host's word starts with its verdict, and the verdicts add up to the count beside them.
        up_words = [status for _, status in cycle.statuses
                    if status.startswith("up~") or (status == "200")]  # the check expects 200
        assert len(up_words) == cycle.up, cycle
    flapping = [status for c in cycles for host, status in c.statuses if host == "web-0" and "~" in status]
    assert flapping and all(re.fullmatch(r"up~(DOWN|timeout|500)\([12]/3\)", s) for s in flapping), flapping
    assert [c.healthy for c in rec.changes("web-0")] == [True]


async def test_slow_host_does_not_delay_others_and_history_is_bounded(tmp_path: Path) -> None:
    # The hung host's probe takes its whole timeout, 1 s, over three intervals of 0.3 s: a monitor that waited
    # on it would start every cycle 0.7 s late. (With a 0.1 s timeout, a healthy probe held up 0.1 s by a busy
    # machine failed the test while proving nothing.)
    servers, monitor, rec, prober = await _fleet(4, tmp_path, timeout=1.0, interval=0.3, history=5)
    await servers[0].set_mode("hang")
    async with running(monitor, prober, servers):
        t0 = time.monotonic()
        await rec.wait_cycles(5)
        # Five cycles come in ~1.5 s; a monitor that waited for the hung probe would take 5 s (its lag would
        # not show it: a cycle that far behind is skipped, and the next one is on time).
        took = time.monotonic() - t0
        assert took < 2.5, f"5 cycles of 0.3 s took {took:.2f}s"
        # healthy hosts answered every cycle, in well under the hung host's timeout
        for name in ("web-1", "web-2", "web-3"):
            samples = rec.samples(name)
            assert len(samples) >= 5 and all(s.ok for s in samples)
            assert max(s.latency for s in samples) < 0.25
        assert len(monitor.states["web-1"].history) == 5
        assert max(monitor.cycle_lags) < 0.25


async def test_alert_command_gets_event_json(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    servers, monitor, rec, prober = await _fleet(1, tmp_path, alert_command=f"cat >> {out}; echo >> {out}")
    async with running(monitor, prober, servers):
        await rec.wait_change("web-0", True, 1)
        await servers[0].set_mode("closed")
        await rec.wait_change("web-0", False, 1)
        await monitor.alerts.drain()
        alerts = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        assert [(a["event"], a["host"], a["healthy"]) for a in alerts] == [
            ("HealthChanged", "web-0", True), ("HealthChanged", "web-0", False)]


async def test_raw_prober_reads_version_and_status(tmp_path: Path) -> None:
    server = await SwitchableServer(version="abc1234").start()
    prober = RawProber()
    target = ProbeTarget(Host(name="a", group="g", address="127.0.0.1", port=server.port),
                         HealthConfig(path="/health", status=200, timeout=0.5, body='"status": "ok"'))
    try:
        sample = await prober.probe(target)
        assert (sample.ok, sample.status, sample.version) == (True, 200, "abc1234")
        await server.set_mode("error")
        sample = await prober.probe(target)
        assert (sample.ok, sample.status, sample.error) == (False, 500, "status 500, expected 200")
        assert (server.requests, server.connections) == (2, 1)  # one kept-alive connection answered both
    finally:
        await prober.aclose()
        await server.close()


async def test_tcp_probe(tmp_path: Path) -> None:
    server = await SwitchableServer().start()
    prober = Prober()
    host = Host(name="db1", group="db", address="127.0.0.1", port=None)
    check = HealthConfig(kind="tcp", port=server.port, timeout=0.5)
    try:
        assert (await prober.probe(ProbeTarget(host, check))).ok
        await server.close()
        sample = await prober.probe(ProbeTarget(host, check))
        assert not sample.ok and "refused" in sample.error.lower()
    finally:
        await prober.aclose()


async def test_alert_webhook_gets_event_json(tmp_path: Path) -> None:
    received: list[dict] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        received.append({"request": head.split(b"\r\n")[0].decode(), **json.loads(await reader.readexactly(length))})
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    hook = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{hook.sockets[0].getsockname()[1]}/pager"
    servers, monitor, rec, prober = await _fleet(1, tmp_path, alert_webhook=url)
    async with running(monitor, prober, servers):
        await rec.wait_change("web-0", True, 1)
        await servers[0].set_mode("error")
        await rec.wait_change("web-0", False, 1)
        await monitor.alerts.drain()
        assert [(r["request"], r["host"], r["healthy"]) for r in received] == [
            ("POST /pager HTTP/1.1", "web-0", True), ("POST /pager HTTP/1.1", "web-0", False)]
        assert "status 500" in received[-1]["reason"]
    hook.close()


def test_the_monitor_alone_never_builds_or_deploys(tmp_path: Path) -> None:
    """`opsconsole heartbeat` while a commit lands on a polled branch: it probes, and starts no build."""
    import subprocess
    import sys

    from opsconsole.builds.runner import BuildStore
    from opsconsole.demo.repo import ensure_demo_repo
    from tests.conftest import ROOT, commit_file, kill_services, write_config

    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("    branch: production\n", "    branch: production\n    poll_interval: 0.1s\n"))
    ensure_demo_repo(tmp_path / "repo", "production")  # what the console's start-up makes of `demo_repo: true`
    proc = subprocess.Popen([sys.executable, "-m", "opsconsole", "heartbeat", "--config", str(cfg), "--count", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        first = proc.stdout.readline()
        assert "itrust-1" in first, first + proc.stderr.read()
        commit_file(tmp_path / "repo", "message.txt", "pushed while the monitor runs\n", "v2")
        out, err = proc.communicate(timeout=60)  # five more cycles (2.5s): the poller would have seen it 20 times
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_services(tmp_path / "state")
    assert proc.returncode == 0, err
    cycles = [line for line in out.splitlines() if "itrust-1" in line and "is now" not in line]
    assert len(cycles) >= 5, out  # the cycles after the commit ran
    assert BuildStore(tmp_path / "state").records() == []
    assert not (tmp_path / "state" / "journal.jsonl").exists() or "command.start" not in \
        (tmp_path / "state" / "journal.jsonl").read_text()
    assert not (tmp_path / "state" / "rollouts").exists() or not list((tmp_path / "state" / "rollouts").iterdir())


async def test_an_engine_opened_for_the_heartbeat_starts_it_and_nothing_else(tmp_path: Path) -> None:
    """What `opsconsole heartbeat` starts: probes only; no branch poller, no proxy watch (it re-applies weights)."""
    from opsconsole.config.loader import load_config
    from opsconsole.demo.repo import ensure_demo_repo
    from opsconsole.engine.engine import Engine
    from opsconsole.events import Event, Message
    from tests.conftest import write_config
    from tests.test_zero_drop import proxy_section

    cfg = write_config(tmp_path, extra=proxy_section(tmp_path))
    cfg.write_text(cfg.read_text().replace("    branch: production\n", "    branch: production\n    poll_interval: 0.1s\n"))
    ensure_demo_repo(tmp_path / "repo", "production")

    async def started(how: str) -> list[Event]:
        console = how == "background"  # what the console asks for, else what `opsconsole heartbeat` asks for
        engine = Engine.open(load_config(cfg), heartbeat=True, poll=console, watch_proxy=console)
        events: list[Event] = []
        engine.bus.subscribe(events.append)
        await engine.start()
        try:
            async with asyncio.timeout(10):
                while sum(isinstance(e, HeartbeatCycle) for e in events) < 3:
                    await asyncio.sleep(0.02)
        finally:
            await engine.close()
        return [e for e in events if not isinstance(e, (HealthSample, HealthChanged, HeartbeatCycle))]

    # The whole console's background work says so at once: the poller saw the branch, the proxy watch its proxy.
    said = [e.text for e in await started("background") if isinstance(e, Message)]
    assert any("production moved to" in t for t in said) and any(t.startswith("proxy:") for t in said), said
    assert await started("monitor") == []


@pytest.mark.parametrize("kind", sorted(PROBERS))
async def test_a_host_that_cannot_be_probed_is_down_with_the_reason_and_the_others_go_on(tmp_path: Path,
                                                                                         kind: str) -> None:
    """A port out of range raised out of one probe and ended every cycle: the heartbeat never reported again."""
    servers, monitor, rec, prober = await _fleet(2, tmp_path, prober_kind=kind)
    good = list(monitor.targets.values())
    monitor.set_targets([*good, ProbeTarget(Host(name="web-bad", group="web", address="127.0.0.1", port=70000),
                                            good[0].check)])
    async with running(monitor, prober, servers):
        await rec.wait_cycles(3)
        await rec.wait_change("web-bad", False, 1)
    assert all(s.ok for s in rec.samples("web-0")) and len(rec.samples("web-0")) >= 3
    assert "cannot probe" in rec.samples("web-bad")[-1].error


def test_heartbeat_refuses_a_negative_count_and_stops_on_sigterm_like_ctrl_c(tmp_path: Path) -> None:
    """`--count -5` ran one cycle and stopped; SIGTERM gave 143 where --script and --watch give 130."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, write_config

    cfg = write_config(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "opsconsole", "heartbeat", "--config", str(cfg), "--count", "-5"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "not a number of cycles" in bad.stderr, bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "opsconsole", "heartbeat", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert "itrust-1" in proc.stdout.readline()  # running: a cycle printed
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
