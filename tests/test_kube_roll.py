"""Kubernetes slice 4: `roll`, `--on-failure rollback`, abort, pause/resume, rollback and history on
Kubernetes, against kmock as the API server and a stand-in Deployment controller (tests/kubecontroller.py).

What this proves is opsconsole's side of the contract: what it writes (server-side apply, spec.paused,
the undo) and how it reads the Deployment's status through a watch. How pods really move is the
stand-in's simplification of the real controller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine, Outcome
from opsconsole.events import Event, RolloutStep
from opsconsole.kube.client import KubeClient
from tests.kubecontroller import StandInDeploymentController
from tests.kubelab import ApplyingEmulator, kube_api, write_kubeconfig
from tests.test_kube_apply import config_for


@dataclass
class Lab:
    api: ApplyingEmulator
    engine: Engine
    controller: StandInDeploymentController
    steps: list[RolloutStep]

    async def run(self, line: str) -> Outcome:
        return await self.engine.execute(self.engine.parse(line))

    def deployment(self) -> dict:
        for (resource, namespace, name), obj in self.api.objects.items():
            if resource.plural == "deployments" and name == "checkbox":
                return obj.raw
        raise AssertionError("no Deployment checkbox")

    def image(self) -> str:
        return self.deployment()["spec"]["template"]["spec"]["containers"][0]["image"]

    async def step(self, state: str, words: str = "") -> RolloutStep:
        """The first rollout event in `state` whose detail has `words` (waits for it)."""
        async with asyncio.timeout(30):
            while True:
                for step in self.steps:
                    if step.state == state and words in step.detail:
                        return step
                await asyncio.sleep(0.02)


def _lab_config(tmp_path: Path, kubeconfig: Path, replicas: int, deadline: str) -> Path:
    file = config_for(tmp_path, kubeconfig)
    text = file.read_text().replace("replicas: 2", f"replicas: {replicas}")
    file.write_text(text.replace("progress_deadline: 2m", f"progress_deadline: {deadline}"))
    return file


@pytest.fixture
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Lab]:
    replicas, deadline, tick = getattr(request, "param", (2, "60s", 0.05))
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        engine = Engine.open(load_config(_lab_config(tmp_path, kubeconfig, replicas, deadline)))
        steps: list[RolloutStep] = []

        def keep(event: Event) -> None:
            if isinstance(event, RolloutStep):
                steps.append(event)
        engine.bus.subscribe(keep)
        async with StandInDeploymentController(kubeconfig, tick=tick) as controller, engine:
            lab = Lab(api, engine, controller, steps)
            first = await lab.run("roll checkbox --version v1")
            assert first.ok, first.message
            steps.clear()
            yield lab


async def test_kube_roll_is_watched_to_completion_with_max_unavailable(lab: Lab) -> None:
    outcome = await lab.run("roll checkbox --version v2 --batch 1")
    assert outcome.ok, outcome.message
    assert "2/2 updated, 2 available, 0 old" in outcome.message
    dep = lab.deployment()
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert lab.image() == "registry.example/checkbox:v2"
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
    states = [s.state for s in lab.steps]
    assert states[0] == "running" and states[-1] == "succeeded"
    progress = [s.detail for s in lab.steps if s.state == "running"]
    assert any("1/2 updated" in d for d in progress), progress  # the steps in between were reported
    # a share: --batch 50% of 2 replicas is one pod at a time
    outcome = await lab.run("roll checkbox --version v3 --batch 50%")
    assert outcome.ok and lab.deployment()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == "50%"


async def test_a_watch_gone_silent_does_not_hold_the_roll_past_a_few_seconds(lab: Lab,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A Deployment watch that never says a word (a load balancer that dropped the stream without a RST, or an
    event lost as the watch opened) once held a finished roll until the safety net, twice the progress
    deadline plus 30 s; the Deployment is read again after QUIET_WATCH seconds of silence."""
    from opsconsole.engine.kube_desk import KubeDesk

    from opsconsole.kube.client import KubeClient, KubeError

    monkeypatch.setattr(KubeDesk, "QUIET_WATCH", 1.0)
    lab.api.silent_watches = True  # the engine's next watch; the stand-in controller's own stays open
    # and the first look fails, as an API server answering 503 for a moment: one failed look is no failed roll
    real_get, reads, failed = KubeClient.get_deployment, [], []

    async def get_deployment(self: KubeClient, name: str) -> dict | None:
        reads.append(name)
        if len(reads) == 2:  # the first is the roll's own, before it applies; the second, the first look
            failed.append(name)
            raise KubeError(f"get Deployment checkbox/{name}: 503 Service Unavailable")
        return await real_get(self, name)
    monkeypatch.setattr(KubeClient, "get_deployment", get_deployment)
    async with asyncio.timeout(20):  # the safety net here is 150 s
        outcome = await lab.run("roll checkbox --version v2")
    assert outcome.ok, outcome.message
    assert "2/2 updated, 2 available, 0 old" in outcome.message, outcome.message
    assert lab.image() == "registry.example/checkbox:v2"
    assert [s.state for s in lab.steps][-1] == "succeeded"
    assert failed and any("could not be read" in s.detail and "503" in s.detail for s in lab.steps), lab.steps


@pytest.mark.parametrize("lab", [(2, "1s", 0.05)], indirect=True)
async def test_kube_bad_image_stops_at_its_deadline_and_is_rolled_back(lab: Lab) -> None:
    outcome = await lab.run("roll checkbox --version v2-bad --on-failure rollback")
    assert not outcome.ok
    assert "no progress within its deadline (1s)" in outcome.message, outcome.message
    assert "undone to registry.example/checkbox:v1" in outcome.message, outcome.message
    assert lab.image() == "registry.example/checkbox:v1"
    assert lab.deployment()["spec"].get("paused") is False
    states = [s.state for s in lab.steps]
    assert "failed" in states and states[-1] == "rolled-back", states


@pytest.mark.parametrize("lab", [(2, "1s", 0.05)], indirect=True)
async def test_kube_bad_image_without_rollback_stays_and_says_what_to_do(lab: Lab) -> None:
    outcome = await lab.run("roll checkbox --version v2-bad")
    assert not outcome.ok and "rollback checkbox" in outcome.message, outcome.message
    assert lab.image() == "registry.example/checkbox:v2-bad"


async def test_kube_abort_pauses_and_undoes_to_the_previous_template(lab: Lab) -> None:
    roll = asyncio.ensure_future(lab.run("roll checkbox --version v2-bad"))
    await lab.step("running", "1/2 updated")
    aborted = await lab.run("abort")
    assert aborted.ok, aborted.message
    outcome = await roll
    assert not outcome.ok
    assert lab.image() == "registry.example/checkbox:v1"
    step = await lab.step("aborted")
    assert "undone to registry.example/checkbox:v1 (2/2 updated, 2 available, 0 old)" in step.detail, step.detail
    assert lab.deployment()["status"]["availableReplicas"] == 2


@pytest.mark.parametrize("lab", [(4, "60s", 0.1)], indirect=True)
async def test_kube_pause_holds_the_deployment_and_resume_finishes_it(lab: Lab) -> None:
    roll = asyncio.ensure_future(lab.run("roll checkbox --version v2"))
    await lab.step("running", "1/4 updated")
    paused = await lab.run("pause")
    assert paused.ok and "spec.paused" in paused.message, paused.message
    assert lab.deployment()["spec"]["paused"] is True
    await lab.step("paused")
    await lab.controller.wait_ticks(3)
    held = lab.deployment()["status"]
    await lab.controller.wait_ticks(5)
    assert lab.deployment()["status"]["updatedReplicas"] == held["updatedReplicas"] < 4  # nothing moved
    assert not roll.done()
    resumed = await lab.run("resume")
    assert resumed.ok, resumed.message
    outcome = await roll
    assert outcome.ok and lab.image() == "registry.example/checkbox:v2", outcome.message


async def test_a_roll_resumes_a_deployment_left_paused_and_says_so(lab: Lab) -> None:
    # Paused by someone else (`kubectl rollout pause`) and left so: the roll would otherwise wait, without a
    # word, for its safety net (2 x the progress deadline + 30 s).
    await lab.controller.client.patch(Deployment, "checkbox", {"spec": {"paused": True}}, namespace="checkbox",
                                      patch_type=PatchType.MERGE)
    await lab.controller.wait_ticks(2)
    async with asyncio.timeout(30):
        outcome = await lab.run("roll checkbox --version v2")
    assert outcome.ok and lab.image() == "registry.example/checkbox:v2", outcome.message
    assert lab.deployment()["spec"]["paused"] is False
    await lab.step("running", "it was paused, spec.paused: this roll resumes it")


async def every_pod_moved(lab: Lab, tag: str, replicas: int) -> None:
    """Until the stand-in controller runs every pod from the `tag` template, ready, and no other (with its
    status held, the Deployment does not say so yet)."""
    def moved() -> bool:
        track = lab.controller.tracks.get("checkbox")
        sets = list(track.sets.values()) if track else []
        new = [s for s in sets if s.template["spec"]["containers"][0]["image"].endswith(f":{tag}")]
        return bool(new) and new[0].count == new[0].ready == replicas and sum(s.count for s in sets) == replicas

    async with asyncio.timeout(30):
        while not moved():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("lab", [(4, "60s", 0.05)], indirect=True)
async def test_a_pause_that_lands_as_the_roll_completes_leaves_nothing_paused(lab: Lab) -> None:
    # The pause reaches the Deployment when every new pod is ready but before its status says so: the roll
    # then completes, and a Deployment left paused with no roll to resume would hold the next change.
    async with held_at_the_end(lab) as roll:
        paused = await lab.run("pause")
        assert paused.ok and "spec.paused" in paused.message, paused.message
        lab.controller.hold_status = False
        async with asyncio.timeout(30):
            outcome = await roll
    assert outcome.ok and lab.image() == "registry.example/checkbox:v2", outcome.message
    assert lab.deployment()["spec"]["paused"] is False
    await lab.step("running", "completed before the pause took effect")
    assert lab.engine.paused() == []


@pytest.mark.parametrize("lab", [(4, "60s", 0.05)], indirect=True)
async def test_a_pause_answered_after_the_roll_ended_is_undone(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pause's PATCH reaches the server, and its answer comes back only after the roll has seen the last
    # pods ready and ended: nothing is left to hold, so the pause is undone and says so. The real client's
    # call is wrapped to force that order (the request itself goes to the API server unchanged).
    async with held_at_the_end(lab) as roll:
        sent = KubeClient.set_paused

        async def answered_late(self: KubeClient, name: str, paused: bool) -> None:
            await sent(self, name, paused)
            if paused:  # the completion is reported now; the roll ends before this answer is read
                lab.controller.hold_status = False
                async with asyncio.timeout(30):
                    while not roll.done():
                        await asyncio.sleep(0.01)

        monkeypatch.setattr(KubeClient, "set_paused", answered_late)
        paused = await lab.run("pause")
        assert paused.ok and "finished before the pause took effect: nothing is paused" in paused.message, \
            paused.message
        assert (await roll).ok
    assert lab.deployment()["spec"]["paused"] is False
    assert lab.engine.paused() == []


@contextlib.asynccontextmanager
async def held_at_the_end(lab: Lab) -> AsyncIterator[asyncio.Future[Outcome]]:
    """`roll checkbox --version v2` under way, held at its last moment: every pod moved and ready, the status
    not yet saying so (the stand-in's status held). The roll is awaited or cancelled by the end of the block."""
    lab.controller.hold_status = True
    roll = asyncio.ensure_future(lab.run("roll checkbox --version v2"))
    try:
        await every_pod_moved(lab, "v2", 4)
        assert not roll.done()
        yield roll
    finally:
        lab.controller.hold_status = False
        if not roll.done():
            roll.cancel()
        await asyncio.gather(roll, return_exceptions=True)


async def test_kube_history_and_rollback_to_the_previous_release(lab: Lab) -> None:
    assert (await lab.run("roll checkbox --version v2")).ok
    history = await lab.run("history checkbox")
    assert history.ok
    lines = history.message.splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [["1", "v1"], ["2", "v2"]], history.message
    back = await lab.run("rollback checkbox")
    assert back.ok and lab.image() == "registry.example/checkbox:v1", back.message
    history = await lab.run("history checkbox")
    # as `kubectl rollout undo`: the old ReplicaSet comes back as the newest revision
    assert [line.split()[:2] for line in history.message.splitlines()[1:]] == [["2", "v2"], ["3", "v1"]]


async def test_kube_canary_deploy_promote_and_rollback(lab: Lab) -> None:
    """No proxy fronts the app in this config: the weight is approximated by replica counts, and said so."""
    def canary() -> dict:
        for (resource, _, name), obj in lab.api.objects.items():
            if resource.plural == "deployments" and name == "checkbox-canary":
                return obj.raw
        raise AssertionError("no canary Deployment")

    deployed = await lab.run("canary checkbox deploy --version v2")
    assert deployed.ok, deployed.message
    assert "approximated by replica counts" in deployed.message and "about 33%" in deployed.message
    assert canary()["spec"]["replicas"] == 1 and canary()["status"]["availableReplicas"] == 1
    assert canary()["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/checkbox:v2"
    assert lab.image() == "registry.example/checkbox:v1"  # stable untouched
    weighted = await lab.run("canary checkbox weight 50")
    assert weighted.ok and canary()["spec"]["replicas"] == 2, weighted.message
    back = await lab.run("canary checkbox rollback")
    assert back.ok and canary()["spec"]["replicas"] == 0 and lab.image() == "registry.example/checkbox:v1"
    assert (await lab.run("canary checkbox deploy --version v2")).ok
    promoted = await lab.run("canary checkbox promote")
    assert promoted.ok, promoted.message
    assert lab.image() == "registry.example/checkbox:v2" and canary()["spec"]["replicas"] == 0
    assert lab.deployment()["status"]["availableReplicas"] == 2


async def test_kube_roll_takes_the_fleet_lock_like_an_ssh_roll(lab: Lab) -> None:
    """Someone else's roll holds the lock: ours is refused, naming the holder, and sends nothing. Ours holds
    it while the Deployment moves and gives it back at the end."""
    from opsconsole.rollouts.lock import FleetLock

    ours = lab.engine.rollouts.lock_for(lab.engine.config.apps["checkbox"])
    other = FleetLock(ours.transport, "checkbox", "alice@laptop", ttl=60)
    await other.acquire("alice rolls checkbox to v9")
    generation = lab.deployment()["metadata"]["generation"]
    refused = await lab.run("roll checkbox --version v2")
    assert not refused.ok
    assert "held by alice@laptop" in refused.message and "alice rolls checkbox to v9" in refused.message, refused.message
    assert lab.image() == "registry.example/checkbox:v1" and lab.deployment()["metadata"]["generation"] == generation
    await other.release()

    roll = asyncio.ensure_future(lab.run("roll checkbox --version v2"))
    await lab.step("running", "1/2 updated")
    held = await ours.status()
    assert held is not None and held.holder == lab.engine.issuer and "roll checkbox to v2" in held.reason
    outcome = await roll
    assert outcome.ok, outcome.message
    assert (await lab.run("lock status checkbox")).message == "checkbox: not locked"
