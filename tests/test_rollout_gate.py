"""The rollout's health gate honours the heartbeat's `rise`: `rise` good answers in a row, not one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthSample
from tests.conftest import commit_file, kill_services, write_config

# A release that breaks right after it starts: /health answers 200 twice (the deploy playbook's own
# health check takes the first), then 500 for good.
BREAKS_AFTER_TWO = '''
ANSWERED = [0]
_get = Handler.do_GET


def do_GET(self):
    if self.path.startswith("/health"):
        ANSWERED[0] += 1
        if ANSWERED[0] > 2:
            self._respond(500, b'{"status": "broke after starting"}\\n')
            return
    _get(self)


Handler.do_GET = do_GET
'''


async def test_one_good_answer_does_not_pass_the_gate_when_rise_is_two(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=1)
    cfg.write_text(cfg.read_text().replace("    vars:\n", "    rollout:\n      health_timeout: 2s\n    vars:\n", 1))
    engine = Engine(load_config(cfg))
    engine.prepare()
    samples: list[HealthSample] = []
    engine.bus.subscribe(lambda e: samples.append(e) if isinstance(e, HealthSample) else None)
    try:
        repo = tmp_path / "repo"
        app = (repo / "app.py").read_text()
        main = app.index("\ndef main()")
        commit_file(repo, "app.py", app[:main] + BREAKS_AFTER_TWO + app[main:], "a release that breaks after starting")
        assert engine.monitor.states["itrust-1"].rise == 2
        async with asyncio.timeout(60):
            outcome = await engine.execute(engine.parse("roll itrust"))
        assert not outcome.ok, outcome.message
        assert "itrust-1: health gate: not healthy after 2s: status 500" in outcome.message, outcome.message
        # It did answer healthy with the new version once: that alone used to pass the gate.
        assert samples[0].ok and samples[0].version == engine.views["itrust-1"].version, samples[:2]
        assert not samples[1].ok
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_a_healthy_release_passes_the_gate_after_rise_answers(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=2)
    engine = Engine(load_config(cfg))
    engine.prepare()
    samples: list[HealthSample] = []
    engine.bus.subscribe(lambda e: samples.append(e) if isinstance(e, HealthSample) else None)
    try:
        async with asyncio.timeout(60):
            outcome = await engine.execute(engine.parse("roll itrust --batch 100%"))
        assert outcome.ok, outcome.message
        for host in ("itrust-1", "itrust-2"):
            mine = [s for s in samples if s.host == host]
            assert len(mine) >= 2 and all(s.ok for s in mine[-2:]), mine
    finally:
        await engine.close()
        kill_services(tmp_path / "state")
