"""`canary promote` and its preview find the canary's version the same way (Fleet.canary_version): the one
version its hosts report; none, or more than one, and promote refuses (changing nothing) and the preview
says so, with the same reason. Real engine; the versions come as the heartbeat reports them."""

from __future__ import annotations

import time
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthSample
from tests.conftest import kill_services
from tests.test_canary_console import canary_config


def _engine(tmp_path: Path) -> Engine:
    cfg = canary_config(tmp_path)
    text = cfg.read_text()
    cfg.write_text(text.replace("    role: canary\n    count: 1\n", "    role: canary\n    count: 2\n", 1))
    engine = Engine(load_config(cfg))
    engine.prepare()
    return engine


def _report(engine: Engine, **versions: str) -> None:
    for host, version in versions.items():
        engine.bus.emit(HealthSample(host=host.replace("_", "-"), ok=True, status=200, latency=0.002,
                                     version=version, at=time.time()))


async def test_canary_hosts_on_two_versions_or_none_refuse_promote_and_its_preview_says_why(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        assert engine.fleet.canary_hosts("itrust") == ["itrust-canary-1", "itrust-canary-2"]
        for versions, reported in (({}, "none"), ({"itrust_canary_1": "1a2b3c4", "itrust_canary_2": "0f0f0f0"},
                                                  "0f0f0f0, 1a2b3c4")):
            _report(engine, **versions)
            reason = f"cannot tell the canary's version (its hosts report {reported})"
            preview = await engine.preview(engine.parse("canary itrust promote"))
            assert preview.startswith(f"canary itrust promote: {reason}; promote will refuse\n"), preview
            outcome = await engine.execute(engine.parse("canary itrust promote"))
            assert not outcome.ok and reason in outcome.message, outcome.message
            assert engine.rollouts.journal.latest("itrust") is None  # nothing rolled

        _report(engine, itrust_canary_2="1a2b3c4", itrust_1="0f0f0f0", itrust_2="0f0f0f0")
        assert engine.fleet.canary_version("itrust") == "1a2b3c4"
        preview = await engine.preview(engine.parse("canary itrust promote"))
        assert preview.startswith("canary itrust promote: 1a2b3c4 (the canary's, on itrust-canary-1, "
                                  "itrust-canary-2) is rolled out to the stable pool (2 hosts)"), preview
    finally:
        await engine.close()
        kill_services(tmp_path / "state")
