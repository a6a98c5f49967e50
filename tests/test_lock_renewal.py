"""FleetLock.keep_renewed, the one renewal loop of SSH rolls and kube rolls: it renews while the work goes
on, and when the lock is lost (released or taken over) it says why and stops the work at once.

Real lock script on a real local host; the rollout test drives a real roll of real processes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import RolloutStep
from opsconsole.hosts import Host
from opsconsole.rollouts.lock import FleetLock, LockLost
from opsconsole.transport.local import LocalTransport
from tests.conftest import commit_file, kill_services, write_config
from tests.kubecontroller import StandInDeploymentController
from tests.kubelab import kube_api, write_kubeconfig
from tests.test_kube_roll import _lab_config


async def _until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"not within {seconds:g}s: {what}"
        await asyncio.sleep(0.05)


async def test_keep_renewed_renews_then_stops_its_owner_when_the_lock_is_lost(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    lock = FleetLock(transport, "itrust", "me@here", ttl=60)
    await lock.acquire("roll itrust")
    first = (await lock.status()).renewed
    owner = asyncio.ensure_future(asyncio.Event().wait())  # the work the lock protects
    lost: list[Exception] = []
    renewer = asyncio.ensure_future(lock.keep_renewed(0.1, owner, lost.append))

    async def renewed() -> bool:
        return (await lock.status()).renewed > first

    await _until(renewed, "the lock renewed")
    assert not owner.done() and not lost  # renewing while ours leaves the work alone

    await FleetLock(transport, "itrust", "operator@elsewhere").force_release()  # `lock release itrust`
    async with asyncio.timeout(10):
        await renewer
    assert len(lost) == 1 and isinstance(lost[0], LockLost), lost
    assert "no longer ours" in str(lost[0])
    await asyncio.wait([owner], timeout=5)
    assert owner.cancelled(), "the work under a lost lock went on"


async def test_cancelling_keep_renewed_leaves_its_owner_running(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    lock = FleetLock(transport, "itrust", "me@here", ttl=60)
    await lock.acquire("roll itrust")
    owner = asyncio.ensure_future(asyncio.Event().wait())
    renewer = asyncio.ensure_future(lock.keep_renewed(0.1, owner, lambda why: None))
    await asyncio.sleep(0)  # let it start: the cancel below lands in its sleep or its renewal
    renewer.cancel()
    await asyncio.gather(renewer, return_exceptions=True)
    assert renewer.cancelled() and not owner.done()
    owner.cancel()
    await lock.release()


async def test_a_roll_whose_lock_is_released_stops_and_says_lock_lost(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=3)
    text = cfg.read_text()
    cfg.write_text(text.replace("    vars:\n", "    rollout:\n      lock_ttl: 20s\n      lock_renew: 0.2s\n"
                                               "    vars:\n      settle_seconds: 1.0\n", 1))
    engine = Engine(load_config(cfg))
    engine.prepare()
    steps: list[RolloutStep] = []
    engine.bus.subscribe(lambda e: steps.append(e) if isinstance(e, RolloutStep) else None)
    try:
        deployed = await engine.execute(engine.parse("deploy itrust"))
        assert deployed.ok, deployed.message
        commit_file(tmp_path / "repo", "message.txt", "v2\n", "v2")
        roll = asyncio.ensure_future(engine.execute(engine.parse("roll itrust")))

        async def first_host_deploying() -> bool:
            return any(s.host == "itrust-1" and s.state == "deploying" for s in steps)

        await _until(first_host_deploying, "itrust-1 deploying", 60)
        ours = engine.rollouts.lock_for(engine.config.apps["itrust"])
        await FleetLock(ours.transport, "itrust", "operator@elsewhere").force_release()  # another console's release
        async with asyncio.timeout(30):
            outcome = await roll
        assert not outcome.ok, outcome.message
        lost = [s for s in steps if s.state == "lock-lost"]
        assert len(lost) == 1 and "no longer ours" in lost[0].detail, steps
        state = engine.rollouts.journal.latest("itrust")
        assert state.status == "aborted" and state.hosts["itrust-3"] == "pending", state
    finally:
        await engine.close()
        kill_services(tmp_path / "state")


async def test_a_kube_roll_whose_lock_is_released_stops_and_goes_back_as_abort_does(tmp_path: Path) -> None:
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        cfg = _lab_config(tmp_path, kubeconfig, 2, "60s")
        health = "    health: {path: /health, timeout: 2s}\n"
        cfg.write_text(cfg.read_text().replace(health, health + "    rollout: {lock_ttl: 20s, lock_renew: 0.2s}\n", 1))
        engine = Engine.open(load_config(cfg))
        steps: list[RolloutStep] = []
        engine.bus.subscribe(lambda e: steps.append(e) if isinstance(e, RolloutStep) else None)
        async with StandInDeploymentController(kubeconfig, tick=0.05), engine:
            first = await engine.execute(engine.parse("roll checkbox --version v1"))
            assert first.ok, first.message
            steps.clear()
            roll = asyncio.ensure_future(engine.execute(engine.parse("roll checkbox --version v2-bad")))

            async def moving() -> bool:
                return any(s.state == "running" and "1/2 updated" in s.detail for s in steps)

            await _until(moving, "the Deployment moving", 30)
            ours = engine.rollouts.lock_for(engine.config.apps["checkbox"])
            await FleetLock(ours.transport, "checkbox", "operator@elsewhere").force_release()
            async with asyncio.timeout(30):
                outcome = await roll
            assert not outcome.ok, outcome.message
            lost = [s for s in steps if s.state == "lock-lost"]
            assert len(lost) == 1 and "no longer ours" in lost[0].detail, steps
            assert any(s.state == "aborted" and "undone to registry.example/checkbox:v1" in s.detail for s in steps), steps
