"""Kubernetes slice 1: the `kubernetes` group section, and the manifests `manifests APP` prints.

Every document is checked by the ecosystem's validator, `kubernetes-validate --strict` against the
official 1.30 schemas (a real subprocess, not our idea of the schema).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.yamlsource import SourceError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kubernetes.yaml"
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def kube_config(tmp_path: Path, group_extra: str = "", app_extra: str = "    image: reg.example/cb:{{ version }}\n",
                provider: str = "kubernetes") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    file = tmp_path / "k8s.yaml"
    section = "    kubernetes:\n      namespace: shop\n" + group_extra if provider == "kubernetes" else "    count: 1\n"
    file.write_text(f"state_dir: {tmp_path / 'state'}\ngroups:\n  web:\n    provider: {provider}\n{section}"
                    f"apps:\n  cb:\n    group: web\n    repo: {tmp_path / 'repo'}\n{app_extra}"
                    + ("    deploy: {playbook: deploy.yml}\n" if provider != "kubernetes" else ""))
    (tmp_path / "deploy.yml").write_text("- name: noop\n  hosts: all\n  tasks: []\n")
    return file


def test_kube_example_loads_with_secret_refs_and_resources() -> None:
    config = load_config(EXAMPLE)
    kube = config.groups["checkbox"].kubernetes
    assert kube is not None and kube.replicas == 2 and kube.namespace == "checkbox"
    assert kube.env["MONGO_PASSWORD"].secret == "checkbox-mongo"  # type: ignore[union-attr]
    assert config.apps["checkbox"].image == "registry.example/checkbox:{{ version }}"
    assert config.apps["checkbox"].deploy_playbook is None  # pods are not deployed by a playbook


@pytest.mark.parametrize(("group_extra", "app_extra", "provider", "line", "key", "words"), [
    ("      namespace: Shop_1\n", "    image: x:{{ version }}\n", "kubernetes", 6, "groups.web.kubernetes.namespace",
     "not a valid namespace"),
    ("      env:\n        DB_PASS: {secret: db}\n", "    image: x:{{ version }}\n", "kubernetes", 8,
     "groups.web.kubernetes.env.DB_PASS", "key"),
    ("      env:\n        2BAD: x\n", "    image: x:{{ version }}\n", "kubernetes", 8, "groups.web.kubernetes.env.2BAD",
     "not a valid environment variable name"),
    ("      resources:\n        limits: {memory: lots}\n", "    image: x:{{ version }}\n", "kubernetes", 8,
     "groups.web.kubernetes.resources.limits.memory", "not a Kubernetes quantity"),
    ("      replicas: -1\n", "    image: x:{{ version }}\n", "kubernetes", 7, "groups.web.kubernetes.replicas", ""),
    ("", "", "kubernetes", 8, "apps.cb", "image"),
    ("", "    image: x:{{ version }}\n", "local", 10, "apps.cb.image", "kubernetes group"),
])
def test_kube_bad_config_names_file_line_and_key(tmp_path: Path, group_extra: str, app_extra: str, provider: str,
                                                 line: int, key: str, words: str) -> None:
    file = kube_config(tmp_path, group_extra.replace("      namespace: shop\n", ""), app_extra, provider)
    if "namespace: Shop_1" in group_extra:
        file.write_text(file.read_text().replace("      namespace: shop\n", "", 1))
    with pytest.raises(SourceError) as caught:
        load_config(file)
    text = str(caught.value)
    assert str(file) in text and key in text and words in text, text
    assert f":{line}" in text, text


async def _manifests(config_file: Path, line: str) -> str:
    engine = Engine.open(load_config(config_file))
    async with engine:
        outcome = await engine.execute(engine.parse(line))
    assert outcome.ok, outcome.message
    return outcome.message


async def test_kube_manifests_command_prints_what_apply_sends() -> None:
    text = await _manifests(EXAMPLE, "manifests checkbox --version 1a2b3c4")
    docs = list(yaml.safe_load_all(text))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "checkbox"), ("Deployment", "checkbox-canary"), ("Service", "checkbox"),
        ("Service", "checkbox-canary")]
    stable, canary = docs[0], docs[1]
    assert stable["spec"]["replicas"] == 2 and canary["spec"]["replicas"] == 0
    container = stable["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/checkbox:1a2b3c4"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "MONGO_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "checkbox-mongo", "key": "password"}}} \
        in container["env"]
    assert stable["spec"]["progressDeadlineSeconds"] == 120
    # the two tracks never select each other's pods: the proxy weighs them through their own Services
    assert docs[2]["spec"]["selector"] != docs[3]["spec"]["selector"]
    assert stable["spec"]["selector"]["matchLabels"] == docs[2]["spec"]["selector"]


async def test_kube_manifests_pass_kubernetes_validate_strict_1_30(tmp_path: Path) -> None:
    text = await _manifests(EXAMPLE, "manifests checkbox --version 1a2b3c4")
    out = tmp_path / "checkbox.yaml"
    out.write_text(text)
    run = subprocess.run([str(VALIDATE), "--strict", "-k", "1.30.0", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" passed for resource ") == 4, run.stdout


async def test_kube_validator_is_able_to_fail(tmp_path: Path) -> None:
    """The check above means something: a field 1.30 does not know is rejected under --strict."""
    text = await _manifests(EXAMPLE, "manifests checkbox --version v1")
    docs = list(yaml.safe_load_all(text))
    docs[0]["spec"]["replicaz"] = 3
    out = tmp_path / "bad.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    run = subprocess.run([str(VALIDATE), "--strict", "-k", "1.30.0", str(out)], capture_output=True, text=True)
    assert run.returncode != 0 and "replicaz" in run.stdout + run.stderr


async def test_kube_manifests_refused_for_an_ssh_app_and_without_a_version(tmp_path: Path) -> None:
    engine = Engine.open(load_config(kube_config(tmp_path)))
    async with engine:
        outcome = await engine.execute(engine.parse("manifests cb"))
    assert not outcome.ok and "--version" in outcome.message
    engine = Engine.open(load_config(kube_config(tmp_path / "ssh", provider="local", app_extra="")))
    async with engine:
        outcome = await engine.execute(engine.parse("manifests cb --version v1"))
    assert not outcome.ok and "not on Kubernetes" in outcome.message


async def test_kube_image_template_with_a_typo_is_one_clear_line(tmp_path: Path) -> None:
    file = kube_config(tmp_path, app_extra="    image: reg.example/cb:{{ verison }}\n")
    engine = Engine.open(load_config(file))
    async with engine:
        outcome = await engine.execute(engine.parse("manifests cb --version v1"))
    assert not outcome.ok and "apps.cb.image" in outcome.message and "verison" in outcome.message


TEMPLATES = ROOT / "examples" / "kubernetes-templates"


async def test_kube_manifest_template_directory_renders_validates_and_feeds_roll(tmp_path: Path) -> None:
    """`manifests: DIR` (examples/kubernetes-templates): what `manifests` prints comes from the templates and
    passes kubernetes-validate --strict; the Deployment a roll applies is the template's, with the roll's
    replicas and strategy set on it."""
    from opsconsole.kube.manifests import deployment

    file = kube_config(tmp_path, app_extra=f"    image: reg.example/cb:{{{{ version }}}}\n    manifests: {TEMPLATES}\n")
    config = load_config(file)
    assert config.apps["cb"].manifests_dir == TEMPLATES
    text = await _manifests(file, "manifests cb --version v7")
    docs = list(yaml.safe_load_all(text))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "cb"), ("Deployment", "cb-canary"), ("Service", "cb"), ("Service", "cb-canary")]
    assert all(d["metadata"]["namespace"] == "shop" for d in docs)  # the group's namespace, filled in
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/cb:v7"
    assert docs[1]["spec"]["replicas"] == 0
    out = tmp_path / "cb.yaml"
    out.write_text(text)
    run = subprocess.run([str(VALIDATE), "--strict", "-k", "1.30.0", str(out)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.count(" passed for resource ") == 4, run.stdout + run.stderr
    app, group = config.apps["cb"], config.groups["web"]
    rolled = deployment(app, group, "v8", max_unavailable=1, max_surge=0)
    assert rolled["metadata"]["name"] == "cb" and rolled["spec"]["progressDeadlineSeconds"] == 120  # the template's
    assert rolled["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert rolled["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/cb:v8"
    assert deployment(app, group, "v8", track="canary", replicas=2)["spec"]["replicas"] == 2


async def test_kube_manifest_template_faults_are_one_clear_line(tmp_path: Path) -> None:
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ nmae }}\n")
    file = kube_config(tmp_path, app_extra=f"    image: reg.example/cb:{{{{ version }}}}\n    manifests: {templates}\n")
    engine = Engine.open(load_config(file))
    async with engine:
        typo = await engine.execute(engine.parse("manifests cb --version v1"))
        (templates / "svc.yaml").write_text("kind: Service\nmetadata: {name: x}\n")
        no_api = await engine.execute(engine.parse("manifests cb --version v1"))
        (templates / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: {{ name }}}\n")
        no_deployment = await engine.execute(engine.parse("roll cb --version v1 --plan"))
    assert not typo.ok and str(templates / "svc.yaml") in typo.message and "nmae" in typo.message, typo.message
    assert "\n" not in typo.message
    assert not no_api.ok and "document 1 is not a Kubernetes object" in no_api.message, no_api.message
    assert not no_deployment.ok and "no Deployment named cb" in no_deployment.message, no_deployment.message
    file.write_text(file.read_text().replace(str(templates), str(tmp_path / "missing")))
    with pytest.raises(SourceError) as err:
        load_config(file)
    assert "apps.cb.manifests" in str(err.value) and "does not exist" in str(err.value)
