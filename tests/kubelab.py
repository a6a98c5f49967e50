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

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import yaml
from kmock._internal import enums

APPLY_TYPE = "application/apply-patch+yaml"


class ApplyingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus creation on server-side apply (what a real API server does).

    `silent_watches = True`: watches opened from then on answer their headers and never say a word more,
    as a stream a load balancer dropped without a RST (watches already open go on)."""

    silent_watches = False

    async def _serve_watch(self, request):  # type: ignore[no-untyped-def,override]
        if self.silent_watches:
            yield b""
            await asyncio.Event().wait()  # until the client goes away
        async for item in super()._serve_watch(request):
            yield item

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


class Relay:
    """A TCP relay in front of the API server, so a test can cut the connections a client has open
    (its watch streams among them) the way a load balancer or a restarting API server does."""

    def __init__(self, target: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.drops = 0
        self.url = ""
        self.requests: list[str] = []  # each request line a client sent (e.g. "GET /apis/…?watch=true&resourceVersion=…")

    async def __aenter__(self) -> "Relay":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def open_connections(self) -> int:
        return len(self.links) // 2

    def drop(self) -> None:
        """Cut every open connection at once (RST): streaming watches end mid-stream."""
        self.drops += 1
        for w in list(self.links):
            w.transport.abort()
        self.links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if dst is up_writer and data[:4] in (b"GET ", b"POST", b"PATC", b"PUT ", b"DELE"):
                        self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort() if dst.transport else None
                self.links.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
