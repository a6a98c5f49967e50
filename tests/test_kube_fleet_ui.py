"""Kubernetes slice 6a: pods appear as hosts in the console's fleet pane, from a watch (Pilot).

The pods are written into kmock by the test, standing in for the kubelet (kmock runs none): a ready
pod, then the same pod in CrashLoopBackOff, then deleted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Event
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.testing import screen_text
from tests.kubelab import kube_api, write_kubeconfig
from tests.test_kube_apply import config_for
from tests.test_ui import until


def pod(name: str, version: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "checkbox",
                         "labels": {"app.kubernetes.io/name": "checkbox", "opsconsole.dev/track": "stable"}},
            "spec": {"nodeName": node, "containers": [{"name": "checkbox", "image": f"registry.example/checkbox:{version}"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.7",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "checkbox", "ready": True, "restartCount": 0,
                                              "image": f"registry.example/checkbox:{version}", "imageID": "",
                                              "state": {"running": {}}}]}}


def pod_lists(api: Any) -> int:
    """How many times the pods have been listed (kmock keeps every request it served)."""
    return sum(1 for r in list(api) if r.action is not None and r.action.name == "LIST" and r.resource is not None
               and r.resource.plural == "pods")


def fleet_row(app: OpsConsoleApp) -> str:
    """The fleet pane's first row as the terminal shows it."""
    lines = screen_text(app).splitlines()
    return lines[2] if len(lines) > 2 else ""


async def test_kube_pods_show_in_the_fleet_pane_and_follow_a_watch(tmp_path: Path) -> None:
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        config = load_config(config_for(tmp_path, kubeconfig))
        engine = Engine.open(config, heartbeat=True)
        kubelet = AsyncClient(KubeConfig.from_file(kubeconfig), namespace="checkbox")
        await kubelet.create(from_dict(pod("checkbox-5d8f-x2k", "v1", "node-a")))
        app = OpsConsoleApp(engine)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: "checkbox-5d8f-x2k" in screen_text(app), what="the pod in the fleet pane")
                view = engine.views["checkbox-5d8f-x2k"]
                assert view.version == "v1" and view.healthy is True and view.host.vars["node"] == "node-a"
                pane = app.query_one(FleetPane)
                await until(pilot, lambda: "checkbox-5d8f-x2k" in pane.table.rows, what="the pod's row")
                # The pane opened before any pod existed; the host column widens for the pod's name, not cut.
                await until(pilot, lambda: "✔ up" in fleet_row(app) and " v1 " in fleet_row(app), what="up, v1")
                assert "checkbox-5d8f-x2k" in fleet_row(app), fleet_row(app)
                # The pod's container crashes: the kubelet marks it not ready.
                since = time.monotonic()
                await kubelet.patch(Pod, "checkbox-5d8f-x2k", {"status": {
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "checkbox", "ready": False, "restartCount": 4, "image": "x",
                                           "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
                    patch_type=PatchType.MERGE)
                await until(pilot, lambda: engine.views["checkbox-5d8f-x2k"].healthy is False, what="not ready")
                assert time.monotonic() - since < config.heartbeat.interval  # within one heartbeat interval
                view = engine.views["checkbox-5d8f-x2k"]
                assert view.activity == "failed" and "CrashLoopBackOff" in view.detail and "4 restart" in view.detail
                await until(pilot, lambda: "✘ FAILED" in fleet_row(app) and "✘ DOWN" in fleet_row(app),
                            what="the row: down, failed")
                await kubelet.delete(Pod, "checkbox-5d8f-x2k")
                await until(pilot, lambda: "checkbox-5d8f-x2k" not in engine.views, what="the pod gone")
                await engine.close()  # no pod event may arrive while the app shuts down
                await pilot.pause()
        finally:
            await kubelet.close()
            await engine.close()


async def test_a_pod_watch_gone_silent_is_resynced_and_pods_gone_meanwhile_are_dropped(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """The pod watch is a Kubernetes group's heartbeat. One that never says a word (a load balancer that dropped
    the stream without a RST) once left the fleet as it was for good: a pod deleted stayed "up". The pods are
    listed again every POD_RESYNC seconds; a pod no longer listed is dropped."""
    from opsconsole.engine.kube_desk import KubeDesk

    monkeypatch.setattr(KubeDesk, "POD_RESYNC", 0.5)
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        engine = Engine.open(load_config(config_for(tmp_path, kubeconfig)), heartbeat=True)
        kubelet = AsyncClient(KubeConfig.from_file(kubeconfig), namespace="checkbox")
        try:
            for name, node in (("checkbox-a", "node-a"), ("checkbox-b", "node-b")):
                await kubelet.create(from_dict(pod(name, "v1", node)))
            api.silent_watches = True  # every watch the engine opens says nothing at all
            async with engine:
                async with asyncio.timeout(10):
                    while not {"checkbox-a", "checkbox-b"} <= set(engine.views):
                        await asyncio.sleep(0.02)
                changes: list[Event] = []
                engine.bus.subscribe(changes.append)
                await kubelet.delete(Pod, "checkbox-b")
                async with asyncio.timeout(10):
                    while "checkbox-b" in engine.views:
                        await asyncio.sleep(0.02)
                assert engine.views["checkbox-a"].healthy is True and engine.views["checkbox-a"].version == "v1"
                # a resync that finds nothing new tells the front ends nothing: four more listings, no event
                target = pod_lists(api) + 4
                async with asyncio.timeout(10):
                    while pod_lists(api) < target:
                        await asyncio.sleep(0.02)
                assert [e for e in changes if getattr(e, "host", None) == "checkbox-a"] == [], changes
        finally:
            await kubelet.close()
            await engine.close()
