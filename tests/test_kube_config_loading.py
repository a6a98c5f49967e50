"""Kubernetes: the kubeconfig found and merged as kubectl does, and a Deployment's status read as
`kubectl rollout status` reads it (pure functions, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opsconsole.kube.client import KubeError, load_kube_config
from opsconsole.kube.config import KubeGroupConfig
from opsconsole.kube.progress import batch_strategy, read_progress


def kubeconfig(path: Path, context: str, server: str, current: bool = True, **user: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", **({"current-context": context} if current else {}),
        "clusters": [{"name": f"c-{context}", "cluster": {"server": server, "certificate-authority": "ca.crt"}}],
        "users": [{"name": f"u-{context}", "user": user or {"token": f"t-{context}"}}],
        "contexts": [{"name": context, "context": {"cluster": f"c-{context}", "user": f"u-{context}"}}],
    }))
    return path


def test_kube_kubeconfig_env_lists_are_merged_first_file_wins(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "ca.crt").write_text("not a real CA")
    first = kubeconfig(tmp_path / "a" / "config", "dev", "https://dev.example:6443")
    second = kubeconfig(tmp_path / "b" / "config", "prod", "https://prod.example:6443")
    env = {"KUBECONFIG": f"{first}:{second}", "HOME": str(tmp_path)}
    current = load_kube_config(KubeGroupConfig(), env)
    assert current.context_name == "dev" and current.cluster.server == "https://dev.example:6443"
    prod = load_kube_config(KubeGroupConfig(context="prod"), env)
    assert prod.cluster.server == "https://prod.example:6443"
    # a relative certificate path is relative to the file that names it, not to where we run
    assert str(prod.cluster.certificate_auth) == str(tmp_path / "b" / "ca.crt")


def test_kube_kubeconfig_default_is_home_kube_config_and_explicit_wins(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", "home", "https://home.example:6443")
    other = kubeconfig(tmp_path / "other", "other", "https://other.example:6443")
    assert load_kube_config(KubeGroupConfig(), {"HOME": str(tmp_path)}).cluster.server == "https://home.example:6443"
    explicit = load_kube_config(KubeGroupConfig(kubeconfig=str(other)), {"HOME": str(tmp_path), "KUBECONFIG": "/nope"})
    assert explicit.cluster.server == "https://other.example:6443"


def test_kube_kubeconfig_problems_are_one_line_without_secrets(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="no kubeconfig: looked for .*nothing-here"):
        load_kube_config(KubeGroupConfig(), {"KUBECONFIG": str(tmp_path / "nothing-here"), "HOME": str(tmp_path)})
    file = kubeconfig(tmp_path / "cfg", "dev", "https://dev.example:6443", current=False, token="s3cret-token")
    with pytest.raises(KubeError) as caught:
        load_kube_config(KubeGroupConfig(), {"KUBECONFIG": str(file), "HOME": str(tmp_path)})
    assert "no current-context" in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(KubeError) as caught:
        load_kube_config(KubeGroupConfig(context="staging"), {"KUBECONFIG": str(file), "HOME": str(tmp_path)})
    assert "no context 'staging' (contexts: dev)" in str(caught.value) and "s3cret" not in str(caught.value)


def _deployment(generation: int, observed: int, updated: int, total: int, available: int,
                reason: str = "ReplicaSetUpdated") -> dict:
    return {"metadata": {"generation": generation},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 60},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available,
                       "conditions": [{"type": "Progressing", "status": "False" if "Exceeded" in reason else "True",
                                       "reason": reason}]}}


def test_kube_progress_reads_status_like_kubectl_rollout_status() -> None:
    # the status of the previous spec looks complete, but the controller has not seen the new one yet
    stale = read_progress(_deployment(generation=5, observed=4, updated=3, total=3, available=3))
    assert not stale.done and not stale.failed and "generation 5" in stale.text
    assert not read_progress(_deployment(5, 5, 2, 4, 3)).done  # an old pod is still there
    assert not read_progress(_deployment(5, 5, 3, 3, 2)).done  # a new pod is not available yet
    assert read_progress(_deployment(5, 5, 3, 3, 3)).done
    failed = read_progress(_deployment(5, 5, 1, 3, 2, reason="ProgressDeadlineExceeded"))
    assert not failed.done and "no progress within its deadline (60s)" in failed.failed


def test_kube_batch_becomes_max_unavailable_with_no_surge() -> None:
    assert batch_strategy(None, 4) == (1, 0)
    assert batch_strategy("2", 4) == (2, 0)
    assert batch_strategy("50%", 4) == ("50%", 0)
    assert batch_strategy("10%", 4) == (1, 0)  # a share that is no pod would never move: one at a time
