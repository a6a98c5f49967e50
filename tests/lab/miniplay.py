"""A stand-in for the playbook runner in lab tests of the shipped provisioning playbooks."""

from __future__ import annotations

import os
import shlex
from typing import Any

import jinja2

from opsconsole.transport.ssh import SshTransport


class MiniPlay:
    """Just enough of the playbook language to run database.yml over a transport until the real
    PlaybookRunner lands: shell, copy, stat, opsconsole.builtin.service; when, register, become, ignore_errors. It logs like a
    runner would: every rendered command and every output line, so the test can search them."""

    def __init__(self, transport: SshTransport, variables: dict[str, Any]) -> None:
        self.t = transport
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        self.env.globals["lookup"] = lambda kind, name: os.environ.get(name, "") if kind == "env" else ""
        self.env.filters["quote"] = lambda v: shlex.quote(str(v))  # as opsconsole's templating has it
        self.vars = dict(variables)
        self.log: list[str] = []

    def render(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.env.from_string(value).render(**self.vars)
        if isinstance(value, dict):
            return {k: self.render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v) for v in value]
        return value

    async def run(self, play: dict[str, Any]) -> None:
        for key, value in play.get("vars", {}).items():
            self.vars.setdefault(key, self.render(value))
        for task in play["tasks"]:
            if "when" in task and not self.env.compile_expression(task["when"])(**self.vars):
                self.log.append(f"skip: {task['name']}")
                continue
            self.log.append(f"task: {task['name']}")
            if "stat" in task:  # where a path is: proxy-host.yml asks whether systemd runs
                path = self.render(task["stat"]["path"])
                found = await self.t.run(f"test -e {shlex.quote(path)}", timeout=60)
                self.vars[task.get("register", "_")] = {"stat": {"exists": found.ok}}
                self.log.append(f"stat: {path} {'exists' if found.ok else 'absent'}")
                continue
            if "file" in task:  # directories (state: directory), one per loop item
                for item in task.get("loop", [None]):
                    self.vars["item"] = item
                    await self._directory(self.render(task["file"]))
                continue
            rc, out = await self._task(task)
            if "register" in task:
                self.vars[task["register"]] = {"rc": rc, "stdout": out}
            if rc != 0 and not task.get("ignore_errors"):
                raise AssertionError(f"task {task['name']!r} failed (rc {rc}):\n" + "\n".join(self.log[-15:]))

    async def _directory(self, spec: dict[str, Any]) -> None:
        assert spec.get("state") == "directory", f"MiniPlay knows file: state=directory only, not {spec}"
        path = shlex.quote(spec["path"])
        chmod = f" && chmod {shlex.quote(str(spec['mode']))} {path}" if "mode" in spec else ""
        result = await self.t.run(f"mkdir -p {path}{chmod}", timeout=60)
        self.log.append(f"file: {spec['path']} directory")
        if not result.ok:
            raise AssertionError(f"file {spec['path']}: {result.describe()}: {' | '.join(result.tail)}")

    async def _task(self, task: dict[str, Any]) -> tuple[int, str]:
        def line(text: str, stream: str) -> None:
            self.log.append(f"{self.t.host.name} {stream}: {text}")

        if "shell" in task:
            shell = task["shell"]
            command = self.render(shell["cmd"] if isinstance(shell, dict) else shell)
            self.log.append(f"run: {command}")
            result = await self.t.run(command, on_line=line, become=bool(task.get("become")), timeout=300)
            return (result.rc if result.rc is not None else -1), result.stdout
        if "copy" in task:
            spec = self.render(task["copy"])
            mode = int(spec["mode"], 8) if "mode" in spec else None
            if "src" in spec:
                changed = await self.t.put_file(spec["src"], spec["dest"], mode)
            else:
                changed = await self.t.write_file(spec["dest"], spec["content"].encode(), mode)
            self.log.append(f"copy: {spec['dest']} {'changed' if changed else 'ok'}")
            return 0, ""
        if "opsconsole.builtin.service" in task:
            spec = self.render(task["opsconsole.builtin.service"])
            if spec.get("state") == "restarted":
                await self.t.stop_service(spec["name"])
            pid = await self.t.start_service(spec["name"], spec["command"])
            self.log.append(f"service: {spec['name']} pid {pid}")
            return 0, ""
        raise AssertionError(f"MiniPlay does not know task {task}")
