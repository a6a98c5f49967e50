"""Kubernetes: the console's keys r, a, space, +, -, 0 and p on a Kubernetes app (Pilot).

The keys are the ones an SSH app uses and go through the same code: the key makes a command line,
the confirm dialog shows its preview, the engine routes the command to the Kubernetes desk. The API
server is kmock with the stand-in Deployment controller (tests/kubelab.py, tests/kubecontroller.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import commit_file, git
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import RolloutStep
from opsconsole.ui.app import OpsConsoleApp
from tests.kubecontroller import StandInDeploymentController
from tests.kubelab import kube_api, write_kubeconfig
from tests.test_kube_apply import config_for
from tests.test_ui import until
from tests.test_ui_rollout import confirm


def objects(api: Any, name: str) -> dict[str, Any]:
    for (resource, _, object_name), obj in api.objects.items():
        if resource.plural == "deployments" and object_name == name:
            return obj.raw
    return {}


def image(api: Any, name: str = "checkbox") -> str:
    return objects(api, name).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image", "")


def replicas(api: Any, name: str) -> int:
    return int(objects(api, name).get("spec", {}).get("replicas", -1))


def state(api: Any, engine: Engine, controller: StandInDeploymentController, steps: list[str]) -> str:
    """The Deployment as the API server holds it, what the stand-in controller saw, our last Kubernetes roll
    steps and the journal's last commands: what a test that timed out needs to say."""
    dep = objects(api, "checkbox")
    status = dep.get("status") or {}
    journal = [f"{e['kind']} {e['command']}" for e in engine.journal.entries() if "command" in e][-6:]
    return (f"Deployment generation {(dep.get('metadata') or {}).get('generation')}, "
            f"paused {(dep.get('spec') or {}).get('paused')}, "
            f"status {json.dumps({k: v for k, v in status.items() if k != 'conditions'})} "
            f"{[c.get('reason') for c in status.get('conditions') or []]}; {controller.describe('checkbox')}; "
            f"last steps: {steps[-6:]}; journal ends: {journal}")


def finished(engine: Engine, text: str) -> bool:
    return any(e["kind"] == "command.end" and e["command"] == text for e in engine.journal.entries())


async def test_kube_console_keys_drive_a_kubernetes_app(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "production")
    (repo / "app.txt").write_text("one")
    git(repo, "add", "app.txt")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")[:7]
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        file = config_for(tmp_path, kubeconfig)
        text = file.read_text().replace("repo: ../.demo/repos/checkbox.git", f"repo: {repo}")
        # +/- ask first here (canary.confirm_steps): the walk below confirms each key's dialog.
        file.write_text(text.replace("replicas: 2", "replicas: 4") + "\ncanary:\n  confirm_steps: true\n")
        engine = Engine.open(load_config(file))
        steps: list[str] = []
        engine.bus.subscribe(lambda e: steps.append(f"{e.state} {e.detail}") if isinstance(e, RolloutStep) else None)
        app = OpsConsoleApp(engine)
        async with StandInDeploymentController(kubeconfig, tick=0.1) as controller, \
                app.run_test(size=(100, 30)) as pilot:

            def left(what: str) -> Callable[[], str]:  # on a timeout: where the Deployment, the controller and we were
                return lambda: f"{what}: {state(api, engine, controller, steps)}"

            # r: roll to the branch head's image
            what = await confirm(pilot, app, "r")
            assert f"registry.example/checkbox:{head}" in what and "maxUnavailable 1" in what, what
            await until(pilot, lambda: finished(engine, "roll checkbox"), timeout=30, what=left("the first roll"))
            assert image(api) == f"registry.example/checkbox:{head}"

            # space pauses the running roll, space again resumes it
            second = commit_file(repo, "app.txt", "two", "second")[:7]
            await confirm(pilot, app, "r")
            await until(pilot, lambda: image(api).endswith(second) and 0 < objects(api, "checkbox")
                        .get("status", {}).get("updatedReplicas", 0) < 4, timeout=30, what=left("the roll under way"))
            await pilot.press("space")
            await until(pilot, lambda: objects(api, "checkbox")["spec"].get("paused") is True, what=left("paused"))
            await until(pilot, lambda: engine.paused() == ["checkbox"], what="the console knowing it paused")
            await pilot.press("space")
            await until(pilot, lambda: objects(api, "checkbox")["spec"].get("paused") is False, what=left("resumed"))
            await until(pilot, lambda: len([e for e in engine.journal.entries() if e["kind"] == "command.end"
                                            and e["command"] == "roll checkbox"]) == 2, timeout=30, what=left("done"))
            assert objects(api, "checkbox")["status"]["availableReplicas"] == 4

            # a aborts a roll of an image that never gets ready: back to the previous template
            roll = asyncio.ensure_future(engine.execute(engine.parse("roll checkbox --version v9-bad")))
            await until(pilot, lambda: image(api).endswith("v9-bad"), what="the bad roll under way")
            await confirm(pilot, app, "a")
            outcome = await roll
            assert not outcome.ok and image(api) == f"registry.example/checkbox:{second}"

            # the canary: deployed by command, then + / - / 0 / p from the keyboard
            assert (await engine.execute(engine.parse("canary checkbox deploy --version v3"))).ok
            assert replicas(api, "checkbox-canary") == 1
            await confirm(pilot, app, "0")
            await until(pilot, lambda: replicas(api, "checkbox-canary") == 0, what="0: the canary scaled to 0")
            await confirm(pilot, app, "plus")
            await until(pilot, lambda: replicas(api, "checkbox-canary") >= 1, what="+: canary pods again")
            await confirm(pilot, app, "minus")
            await until(pilot, lambda: replicas(api, "checkbox-canary") == 0, what="-: back to 0")
            await confirm(pilot, app, "plus")
            await until(pilot, lambda: replicas(api, "checkbox-canary") >= 1, what="+ once more")
            what = await confirm(pilot, app, "p")
            assert "rolled out to stable" in what
            await until(pilot, lambda: image(api) == "registry.example/checkbox:v3"
                        and replicas(api, "checkbox-canary") == 0, timeout=30, what="p: promoted")
            # leave only once every command is over: the app's panes go away with it
            await until(pilot, lambda: finished(engine, "canary checkbox promote") and not engine.running(),
                        timeout=30, what="the promote finished")
        await engine.close()
