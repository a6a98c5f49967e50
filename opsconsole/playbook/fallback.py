"""Plays the native runner does not have run through ansible-playbook (ansible-core, `opsconsole[ansible]`).

Not a blind subprocess: ansible-playbook gets an inventory written from opsconsole's own (hosts,
groups, vars; for SSH hosts the bastion as ProxyJump, our known_hosts file with strict checking,
our keys and the agent), and its callback plugin (opsconsole.builtin.events, in the collection
next to the bundled playbooks) prints one JSON line per task start and result, which become the
same TaskStarted/TaskFinished events the native runner emits. Cancelling kills its process group.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from opsconsole.bundled import bundled_path
from opsconsole.events import EventBus, OutputLine, TaskFinished, TaskStarted
from opsconsole.fsio import write_atomic
from opsconsole.hosts import Host
from opsconsole.transport.base import Transport
from opsconsole.transport.pool import SshOptions

EXTRA = "pip install 'opsconsole[ansible]'"
_PREFIX = "@opsconsole "


def ansible_playbook() -> str | None:
    """The ansible-playbook next to this Python (the extra installs it there), else on PATH; None if absent."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ansible-playbook")


def builtin_module_exists(name: str) -> bool:
    """Whether ansible-core has a module of this short name (`apt`, `replace`): then a play using it can
    run through the fallback; otherwise the name is a typo and the loader says so."""
    try:
        import ansible.modules as modules  # noqa: PLC0415 - optional: only with the extra installed
    except ImportError:
        return False
    return any((Path(p) / f"{name}.py").is_file() for p in modules.__path__)


def inventory(hosts: Sequence[Host], transport_for: Callable[[Host], Transport], ssh: SshOptions | None,
              extra_host_vars: Callable[[Host], Mapping[str, Any]]) -> dict[str, Any]:
    """Ansible's YAML inventory for these hosts: one group per opsconsole group, host vars included."""
    all_hosts: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for host in hosts:
        root = transport_for(host).root
        # ansible's own temp files stay under the host's root, like everything opsconsole writes there.
        hv: dict[str, Any] = {**host.vars, **extra_host_vars(host), "host_root": root,
                              "ansible_python_interpreter": "auto_silent",
                              "ansible_remote_tmp": f"{root.rstrip('/')}/.ansible/tmp"}
        if host.transport == "local":
            hv["ansible_connection"] = "local"
            hv["ansible_python_interpreter"] = sys.executable
        else:
            hv.update(ansible_connection="ssh", ansible_host=host.address, ansible_port=host.ssh_port)
            if host.ssh_user:
                hv["ansible_user"] = host.ssh_user
            hv["ansible_ssh_common_args"] = ssh_args(ssh or SshOptions())
        all_hosts[host.name] = hv
        groups.setdefault(host.group, {"hosts": {}})["hosts"][host.name] = None
    return {"all": {"hosts": all_hosts, "children": groups}}


def ssh_args(ssh: SshOptions) -> str:
    """What ssh needs to reach a host the way opsconsole does: strict host keys from our known_hosts,
    our keys (and the agent only if allowed), through the bastion."""
    common = ["-o", "StrictHostKeyChecking=yes",
              "-o", f"UserKnownHostsFile={os.path.expanduser(ssh.known_hosts or '~/.ssh/known_hosts')}"]
    if not ssh.ssh_config:
        common += ["-F", "/dev/null"]
    if not ssh.agent:
        common += ["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
    args = [*common, *[a for key in ssh.client_keys for a in ("-i", os.path.expanduser(key))]]
    if ssh.jump is not None:
        # ProxyJump's own ssh would not get our -i/-o options (ssh passes only -F and -v on): the same
        # hop written as the ProxyCommand ssh runs for ProxyJump, `ssh -W %h:%p`, with them spelt out.
        j = ssh.jump
        keys = [j.key] if j.key else list(ssh.client_keys)
        inner = ["ssh", "-W", "%h:%p", "-p", str(j.port), *common,
                 *[a for key in keys for a in ("-i", os.path.expanduser(key))],
                 *(["-l", j.user] if j.user else []), j.host]
        args += ["-o", f"ProxyCommand={shlex.join(inner)}"]
    return shlex.join(args)


def _plain(value: Any) -> Any:
    """YamlMap/YamlList (which remember lines) as plain dicts and lists, for yaml.safe_dump."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def run_play(bus: EventBus, playbook_dir: Path, play_source: Mapping[str, Any], hosts: Sequence[Host],
                   transport_for: Callable[[Host], Transport], ssh: SshOptions | None,
                   extra_vars: Mapping[str, Any], host_vars: Callable[[Host], Mapping[str, Any]]
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """Run one play with ansible-playbook on `hosts`; (host -> ok|failed, host -> why)."""
    exe = ansible_playbook()
    if exe is None:
        raise RuntimeError(f"ansible-playbook is not installed: {EXTRA}")
    with tempfile.TemporaryDirectory(prefix="opsconsole-ansible-") as work:
        work_dir = Path(work)
        inv = work_dir / "inventory.yml"
        write_atomic(inv, yaml.safe_dump(inventory(hosts, transport_for, ssh, host_vars)), mode=0o600)
        extra = work_dir / "extra.json"  # may hold secrets: 0600, in a private directory, removed after
        write_atomic(extra, json.dumps(dict(extra_vars), default=str), mode=0o600)
        # The play file sits next to the playbook: its relative paths (templates, vars_files) mean the same.
        play_file = playbook_dir / f".opsconsole-play-{os.getpid()}-{id(play_source)}.yml"
        write_atomic(play_file, yaml.safe_dump([_plain(play_source)], sort_keys=False))
        collections = str(bundled_path("playbooks", "collections"))
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "opsconsole.builtin.events",
               "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join([collections, os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")
                                                            or "~/.ansible/collections"]),
               "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
               "ANSIBLE_LOCAL_TEMP": str(work_dir / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_DEPRECATION_WARNINGS": "False"}
        argv = [exe, "-i", str(inv), "-e", f"@{extra}", "--limit", ",".join(h.name for h in hosts), str(play_file)]
        try:
            return await _watch(bus, argv, env, [h.name for h in hosts])
        finally:
            play_file.unlink(missing_ok=True)


async def _watch(bus: EventBus, argv: list[str], env: dict[str, str], names: list[str]
                 ) -> tuple[dict[str, str], dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    status = {n: "ok" for n in names}
    failures: dict[str, str] = {}
    tail: list[str] = []
    started: dict[tuple[str, str], float] = {}
    loop = asyncio.get_running_loop()
    try:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if not line.startswith(_PREFIX):
                if line.strip():
                    tail = (tail + [line])[-10:]
                    bus.emit(OutputLine(host="", line=bus.redactor.text(line), stream="stderr", source="ansible-playbook"))
                continue
            event = json.loads(line[len(_PREFIX):])
            if event["event"] == "start":
                started[(event["host"], event["task"])] = loop.time()
                bus.emit(TaskStarted(host=event["host"], task=event["task"]))
            elif event["event"] == "end":
                host, task, result = event["host"], event["task"], event["status"]
                took = loop.time() - started.pop((host, task), loop.time())
                message = bus.redactor.text(event.get("msg") or "")
                bus.emit(TaskFinished(host=host, task=task, status="failed" if result == "unreachable" else result,
                                      rc=event.get("rc"), message=message, duration=took))
                if result in ("failed", "unreachable") and not event.get("ignored"):
                    failures.setdefault(host, f"task {task!r} failed on {host} (ansible-playbook): {message}")
            elif event["event"] == "stats":
                for host, counts in event["hosts"].items():
                    if counts.get("failures") or counts.get("unreachable"):
                        status[host] = "failed"
        rc = await proc.wait()
    except asyncio.CancelledError:
        _kill(proc, signal.SIGTERM)  # ansible-playbook and its ssh children: the whole group
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            _kill(proc, signal.SIGKILL)
            await proc.wait()
        raise
    for host in failures:
        status[host] = "failed"
    if rc != 0 and not failures:  # a syntax error, a missing collection: every host failed, say why
        why = bus.redactor.text("; ".join(tail[-3:]) or f"ansible-playbook exited {rc}")
        for n in names:
            status[n], failures[n] = "failed", f"ansible-playbook exited {rc}: {why}"
    return status, failures


def _kill(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["EXTRA", "ansible_playbook", "builtin_module_exists", "inventory", "run_play", "ssh_args"]
