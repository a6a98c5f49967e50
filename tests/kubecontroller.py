"""A STAND-IN for the Kubernetes Deployment controller, for tests against kmock (which runs no controllers).

It watches Deployments through the API like the real one, keeps one ReplicaSet per pod template (with
the `deployment.kubernetes.io/revision` annotation, an undo reusing the old one under a new revision),
moves replicas between them within maxSurge/maxUnavailable, and writes the Deployment's status:
observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas and the Progressing
condition, which turns False with reason ProgressDeadlineExceeded when nothing moved for
progressDeadlineSeconds. A paused Deployment does not move.

Pods are simulated, not created: a pod of an image whose tag contains "bad" never becomes ready (the
stand-in for ImagePullBackOff/CrashLoopBackOff); any other is ready one tick after it was created.
The tick is the simulated cluster's pace, not a wait for a condition.

Like the real controller's informer it does not trust its watch alone: kmock's watch lists the objects and
only then joins its event bus, so an event in between is lost, and a watch can end. The watch is opened
again when it ends or fails, and the Deployments are listed afresh every RESYNC_TICKS ticks. An error in a
tick is kept in `errors` (and said by `describe`), not the end of the controller: a controller that died
silently would leave a test waiting for a rollout that can no longer move.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

REVISION = "deployment.kubernetes.io/revision"


@dataclass
class _Set:
    name: str
    template: dict[str, Any]
    revision: int
    count: int = 0
    ready: int = 0

    @property
    def good(self) -> bool:
        image = self.template["spec"]["containers"][0]["image"]
        return "bad" not in image.rsplit(":", 1)[-1]


@dataclass
class _Track:
    sets: dict[str, _Set] = field(default_factory=dict)
    last_move: float = field(default_factory=time.monotonic)
    status: dict[str, Any] | None = None


def _resolve(value: int | str, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = replicas * int(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


class StandInDeploymentController:
    RESYNC_TICKS = 10  # ticks between two listings of the Deployments (the informer's resync)

    def __init__(self, kubeconfig: Path, namespace: str = "checkbox", tick: float = 0.1) -> None:
        self.client = AsyncClient(KubeConfig.from_file(kubeconfig), namespace=namespace)
        self.namespace = namespace
        self.tick = tick
        self.deployments: dict[str, dict[str, Any]] = {}
        self.tracks: dict[str, _Track] = {}
        self.ticks = 0
        self.errors: list[str] = []  # what went wrong in a watch or a tick, oldest first
        self._events: dict[str, int] = {}  # name -> watch events seen for it (a resync leaves those it raced alone)
        # True: pods still move but the status is not written (a test holds the last moment of a rollout, when
        # every pod is ready and the Deployment does not say so yet); written at the first tick after.
        self.hold_status = False
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> "StandInDeploymentController":
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._loop())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()

    async def wait_ticks(self, n: int) -> None:
        """Until the controller has reconciled `n` more times (a condition, not a fixed sleep)."""
        target = self.ticks + n
        async with asyncio.timeout(30):
            while self.ticks < target:
                await asyncio.sleep(self.tick / 4)

    def describe(self, name: str) -> str:
        """What the controller last saw of Deployment `name` and what went wrong, for a test's failure message."""
        dep = self.deployments.get(name)
        seen = "nothing" if dep is None else (f"generation {(dep.get('metadata') or {}).get('generation')}, "
                                              f"paused {(dep.get('spec') or {}).get('paused')}")
        return f"the stand-in controller saw {seen} after {self.ticks} ticks; errors: {self.errors[-5:] or 'none'}"

    async def _watch(self) -> None:
        while True:
            try:
                async for kind, obj in self.client.watch(Deployment, namespace=self.namespace):
                    data = obj.to_dict()
                    name = data["metadata"]["name"]
                    self._events[name] = self._events.get(name, 0) + 1
                    if kind == "DELETED":
                        self.deployments.pop(name, None)
                    else:
                        self.deployments[name] = data
            except Exception as exc:  # noqa: BLE001 - kept and said; the watch opens again
                self.errors.append(f"watch: {exc!r}")
            await asyncio.sleep(self.tick)

    async def _resync(self) -> None:
        """The Deployments as listed now, but for those the watch spoke of while the list was under way: what
        the watch said is as new as the list or newer (an older copy put back would look like an undo)."""
        before = dict(self._events)
        listed = {obj.metadata.name: obj.to_dict() async for obj in self.client.list(Deployment, namespace=self.namespace)}
        for name in set(listed) | set(self.deployments):
            if self._events.get(name, 0) != before.get(name, 0):
                continue
            if name in listed:
                self.deployments[name] = listed[name]
            else:
                self.deployments.pop(name, None)

    async def _loop(self) -> None:
        while True:
            if self.ticks % self.RESYNC_TICKS == self.RESYNC_TICKS - 1:
                try:
                    await self._resync()
                except Exception as exc:  # noqa: BLE001 - kept and said; the watch's view stands
                    self.errors.append(f"resync at tick {self.ticks}: {exc!r}")
            try:
                for name, dep in list(self.deployments.items()):
                    await self._reconcile(name, dep)
            except Exception as exc:  # noqa: BLE001 - kept and said; the next tick tries again
                self.errors.append(f"tick {self.ticks}: {exc!r}")
            self.ticks += 1
            await asyncio.sleep(self.tick)

    async def _reconcile(self, name: str, dep: dict[str, Any]) -> None:
        spec = dep["spec"]
        track = self.tracks.setdefault(name, _Track())
        template = spec["template"]
        key = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        top = max((s.revision for s in track.sets.values()), default=0)
        if key not in track.sets:
            track.sets[key] = _Set(f"{name}-{key}", template, top + 1)
            track.last_move = time.monotonic()
            await self._write_set(dep, track.sets[key])
        elif track.sets[key].revision != top:  # an undo: the old ReplicaSet is the newest revision again
            track.sets[key].revision = top + 1
            track.last_move = time.monotonic()
            await self._write_set(dep, track.sets[key])
        new = track.sets[key]
        olds = [s for k, s in track.sets.items() if k != key and s.count > 0]
        desired = int(spec.get("replicas", 1))
        moved = False
        if not spec.get("paused"):
            if new.good and new.ready < new.count:  # last tick's pods are ready now
                new.ready, moved = new.count, True
            strategy = spec.get("strategy", {}).get("rollingUpdate", {})
            surge = _resolve(strategy.get("maxSurge", "25%"), desired, round_up=True)
            unavailable = _resolve(strategy.get("maxUnavailable", "25%"), desired, round_up=False)
            old_count = sum(s.count for s in olds)
            available = new.ready + sum(s.ready for s in olds)
            if new.count < desired and new.count + old_count < desired + surge:
                new.count += 1
                moved = True
            elif new.count > desired:
                new.count -= 1
                new.ready = min(new.ready, new.count)
                moved = True
            unhealthy = [s for s in olds if s.count > s.ready]
            if unhealthy:  # as the real controller: old pods that are not ready go first, costing no availability
                unhealthy[0].count -= 1
                moved = True
            elif olds and available - 1 >= desired - unavailable:
                oldest = min(olds, key=lambda s: s.revision)
                oldest.count -= 1
                oldest.ready = min(oldest.ready, oldest.count)
                moved = True
            if moved:
                track.last_move = time.monotonic()
                for s in [new, *olds]:
                    await self._write_set(dep, s)
        old_count = sum(s.count for s in olds if s.count > 0)
        available = new.ready + sum(s.ready for s in olds)
        complete = new.count == desired and new.ready == desired and old_count == 0
        deadline = int(spec.get("progressDeadlineSeconds", 600))
        if spec.get("paused"):
            progressing = {"status": "Unknown", "reason": "DeploymentPaused", "message": "Deployment is paused"}
        elif complete:
            progressing = {"status": "True", "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{new.name}" has successfully progressed.'}
        elif time.monotonic() - track.last_move > deadline:
            progressing = {"status": "False", "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{new.name}" has timed out progressing.'}
        else:
            progressing = {"status": "True", "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{new.name}" is progressing.'}
        status = {
            "observedGeneration": int(dep["metadata"].get("generation") or 1),
            "replicas": new.count + old_count, "updatedReplicas": new.count,
            "readyReplicas": available, "availableReplicas": available,
            "unavailableReplicas": max(0, new.count + old_count - available),
            "conditions": [{"type": "Progressing", **progressing}],
        }
        if status != track.status and not self.hold_status:
            track.status = status
            await self.client.patch(Deployment.Status, name, {"status": status}, namespace=self.namespace,
                                    patch_type=PatchType.MERGE)

    async def _write_set(self, dep: dict[str, Any], s: _Set) -> None:
        body = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": s.name, "namespace": self.namespace, "labels": dep["spec"]["selector"]["matchLabels"],
                         "annotations": {REVISION: str(s.revision)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": dep["metadata"]["name"], "uid": "stand-in", "controller": True}]},
            "spec": {"replicas": s.count, "selector": dep["spec"]["selector"], "template": s.template},
            "status": {"replicas": s.count, "readyReplicas": s.ready, "availableReplicas": s.ready},
        }
        with contextlib.suppress(Exception):  # lightkube has no "create or replace": try create, then patch
            await self.client.create(from_dict(body))
            return
        await self.client.patch(type(from_dict(body)), s.name, body, namespace=self.namespace,
                                patch_type=PatchType.MERGE)


class StandInEndpointSlices:
    """A STAND-IN for the EndpointSlice controller: publishes a pod's endpoint in its Service's slices
    and turns it ready or not-ready, as the real controller does from the pod's Ready condition.

    One slice per pod, because the test's "pods" are loopback processes sharing 127.0.0.1 on different
    ports, and a slice has one port list (the real controller also splits pods whose named port
    differs into separate slices)."""

    def __init__(self, kubeconfig: Path, namespace: str = "checkbox") -> None:
        self.client = AsyncClient(KubeConfig.from_file(kubeconfig), namespace=namespace)
        self.namespace = namespace

    async def __aenter__(self) -> "StandInEndpointSlices":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    def _body(self, service: str, pod: str, port: int, ready: bool) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{pod}-slice", "namespace": self.namespace,
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "stand-in"}},
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready, "serving": ready,
                                                                      "terminating": False},
                           "targetRef": {"kind": "Pod", "name": pod, "namespace": self.namespace}}],
        }

    async def publish(self, service: str, pod: str, port: int, ready: bool = True) -> None:
        await self.client.create(from_dict(self._body(service, pod, port, ready)))

    async def set_ready(self, service: str, pod: str, port: int, ready: bool) -> None:
        body = self._body(service, pod, port, ready)
        await self.client.patch(type(from_dict(body)), body["metadata"]["name"], body,
                                namespace=self.namespace, patch_type=PatchType.MERGE)

    async def remove(self, pod: str) -> None:
        from lightkube.resources.discovery_v1 import EndpointSlice

        await self.client.delete(EndpointSlice, f"{pod}-slice", namespace=self.namespace)
