"""A pod as a host of the fleet: name, node, version (the image tag), ready, restarts, and why not ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsconsole.hosts import Host
from opsconsole.kube.manifests import NAME_LABEL, TRACK_LABEL, version_of_image


@dataclass(frozen=True)
class PodState:
    host: Host
    version: str | None
    ready: bool
    restarts: int
    reason: str  # '' when ready; else CrashLoopBackOff, ImagePullBackOff, Pending …
    app: str


def pod_state(pod: dict[str, Any], group: str, port: int) -> PodState:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    containers = spec.get("containers") or [{}]
    statuses = status.get("containerStatuses") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason = ""
    if not ready:
        for c in statuses:  # the kubelet's word for it, as `kubectl get pods` shows it
            state = c.get("state") or {}
            reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason") or ""
            if reason:
                break
        reason = reason or status.get("reason") or status.get("phase") or "not ready"
    node = spec.get("nodeName") or "unscheduled"
    host = Host(name=meta.get("name", "?"), group=group, address=status.get("podIP") or "-", transport="kube",
                port=port, role=f"{labels.get(TRACK_LABEL, '')}@{node}",
                vars={"node": node, "restarts": restarts, "namespace": meta.get("namespace", "")})
    return PodState(host, version_of_image(containers[0].get("image", "")) or None, ready, restarts, reason,
                    labels.get(NAME_LABEL, ""))
