"""Talking to the Kubernetes API: kubeconfig loading as kubectl does, and server-side apply.

The client is lightkube (https://lightkube.readthedocs.io), chosen over kubernetes_asyncio and kr8s:
- async first, with typed models of every resource (lightkube-models) instead of generated API classes
  per group (kubernetes_asyncio) or untyped dicts (kr8s);
- server-side apply is one call (`apply(obj, field_manager=…, force=…)`), and so are watch and patch;
- its kubeconfig loader already covers token, client-cert, exec and in-cluster auth with TLS verified
  by default; we only add kubectl's lookup order and the merge of several `KUBECONFIG` files;
- few dependencies (httpx2, pyyaml, msgspec): no aiohttp/six/urllib3 stack beside our own httpx.

Every failure is a `KubeError`: one line naming the context, the server or the object at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import yaml
from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.operators import in_
from lightkube.types import PatchType

from opsconsole.errors import OperatorError
from opsconsole.kube.config import KubeGroupConfig
from opsconsole.kube.manifests import MANAGER, NAME_LABEL, namespace_of

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # the EndpointSlice controller labels each slice with its Service


class KubeError(OperatorError):
    """The Kubernetes API cannot be reached, refused a request, or the kubeconfig is unusable."""


class KubeWatchGone(KubeError):
    """The server no longer has the history a watch asked to start from (410 Gone): list again."""


def kubeconfig_files(explicit: str | None, environ: dict[str, str] | None = None) -> list[Path]:
    """The kubeconfig files kubectl would read: `explicit`, else every file of $KUBECONFIG, else ~/.kube/config."""
    env = os.environ if environ is None else environ
    if explicit:
        return [Path(explicit)]
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(p).expanduser() for p in listed]
    return [Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"]


def _merge(files: list[Path]) -> dict[str, Any]:
    """kubectl's merge of several kubeconfig files: the first file to name a cluster/user/context wins."""
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    seen: dict[str, set[str]] = {key: set() for key in merged}
    for file in files:
        if not file.is_file():
            continue
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise KubeError(f"kubeconfig {file}: cannot read it: {exc}") from None
        if not isinstance(data, dict):
            raise KubeError(f"kubeconfig {file}: not a kubeconfig (a mapping with clusters, users, contexts)")
        merged.setdefault("current-context", data.get("current-context"))
        if not merged["current-context"]:
            merged["current-context"] = data.get("current-context")
        for key in seen:
            for entry in data.get(key) or []:
                if isinstance(entry, dict) and entry.get("name") not in seen[key]:
                    seen[key].add(entry.get("name"))
                    # Relative certificate paths are relative to the file that names them.
                    merged[key].append({**entry, "_dir": str(file.parent)})
    return merged


def load_kube_config(kube: KubeGroupConfig, environ: dict[str, str] | None = None) -> SingleConfig:
    """The cluster, user and namespace to use, found the way kubectl finds them.

    Order: the group's `kubeconfig`, else $KUBECONFIG (several files merged), else ~/.kube/config, else the
    in-cluster service account. A context that is not there is an error naming the contexts that are.
    """
    files = kubeconfig_files(kube.kubeconfig, environ)
    existing = [f for f in files if f.is_file()]
    if not existing:
        if kube.kubeconfig is None and (SERVICE_ACCOUNT / "token").is_file():
            try:
                return KubeConfig.from_service_account(SERVICE_ACCOUNT).get()  # type: ignore[return-value]
            except ConfigError as exc:
                raise KubeError(f"in-cluster service account: {exc}") from None
        raise KubeError(f"no kubeconfig: looked for {', '.join(str(f) for f in files)} "
                        "and found no in-cluster service account")
    merged = _merge(existing)
    contexts = [c.get("name") for c in merged["contexts"]]
    context = kube.context or merged.get("current-context")
    where = ", ".join(str(f) for f in existing)
    if not context:
        raise KubeError(f"kubeconfig {where}: no current-context and the group names no `context`")
    if context not in contexts:
        raise KubeError(f"kubeconfig {where}: no context {context!r} (contexts: {', '.join(map(str, contexts)) or 'none'})")
    # Resolve each entry's relative files against its own file before lightkube sees one merged dict.
    for key in ("clusters", "users"):
        for entry in merged[key]:
            base = Path(entry.pop("_dir"))
            body = entry.get(key[:-1]) or {}
            for field in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
                if isinstance(body.get(field), str) and not os.path.isabs(body[field]):
                    body[field] = str(base / body[field])
    for entry in merged["contexts"]:
        entry.pop("_dir", None)
    try:
        config = KubeConfig.from_dict({k: v for k, v in merged.items() if v is not None}).get(context_name=context)
    except ConfigError as exc:
        raise KubeError(f"kubeconfig {where}, context {context!r}: {exc}") from None
    if config is None:
        raise KubeError(f"kubeconfig {where}: context {context!r} cannot be used")
    return config


class KubeClient:
    """One group's API connection: `async with KubeClient(kube) as client: await client.apply(docs)`."""

    def __init__(self, kube: KubeGroupConfig, *, timeout: float = 10.0) -> None:
        self.kube = kube
        self.config = load_kube_config(kube)  # a bad context fails here, before any request
        self.server = self.config.cluster.server
        self.context = self.config.context_name
        self._client = AsyncClient(self.config, field_manager=MANAGER, timeout=httpx2.Timeout(timeout))

    async def __aenter__(self) -> "KubeClient":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    def _failure(self, exc: Exception, what: str) -> KubeError:
        if isinstance(exc, ApiError):
            code = exc.status.code if exc.status is not None else "?"
            message = exc.status.message if exc.status is not None else str(exc)
            return KubeError(f"{what}: the API server {self.server} (context {self.context}) answered {code}: {message}")
        if isinstance(exc, httpx2.HTTPStatusError):
            return KubeError(f"{what}: the API server {self.server} (context {self.context}) answered "
                             f"{exc.response.status_code} {exc.response.reason_phrase}")
        detail = " ".join(str(exc).split()) or "no answer"  # one line, whatever the library wrote
        return KubeError(f"{what}: cannot reach the API server {self.server} (context {self.context}): "
                         f"{type(exc).__name__}: {detail}")

    async def check_reachable(self) -> str:
        """Read the namespace's Deployments once: a KubeError before anything is sent that could change something."""
        namespace = namespace_of(self.kube)
        try:
            async for _ in self._client.list(Deployment, namespace=namespace, chunk_size=1):
                break
        except (ApiError, httpx2.HTTPError, OSError) as exc:
            raise self._failure(exc, f"list deployments in {namespace}") from None
        return namespace

    async def apply(self, documents: list[dict[str, Any]]) -> list[str]:
        """Server-side apply each document (field manager `opsconsole`, conflicts forced: we own these fields).

        The server is checked first, so an unreachable one changes nothing.
        """
        await self.check_reachable()
        applied = []
        for doc in documents:
            what = f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
            try:
                await self._client.apply(from_dict(doc), force=True)
            except (ApiError, httpx2.HTTPError, OSError) as exc:
                raise self._failure(exc, f"apply {what}") from None
            applied.append(what)
        return applied

    # -- one Deployment: what `roll` and its relatives read and change --------------------------
    @property
    def namespace(self) -> str:
        return namespace_of(self.kube)

    async def get_deployment(self, name: str) -> dict[str, Any] | None:
        """The Deployment as a dict, or None when there is none."""
        try:
            return (await self._client.get(Deployment, name, namespace=self.namespace)).to_dict()
        except httpx2.HTTPStatusError as exc:  # ApiError too; a server's 404 may come without a Status body
            if exc.response.status_code == 404:
                return None
            raise self._failure(exc, f"get Deployment {self.namespace}/{name}") from None
        except (httpx2.HTTPError, OSError) as exc:
            raise self._failure(exc, f"get Deployment {self.namespace}/{name}") from None

    async def set_paused(self, name: str, paused: bool) -> None:
        """`spec.paused`, as `kubectl rollout pause/resume` sets it (a merge patch: we own no other field here)."""
        try:
            await self._client.patch(Deployment, name, {"spec": {"paused": paused}}, namespace=self.namespace,
                                     patch_type=PatchType.MERGE)
        except (ApiError, httpx2.HTTPError, OSError) as exc:
            raise self._failure(exc, f"{'pause' if paused else 'resume'} Deployment {self.namespace}/{name}") from None

    async def watch_deployment(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """Each state of the Deployment as the server reports it (a watch, not a poll); restarts a dropped watch."""
        while True:
            try:
                async for _kind, obj in self._client.watch(Deployment, namespace=self.namespace,
                                                           fields={"metadata.name": name}):
                    data = obj.to_dict()
                    if data.get("metadata", {}).get("name") == name:  # not every server filters by field
                        yield data
            except (ApiError, httpx2.HTTPError, OSError) as exc:
                raise self._failure(exc, f"watch Deployment {self.namespace}/{name}") from None

    async def replica_sets(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        try:
            return [rs.to_dict() async for rs in self._client.list(ReplicaSet, namespace=self.namespace, labels=labels)]
        except (ApiError, httpx2.HTTPError, OSError) as exc:
            raise self._failure(exc, f"list ReplicaSets in {self.namespace}") from None

    # -- list, then watch from the list's resourceVersion (what an informer does) -----------------------
    async def list_pods(self, apps: list[str]) -> tuple[list[dict[str, Any]], str | None]:
        """The pods of `apps` (by their name label) and the list's resourceVersion (to watch from)."""
        return await self._list_versioned(Pod, {NAME_LABEL: in_(apps)}, f"pods of {', '.join(apps)}")

    def watch_pods(self, apps: list[str], resource_version: str | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes of the pods of `apps` from `resource_version` on, as (ADDED|MODIFIED|DELETED, pod)."""
        return self._watch_from(Pod, {NAME_LABEL: in_(apps)}, resource_version, f"pods of {', '.join(apps)}")

    # -- EndpointSlices: where the proxy in front finds the pods ------------------------------------
    async def list_endpoint_slices(self, services: list[str]) -> tuple[list[dict[str, Any]], str | None]:
        """The slices of `services` and the list's resourceVersion (to watch from)."""
        return await self._list_versioned(EndpointSlice, {SERVICE_NAME_LABEL: in_(services)},
                                          f"EndpointSlices of {', '.join(services)}")

    def watch_endpoint_slices(self, services: list[str], resource_version: str | None
                              ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Slice changes from `resource_version` on."""
        return self._watch_from(EndpointSlice, {SERVICE_NAME_LABEL: in_(services)}, resource_version,
                                f"EndpointSlices of {', '.join(services)}")

    async def _list_versioned(self, resource: Any, labels: dict[str, Any], what: str
                              ) -> tuple[list[dict[str, Any]], str | None]:
        """Every `resource` with `labels` (a server may ignore the selector: callers filter too) and the list's
        resourceVersion, None when the server gives none."""
        try:
            listing = self._client.list(resource, namespace=self.namespace, labels=labels)
            items = [obj.to_dict() async for obj in listing]
        except (ApiError, httpx2.HTTPError, OSError) as exc:
            raise self._failure(exc, f"list {what} in {self.namespace}") from None
        try:
            version: str | None = listing.resourceVersion
        except Exception:  # lightkube's NotReadyError on an empty answer from some servers
            version = None
        return items, version

    async def _watch_from(self, resource: Any, labels: dict[str, Any], resource_version: str | None, what: str
                          ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes from `resource_version` on. Any failure (a dropped stream too) is a KubeError, a history
        that is gone KubeWatchGone (list afresh); the caller reopens (lightkube reopens by itself only a
        stream the server ended cleanly)."""
        try:
            async for kind, obj in self._client.watch(resource, namespace=self.namespace, labels=labels,
                                                      resource_version=resource_version):
                yield kind, obj.to_dict()
        except ApiError as exc:
            if exc.status is not None and exc.status.code == 410:
                raise KubeWatchGone(f"watch {what} in {self.namespace}: resourceVersion "
                                    f"{resource_version} is too old (410 Gone)") from None
            raise self._failure(exc, f"watch {what} in {self.namespace}") from None
        except (httpx2.HTTPError, OSError) as exc:
            raise self._failure(exc, f"watch {what} in {self.namespace}") from None
