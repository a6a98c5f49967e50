"""Snapshots of the main screen in each theme at 120x36, and at 80x24 (pytest-textual-snapshot).

Deterministic on purpose: fixed ports, no background probes, events with fixed
timestamps in UTC, builds already finished (no ticking durations). Update with
`pytest tests/test_ui_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from conftest import PLAYBOOKS
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import BuildUpdate, HealthChanged, HealthSample, HostState
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane

T0 = 1_700_000_000.0


def fixed_engine(tmp_path: Path, theme: str) -> Engine:
    cfg = tmp_path / "opsconsole.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: snap
        state_dir: {tmp_path / 'state'}
        theme: {theme}
        groups:
          itrust:
            provider: local
            role: app
            count: 5
            base_port: 18080
        apps:
          itrust:
            group: itrust
            repo: {tmp_path / 'repo'}
            build:
              commands: [sh build.sh]
              artifact: dist/app.tar.gz
            deploy:
              playbook: {PLAYBOOKS / 'itrust-deploy.yml'}
        """))
    return Engine(load_config(cfg))


def fleet_story(engine: Engine) -> None:
    """A fleet mid-rollout: three hosts on the new version, one deploying, one down."""
    bus = engine.bus
    for i, name in enumerate(("itrust-1", "itrust-2", "itrust-3")):
        bus.emit(HealthSample(host=name, ok=True, status=200, latency=0.003 + i / 1000, version="a1b2c3d", at=T0 + i))
    bus.emit(HealthSample(host="itrust-5", ok=False, status=None, latency=None, error="connection refused", at=T0 + 3))
    bus.emit(HealthChanged(host="itrust-5", healthy=False, reason="connection refused", at=T0 + 4))
    engine.views["itrust-4"].activity = "deploying"
    bus.emit(HostState(host="itrust-4", group="itrust", activity="deploying", detail="unpack", at=T0 + 5))
    bus.emit(BuildUpdate(build_id="b0001", app="itrust", commit="0f9e8d7c6b", status="failed", author="ana",
                         duration=8.0, message="exit code 2", at=T0 - 100))
    bus.emit(BuildUpdate(build_id="b0002", app="itrust", commit="a1b2c3d4e5", status="succeeded", author="bo",
                         subject="fix login", duration=12.0, at=T0 - 50))


def snapshot(theme: str, size: tuple[int, int], tmp_path: Path, snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("NO_COLOR", raising=False)
    time.tzset()
    engine = fixed_engine(tmp_path, theme)
    app = OpsConsoleApp(engine)

    async def run_before(pilot) -> None:
        fleet_story(engine)
        await pilot.pause(app.flush_seconds * 2 + app.query_one(FleetPane).refresh_seconds)
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=size, run_before=run_before)
    finally:
        time.tzset()


@pytest.mark.parametrize("theme", ["dark", "light", "mono"])
def test_main_screen(theme: str, tmp_path: Path, snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each theme at 120x36, where every fleet column fits."""
    snapshot(theme, (120, 36), tmp_path, snap_compare, monkeypatch)


def test_main_screen_at_80x24(tmp_path: Path, snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest screen the console is for: the fleet marks the columns it cannot show."""
    snapshot("dark", (80, 24), tmp_path, snap_compare, monkeypatch)
