"""Run a playbook two ways on twin lab hosts, and say what each left behind.

One host gets opsconsole's native runner, its twin gets real ansible-playbook handed the inventory
opsconsole writes for its fallback (opsconsole/playbook/fallback.py: host vars, host_root, the jump
host, strict host keys). `end_state` lists what a host's root holds, so two hosts can be compared.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from opsconsole.bundled import bundled_path
from opsconsole.events import EventBus, TaskFinished
from opsconsole.hosts import Host
from opsconsole.playbook.fallback import inventory
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.pool import SshOptions
from opsconsole.transport.ssh import SshTransport

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PREFIX = "@opsconsole "


@dataclass
class Outcome:
    ok: bool
    changed: dict[str, int] = field(default_factory=dict)  # host -> tasks that reported a change
    text: str = ""  # what went wrong, for the assertion message


_CONTROL: list[str] = []


def _control_dir() -> str:
    if not _CONTROL:
        _CONTROL.append(tempfile.mkdtemp(prefix="oc-cp-"))  # short: a socket path has 108 bytes
        atexit.register(shutil.rmtree, _CONTROL[0], True)
    return _CONTROL[0]


def ansible_run(playbook: Path, hosts: Sequence[Host], transports: Mapping[str, SshTransport], ssh: SshOptions,
                work: Path, extra_vars: Mapping[str, Any] = {}, host_vars: Mapping[str, Any] = {},
                ansible_args: Iterable[str] = ()) -> Outcome:
    """ansible-playbook on `hosts`; the changed count per host comes from its own stats."""
    work.mkdir(parents=True, exist_ok=True)
    inv = inventory(hosts, lambda h: transports[h.name], ssh,
                    # The lab hosts' python named, so no run spends a round trip on interpreter discovery.
                    lambda h: {"ansible_python_interpreter": "/usr/bin/python3", **host_vars,
                               **({"port": h.port} if h.port is not None else {})})
    (work / "inventory.yml").write_text(yaml.safe_dump(inv))
    (work / "extra.json").write_text(json.dumps(dict(extra_vars)))
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "opsconsole.builtin.events",
           "ANSIBLE_COLLECTIONS_PATH": str(bundled_path("playbooks", "collections")),
           "ANSIBLE_LOCAL_TEMP": str(work / "tmp"), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "False",
           # One control directory for the session, as a user's ~/.ansible/cp is: the next run within
           # ControlPersist reuses the connection instead of two handshakes through the jump host.
           "ANSIBLE_SSH_CONTROL_PATH_DIR": _control_dir(),
           # Pipelining (modules sent on the SSH channel, not copied first): how people run Ansible fast;
           # it changes how a module travels, not what it does to the host.
           "ANSIBLE_PIPELINING": "True"}
    done = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(work / "inventory.yml"), "-e", f"@{work / 'extra.json'}",
                           *ansible_args, str(playbook)], capture_output=True, text=True, env=env, timeout=600)
    changed: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if line.startswith(PREFIX):
            event = json.loads(line[len(PREFIX):])
            if event["event"] == "stats":
                changed = {h: c["changed"] for h, c in event["hosts"].items()}
    return Outcome(ok=done.returncode == 0, changed=changed, text=done.stdout[-4000:] + done.stderr[-4000:])


async def native_run(runner: PlaybookRunner, bus_events: list[object], playbook: Path, hosts: Sequence[Host],
                     extra_vars: Mapping[str, Any] = {}, **run_options: Any) -> Outcome:
    """The native runner on `hosts`; `run_options` go to PlaybookRunner.run (check, diff, tags ...)."""
    bus_events.clear()
    result = await runner.run(load_playbook(playbook), hosts, extra_vars=extra_vars, **run_options)
    changed = {h.name: 0 for h in hosts}
    for e in bus_events:
        if isinstance(e, TaskFinished) and e.status == "changed":
            changed[e.host] = changed.get(e.host, 0) + 1
    return Outcome(ok=result.ok, changed=changed, text=result.failure_text())


def new_runner(transport_for: Any, ssh: SshOptions) -> tuple[PlaybookRunner, list[object]]:
    bus = EventBus()
    events: list[object] = []
    bus.subscribe(events.append)
    return PlaybookRunner(bus, transport_for, ssh=ssh), events


# What differs between two hosts by nature, not by what a play did: ansible's own temp files, pids, logs' lines.
VOLATILE = (".ansible", "log")


def end_state(root: Path, names: Iterable[str], contents_of: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """relative path -> (kind, mode, content or link target) for everything under a host's root but
    VOLATILE and what is inside the directories `contents_of` (a database's own files: only the directory
    is compared). The host's `names` (its name, its address) in a text file read HOST: twins differ by
    those only. A pid file shows only whether its process is a live service (the pid itself differs
    between hosts); big or binary files show a digest."""
    inside = tuple(f"{d}/" for d in contents_of)
    state: dict[str, tuple[str, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.split("/")[0] in VOLATILE or rel.startswith(inside):
            continue
        st = path.lstat()
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        if stat.S_ISLNK(st.st_mode):
            state[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            state[rel] = ("dir", mode)
        elif stat.S_ISSOCK(st.st_mode):
            state[rel] = ("socket", mode)
        elif path.suffix == ".pid":
            state[rel] = ("pid", mode, "live" if _live_session_leader(path.read_text().strip()) else "dead")
        else:
            data = path.read_bytes()
            try:
                text = data.decode() if len(data) < 4096 else None
            except UnicodeDecodeError:
                text = None
            if text is None:
                state[rel] = ("file", mode, hashlib.sha256(data).hexdigest()[:16])
                continue
            for name in names:  # whole words only: the host `db` is not in `mariadb`
                text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", "HOST", text)
            state[rel] = ("file", mode, text)
    return state


def _live_session_leader(text: str) -> bool:
    try:
        fields = Path(f"/proc/{int(text)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return False
    return fields[0] != "Z" and fields[3] == text


async def wipe(transports: Iterable[SshTransport], *names: str) -> None:
    """Remove what a previous run left under each host's root (and stop its services)."""
    for t in transports:
        for service in ("itrust", "mariadb", "proxy"):
            await t.stop_service(service)
        wiped = await t.run("rm -rf " + " ".join(names or ("*", ".ansible")))
        assert wiped.ok, f"{t.host.name}: could not wipe its root: {wiped.describe()}: {' | '.join(wiped.tail[-3:])}"


__all__ = ["Outcome", "ansible_run", "end_state", "native_run", "new_runner", "wipe"]
