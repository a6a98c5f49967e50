"""The Kubernetes API stand-in for tests: kmock's emulator on a real port, and a real kubeconfig for it.

kmock (PyPI, by the author of kopf) is a real HTTP server with the Kubernetes URL scheme, discovery,
list, watch, create, merge-patch and delete. What it does NOT do, and what this module adds or the
tests therefore do not cover:
- list answers without kind/apiVersion, which kubectl refuses: `ApplyingEmulator` adds them;
- server-side apply: kmock merges a PATCH into an object that exists and answers 404 otherwise. A real
  API server creates the object on apply; `ApplyingEmulator` below does the same (and no more: no
  managedFields, no field ownership conflicts);
- metadata.generation: kmock never sets it; `ApplyingEmulator` bumps it on a spec change;
- no controllers (tests/kubecontroller.py plays the Deployment controller), admission, defaulting, schema validation (the suite validates manifests with
  kubernetes-validate instead), authentication or TLS.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import yaml
from kmock._internal import enums

APPLY_TYPE = "application/apply-patch+yaml"


class ApplyingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus creation on server-side apply (what a real API server does)."""

    async def _handle(self, request):  # type: ignore[no-untyped-def,override]
        content_type = {k.lower(): v for k, v in request.headers.items()}.get("content-type", "")
        key = (request.resource, request.namespace, request.name)
        if (request.resource is not None and request.action == enums.action.UPDATE and request.name is not None
                and content_type.startswith(APPLY_TYPE)):
            async with self._lock:
                if key not in self._objects or self._objects[key].deleted:
                    body = dict(request.data or {})
                    body.setdefault("metadata", {})["namespace"] = request.namespace
                    if key not in self._objects:
                        self._objects[key] = {"metadata": body["metadata"]}
                    else:
                        self._objects[key].create({"metadata": body["metadata"]})
        # The API server bumps metadata.generation on every spec change; kmock does not. Without it
        # `observedGeneration` would mean nothing, so bump it in the same write (one watch event).
        if request.action == enums.action.UPDATE and request.subresource is None and \
                isinstance(request.data, dict) and isinstance(request.data.get("spec"), dict):
            current = self._objects[key] if key in self._objects else None
            old_spec = (current.raw.get("spec") or {}) if current is not None else {}
            if any(old_spec.get(k) != v for k, v in request.data["spec"].items()):
                generation = int((current.raw.get("metadata") or {}).get("generation") or 0) if current else 0
                request.data.setdefault("metadata", {})["generation"] = generation + 1
        return await super()._handle(request)

    async def _serve_list(self, request):  # type: ignore[no-untyped-def,override]
        # kmock's list has no kind/apiVersion (its TODO); kubectl refuses a list without them.
        payload = await super()._serve_list(request)
        resource = request.resource
        group_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        kind = RESOURCES.get(f"{group_version}/{resource.plural}", ("Object",))[0]
        return {"kind": f"{kind}List", "apiVersion": group_version, **payload}


def write_kubeconfig(path: Path, server: str, *, context: str = "lab", namespace: str = "checkbox") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "ops", "user": {"token": "lab-token-not-a-secret"}}],
        "contexts": [{"name": context, "context": {"cluster": "kmock", "user": "ops", "namespace": namespace}}],
    }))
    return path


# What the tests use, declared for discovery (kubectl resolves `deploy`/`svc` through it) and so that
# listing an empty namespace answers an empty list instead of 404.
RESOURCES = {
    "apps/v1/deployments": ("Deployment", "deployment", {"deploy"}),
    "apps/v1/replicasets": ("ReplicaSet", "replicaset", {"rs"}),
    "v1/services": ("Service", "service", {"svc"}),
    "v1/pods": ("Pod", "pod", {"po"}),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "endpointslice", set()),
}
VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}


@contextlib.asynccontextmanager
async def kube_api() -> AsyncIterator[tuple[ApplyingEmulator, str]]:
    """The emulator serving on a free loopback port: (emulator, its URL)."""
    async with ApplyingEmulator() as emulator, kmock.Server(emulator) as server:
        for key, (kind, singular, short) in RESOURCES.items():
            if key.count("/") == 2:
                group, version, plural = key.split("/")
            else:
                group, (version, plural) = "", key.split("/")
            emulator.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(namespaced=True, kind=kind, singular=singular,
                                                         verbs=VERBS, shortnames=short)
        yield emulator, str(server.url).rstrip("/")
