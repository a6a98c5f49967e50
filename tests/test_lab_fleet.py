"""The whole console over the SSH lab: deploy, heartbeat through the jump host, a rolling update."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import HealthChanged
from tests.conftest import commit_file
from tests.lab import Lab
from tests.lab.config import write_lab_config

pytest_plugins = ["tests.lab.fixtures"]


async def test_deploy_heartbeat_and_roll_through_the_jump_host(lab: Lab, tmp_path: Path) -> None:
    engine = Engine.open(load_config(write_lab_config(tmp_path, lab)), heartbeat=True, watch_proxy=True)
    changes: list[HealthChanged] = []
    engine.bus.subscribe(lambda e: changes.append(e) if isinstance(e, HealthChanged) else None)
    names = [h.name for h in lab.apps]
    try:
        outcome = await engine.execute(engine.parse("deploy itrust"))
        assert outcome.ok, outcome.message
        await engine.start()
        outcome = await engine.execute(engine.parse("wait healthy itrust 20s"))
        assert outcome.ok, outcome.message
        first = engine.views[names[0]].version
        assert first and all(engine.views[n].version == first for n in names)
        # the app hosts are probed through the jump host: their addresses are not routable from here
        assert all(engine.monitor.states[n].healthy for n in names)

        # stop one host's app: the heartbeat sees it down within `fall` intervals, the others stay up
        victim = names[1]
        stopped = await engine.execute(engine.parse(f"run {victim} -- kill -TERM -$(cat run/itrust.pid)"))
        assert stopped.ok, stopped.message
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        down = await engine.execute(engine.parse(f"wait down {victim} 10s"))
        assert down.ok, down.message
        assert loop.time() - t0 < (3 + 2) * 0.3 + 1.5  # fall intervals, plus probe timeouts of slack
        assert [c.healthy for c in changes if c.host == victim][-1] is False
        assert all(engine.monitor.states[n].healthy for n in names if n != victim)

        # a rolling update brings every host, the stopped one included, to the new version
        sha = commit_file(tmp_path / "repo", "message.txt", "v2 over ssh\n", "v2")
        outcome = await engine.execute(engine.parse("roll itrust"))
        assert outcome.ok, outcome.message
        assert all(engine.views[n].version == sha[:7] for n in names)
        assert all(engine.monitor.states[n].healthy for n in names)
    finally:
        await engine.execute(engine.parse("stop itrust"))
        await engine.close()
