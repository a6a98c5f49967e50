"""An engine whose one build has failed at a known step: for the console tests of a failed build."""

from __future__ import annotations

from pathlib import Path

from conftest import write_config
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine

FAILING_STEP = "echo linking; exit 3"  # the build's second command: prints `linking`, exits 3


async def failed_build_engine(tmp_path: Path) -> Engine:
    """A prepared engine over write_config's fleet whose `build itrust` has run and failed at FAILING_STEP."""
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("commands: [sh build.sh]", f"commands: [sh build.sh, \"{FAILING_STEP}\"]"))
    engine = Engine(load_config(cfg))
    engine.prepare()
    outcome = await engine.execute(engine.parse("build itrust"))
    assert not outcome.ok
    return engine
