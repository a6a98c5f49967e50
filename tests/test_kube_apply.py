"""Kubernetes slice 4-5: server-side apply to a real HTTP API (kmock), read back by kubectl.

The API server is kmock's emulator (tests/kubelab.py says what it does not do); opsconsole talks to
it through lightkube and a real kubeconfig file, and kubectl — an independent client — reads back
what was written.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from pathlib import Path

import kmock

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from tests.kubelab import kube_api, write_kubeconfig

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = shutil.which("kubectl")


def config_for(tmp_path: Path, kubeconfig: Path, context: str | None = None) -> Path:
    text = (ROOT / "examples" / "kubernetes.yaml").read_text()
    text = text.replace("state_dir: ../.demo/state-k8s", f"state_dir: {tmp_path / 'state'}")
    text = text.replace("      # kubeconfig: ~/.kube/lab ", f"      kubeconfig: {kubeconfig} ")
    if context:
        text = text.replace("      # context: lab ", f"      context: {context} ")
    text = text.split("\nproxy:")[0] + "\n"  # the proxy is not under test here
    file = tmp_path / "k8s.yaml"
    file.write_text(text)
    return file


async def run(config_file: Path, line: str) -> tuple[bool, str]:
    engine = Engine.open(load_config(config_file))
    async with engine:
        outcome = await engine.execute(engine.parse(line))
    return outcome.ok, outcome.message


async def kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    assert KUBECTL, "kubectl is not installed (Debian: kubernetes-client)"
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kubeconfig), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "HOME": str(kubeconfig.parent)})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_kube_apply_is_server_side_and_kubectl_reads_it_back(tmp_path: Path) -> None:
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        ok, message = await run(config_for(tmp_path, kubeconfig), "apply checkbox --version 1a2b3c4")
        assert ok, message
        patches = [r for r in list(api) if r.method == "PATCH"]
        assert len(patches) == 4
        for request in patches:  # server-side apply, as field manager opsconsole, token from the kubeconfig
            assert request.headers["Content-Type"].startswith("application/apply-patch+yaml")
            assert request.params["fieldManager"] == "opsconsole" and request.params["force"] == "true"
            assert request.headers["Authorization"] == "Bearer lab-token-not-a-secret"
        code, out, err = await kubectl(kubeconfig, "get", "deploy", "-n", "checkbox", "-o", "json")
        assert code == 0, err
        items = {d["metadata"]["name"]: d for d in json.loads(out)["items"]}
        assert set(items) == {"checkbox", "checkbox-canary"}
        stable = items["checkbox"]["spec"]
        assert stable["replicas"] == 2 and items["checkbox-canary"]["spec"]["replicas"] == 0
        assert stable["template"]["spec"]["containers"][0]["image"] == "registry.example/checkbox:1a2b3c4"
        # kmock's core-group discovery (/api/v1) does not list our Services for kubectl, so this read
        # goes by path; it is still kubectl with the same kubeconfig and token.
        code, out, err = await kubectl(kubeconfig, "get", "--raw", "/api/v1/namespaces/checkbox/services/checkbox")
        assert code == 0, err
        assert json.loads(out)["spec"]["selector"]["opsconsole.dev/track"] == "stable"
        # A second apply with a new version patches the same objects in place.
        ok, message = await run(config_for(tmp_path, kubeconfig), "apply checkbox --version 5e6f7a8")
        assert ok, message
        code, out, err = await kubectl(kubeconfig, "get", "deploy", "checkbox", "-n", "checkbox",
                                       "-o", "jsonpath={.spec.template.spec.containers[0].image}")
        assert code == 0 and out == "registry.example/checkbox:5e6f7a8", (out, err)


async def test_kube_bad_context_is_one_clear_line_and_sends_nothing(tmp_path: Path) -> None:
    async with kube_api() as (api, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        ok, message = await run(config_for(tmp_path, kubeconfig, context="prod"), "apply checkbox --version v1")
        assert not ok
        assert "\n" not in message and "no context 'prod'" in message and "contexts: lab" in message, message
        assert str(kubeconfig) in message
        assert not list(api)  # nothing reached the server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


async def test_kube_unreachable_server_is_one_clear_line_and_changes_nothing(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{_closed_port()}")
    ok, message = await run(config_for(tmp_path, kubeconfig), "apply checkbox --version v1")
    assert not ok
    assert "\n" not in message and "cannot reach the API server http://127.0.0.1:" in message, message
    assert "context lab" in message and "lab-token" not in message, message


async def test_kube_apply_stops_at_the_first_refusal_and_says_which_object(tmp_path: Path) -> None:
    async with kube_api() as (api, url):
        # The server refuses Services (as an admission webhook or RBAC would): the Deployments went in,
        # the message names the object that did not.
        api["patch", kmock.resource("", "v1", "services")] << 403 << {"kind": "Status", "code": 403,
                                                                      "message": "services is forbidden"}
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        ok, message = await run(config_for(tmp_path, kubeconfig), "apply checkbox --version v1")
        assert not ok and "apply Service checkbox/checkbox" in message and "403" in message, message
