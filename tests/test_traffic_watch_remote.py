"""The proxy watch with `proxy.host` set: one state fetch per poll serves both the restart check and the
report, and a restarted proxy still gets the operator's weights back.

A real embedded proxy on loopback stands in for the one on the proxy host: the console reaches it through
an EmbeddedDriver given to the traffic service in place of the SSH forward (the forward is the lab's to
test: tests/test_ssh_proxy_host_console.py). The driver counts the state fetches it makes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine import traffic_service
from opsconsole.engine.engine import Engine
from opsconsole.events import CanaryState, Message
from opsconsole.traffic.base import TrafficState
from opsconsole.traffic.embedded import EmbeddedDriver
from tests.conftest import kill_services
from tests.test_canary_console import canary_config
from tests.test_zero_drop import TOKEN, start_proxy, stop


class CountingDriver(EmbeddedDriver):
    def __init__(self, admin: str, token: str) -> None:
        super().__init__(admin, token)
        self.fetches = 0

    async def state(self) -> TrafficState:
        self.fetches += 1
        return await super().state()


def _heard(cfg: Path) -> tuple[Engine, list[CanaryState], list[str]]:
    """An engine on `cfg`, and the split reports and the lines it says, as they come."""
    engine = Engine(load_config(cfg))
    engine.prepare()
    reports: list[CanaryState] = []
    said: list[str] = []
    engine.bus.subscribe(lambda e: reports.append(e) if isinstance(e, CanaryState) else None)
    engine.bus.subscribe(lambda e: said.append(e.text) if isinstance(e, Message) else None)
    return engine, reports, said


async def _watch_until(engine: Engine, condition, what: str, seconds: float = 15.0) -> None:
    """Run the watch until `condition()` holds, then stop it."""
    watch = asyncio.ensure_future(engine.traffic.watch())
    try:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"not within {seconds:g}s: {what}"
            assert not watch.done(), watch
            await asyncio.sleep(0.02)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_the_watch_fetches_a_remote_proxys_state_once_per_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = canary_config(tmp_path)
    console = tmp_path / "console.yaml"  # the console's view: the proxy runs on the inventory host itrust-1
    console.write_text(cfg.read_text().replace("proxy:\n  driver: embedded\n",
                                               "proxy:\n  driver: embedded\n  host: itrust-1\n", 1))
    monkeypatch.setattr(traffic_service, "STATE_POLL", 0.05)
    engine, reports, said = _heard(console)
    proxy, _ = start_proxy(cfg, tmp_path)
    try:
        driver = CountingDriver(f"unix:{tmp_path / 'admin.sock'}", TOKEN)
        engine.traffic._driver = driver
        steered = await engine.execute(engine.parse("canary itrust weight 30"))
        assert steered.ok, steered.message

        before = driver.fetches
        await _watch_until(engine, lambda: len(reports) >= 10, "ten polls reported")
        polls = len(reports)  # each poll reports the one fronted app once
        assert driver.fetches - before <= polls + 1, f"{driver.fetches - before} state fetches for {polls} polls"
        assert {r.configured_weight for r in reports} == {30}

        # The proxy restarts (with the config's 0%): the first poll's one fetch sees the new process, the
        # weight goes back, and the report shows it (fetched again after the change, not the stale 0%).
        stop(proxy)
        proxy, _ = start_proxy(cfg, tmp_path)
        reports.clear()
        await _watch_until(engine, lambda: len(reports) >= 3, "three polls after the restart")
        assert any("restarted" in s and "set back to 30%" in s for s in said), said
        assert [r.configured_weight for r in reports] == [30, 30, 30], reports
    finally:
        stop(proxy)
        await engine.close()
        kill_services(tmp_path / "state")


async def test_the_watch_says_an_alert_or_a_panic_once_as_it_turns_and_prints_no_line_per_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--watch` printed a bare "HH:MM:SS CanaryState" line every second, and never said the alert latched.
    Nothing is deployed here: every member is down, so stable is in panic and a canary at 30% latches."""
    from opsconsole.event_lines import format_event

    cfg = canary_config(tmp_path)
    monkeypatch.setattr(traffic_service, "STATE_POLL", 0.05)
    engine, reports, said = _heard(cfg)
    proxy, _ = start_proxy(cfg, tmp_path)
    try:
        steered = await engine.execute(engine.parse("canary itrust weight 30"))
        assert steered.ok, steered.message
        await _watch_until(engine, lambda: len(reports) >= 10 and reports[-1].alert is not None,
                           "ten polls, the alert latched")
        assert [s for s in said if "canary alert:" in s] == [f"itrust: canary alert: {reports[-1].alert}; "
                                                             "everything goes to stable"], said
        assert len([s for s in said if "panic in stable" in s]) == 1, said
        assert all(format_event(r) is None for r in reports)
    finally:
        stop(proxy)
        await engine.close()
        kill_services(tmp_path / "state")
