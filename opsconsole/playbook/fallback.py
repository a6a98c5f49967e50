"""Plays the native runner does not have run through ansible-playbook (ansible-core, `opsconsole[ansible]`).

Not a blind subprocess: ansible-playbook gets an inventory written from opsconsole's own (hosts,
groups, vars; for SSH hosts the bastion as ProxyJump, our known_hosts file with strict checking,
our keys and the agent), and its callback plugin (opsconsole.builtin.events, in the collection
next to the bundled playbooks) prints one JSON line per task start and result, which become the
same TaskStarted/TaskFinished events the native runner emits.

It never outlives its run: it leads its own process group, and when the run ends in any way (done,
aborted, its awaiting task cancelled, also a second time mid-cleanup) that group gets TERM, then KILL for
what is left. ansible-core's workers call setsid(), so they and their children (ssh, the module, the
command it runs) are in groups of their own: those groups, found as ansible-playbook's descendants, are
killed too (TERM lets ansible-playbook stop its workers itself; KILL leaves none to re-parent to init). If this process exits without unwinding, an exit hook kills what is
still running, and if it dies outright the kernel sends ansible-playbook SIGTERM (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from opsconsole.bundled import bundled_path
from opsconsole.events import EventBus, OutputLine, TaskFinished, TaskStarted
from opsconsole.fsio import write_atomic
from opsconsole.hosts import Host
from opsconsole.login_env import login_environment
from opsconsole.pids import group_alive, stat_fields  # zombie-aware: a killed worker not yet reaped is gone
from opsconsole.transport.base import Transport
from opsconsole.transport.pool import SshOptions
from opsconsole.yamlsource import plain

EXTRA = "pip install 'opsconsole[ansible]'"
_PREFIX = "@opsconsole "
_KILL_GRACE = 5.0  # seconds between TERM and KILL for ansible-playbook's process group
_LIVE: set[int] = set()  # process groups of ansible-playbook runs not yet reaped, for the exit hook
_PR_SET_PDEATHSIG = 1


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
                              "ansible_remote_tmp": f"{root.rstrip('/')}/.ansible/tmp"}
        # A python the operator names for the host wins; else Ansible finds one (a local host: ours).
        hv.setdefault("ansible_python_interpreter", sys.executable if host.transport == "local" else "auto_silent")
        if host.transport == "local":
            hv["ansible_connection"] = "local"
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


async def run_play(bus: EventBus, playbook_dir: Path, play_source: Mapping[str, Any], hosts: Sequence[Host],
                   transport_for: Callable[[Host], Transport], ssh: SshOptions | None,
                   extra_vars: Mapping[str, Any], host_vars: Callable[[Host], Mapping[str, Any]],
                   options: Sequence[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """Run one play with ansible-playbook on `hosts`; (host -> ok|failed, host -> why). `options`:
    more of ansible-playbook's options (--check, --diff)."""
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
        write_atomic(play_file, yaml.safe_dump([plain(play_source)], sort_keys=False))
        collections = str(bundled_path("playbooks", "collections"))
        # A local host's modules run in this ansible-playbook's environment (ansible_connection=local), and a
        # service they start keeps it: such a play gets a login's environment (login_env), as the native
        # runner gives local hosts, never the console's secrets. Over SSH nothing of it reaches a host.
        local = any(h.transport == "local" for h in hosts)
        base = login_environment(also=["SSH_AUTH_SOCK", *(n for n in os.environ if n.startswith("ANSIBLE_"))]) \
            if local else os.environ
        env = {**base, "ANSIBLE_STDOUT_CALLBACK": "opsconsole.builtin.events",
               "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join([collections, os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")
                                                            or "~/.ansible/collections"]),
               "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
               "ANSIBLE_LOCAL_TEMP": str(work_dir / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_DEPRECATION_WARNINGS": "False"}
        argv = [exe, "-i", str(inv), "-e", f"@{extra}", "--limit", ",".join(h.name for h in hosts), *options,
                str(play_file)]
        try:
            return await _watch(bus, argv, env, [h.name for h in hosts])
        finally:
            play_file.unlink(missing_ok=True)


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: ask for SIGTERM when the process that started it dies (Linux).
    Covers a console killed outright, which runs no cleanup of its own. Looked up here, in the parent:
    loading a library between fork and exec could deadlock."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def _watch(bus: EventBus, argv: list[str], env: dict[str, str], names: list[str]
                 ) -> tuple[dict[str, str], dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=_die_with_parent())
    _LIVE.add(proc.pid)
    try:
        return await _follow(bus, proc, names)
    finally:
        await _stop(proc)


async def _follow(bus: EventBus, proc: asyncio.subprocess.Process, names: list[str]
                  ) -> tuple[dict[str, str], dict[str, str]]:
    status = {n: "ok" for n in names}
    failures: dict[str, str] = {}
    tail: list[str] = []
    started: dict[tuple[str, str], float] = {}
    loop = asyncio.get_running_loop()
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
        elif event["event"] == "diff":
            for text in str(event.get("text") or "").splitlines():
                bus.emit(OutputLine(host=event["host"], line=text, stream="diff", source=event["task"]))
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
    for host in failures:
        status[host] = "failed"
    if rc != 0 and not failures:  # a syntax error, a missing collection: every host failed, say why
        why = bus.redactor.text("; ".join(tail[-3:]) or f"ansible-playbook exited {rc}")
        for n in names:
            status[n], failures[n] = "failed", f"ansible-playbook exited {rc}: {why}"
    return status, failures


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Leave nothing of the run behind: TERM its group unless it is gone already, KILL whatever is left
    of it and of its workers' groups after the grace (or at once if this cleanup is itself cancelled),
    and reap the leader."""
    groups = _groups_under(proc.pid)  # now, while the workers are still ansible-playbook's children
    try:
        if any(group_alive(g) for g in groups):
            _kill(proc, signal.SIGTERM)
            deadline = time.monotonic() + _KILL_GRACE
            while time.monotonic() < deadline:
                groups |= _groups_under(proc.pid)
                if not any(group_alive(g) for g in groups):
                    break
                await asyncio.sleep(0.05)
    finally:
        # The leader may have exited on TERM while a worker or an ssh child did not: every group, always.
        for pgid in groups | _groups_under(proc.pid):
            _killpg(pgid, signal.SIGKILL)
        _LIVE.discard(proc.pid)
        if proc.returncode is None:
            try:  # shielded: a second cancel here must not leave the killed leader unreaped
                async with asyncio.timeout(_KILL_GRACE):
                    await asyncio.shield(proc.wait())
            except TimeoutError:
                pass


def _groups_under(pid: int) -> set[int]:
    """The process groups of `pid` and of all its descendants (from /proc; {pid} where there is none)."""
    parent: dict[int, int] = {}
    group: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {pid}
    for name in entries:
        if not name.isdigit() or (fields := stat_fields(int(name))) is None:
            continue
        parent[int(name)], group[int(name)] = int(fields[1]), int(fields[2])
    found, todo = {pid}, [pid]
    while todo:
        current = todo.pop()
        for child, ppid in parent.items():
            if ppid == current and child not in found:
                found.add(child)
                todo.append(child)
    return {pid} | {group[p] for p in found if p in group}


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _kill_all() -> None:
    """At interpreter exit, runs whose task never unwound (a loop closed without cancelling) end too."""
    for leader in list(_LIVE):
        for pgid in _groups_under(leader):
            _killpg(pgid, signal.SIGKILL)
    _LIVE.clear()


def _kill(proc: asyncio.subprocess.Process, sig: int) -> None:
    _killpg(proc.pid, sig)


__all__ = ["EXTRA", "ansible_playbook", "builtin_module_exists", "inventory", "run_play", "ssh_args"]
