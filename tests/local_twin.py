"""One playbook run both ways on this machine, for the twin tests of the native modules and keywords:
natively on a Rig's one local host, and by real ansible-playbook (`-c local`); each gives what a test
compares (its result and how many tasks changed something). The SSH-lab twins are in ansible_twin.py."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from test_ansible_names import ansible_playbook
from test_playbooks import Rig

_RECAP = re.compile(r"^localhost\s*:\s*(.*)$", re.M)


def recap(output: str) -> dict[str, int]:
    """ansible-playbook's PLAY RECAP counts for localhost (ok, changed, failed, rescued, ignored …)."""
    found = _RECAP.findall(output)
    assert found, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[-1])}


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every file and directory under root: relative path -> (octal mode, content)."""
    return {str(p.relative_to(root)): (oct(p.stat().st_mode & 0o777), p.read_text() if p.is_file() else "/")
            for p in sorted(root.rglob("*"))}


async def native_run(rig: Rig, site: Path, extra_vars: dict[str, str], **kw: Any) -> tuple[Any, int]:
    """`site` natively on one host whose root is extra_vars["host_root"]: (the run's result, tasks changed)."""
    rig.events.clear()
    host = Host(name="localhost", group="all", address="127.0.0.1", root=extra_vars["host_root"])
    result = await rig.runner.run(load_playbook(site), [host], extra_vars=extra_vars, **kw)
    return result, sum(1 for e in rig.finished("localhost") if e.status == "changed")


def ansible_run(tmp_path: Path, site: Path, extra_vars: dict[str, str], *args: str) -> dict[str, int]:
    """`site` by ansible-playbook on this machine; it must succeed; its recap counts."""
    done = ansible_playbook(tmp_path, str(site), "-e", json.dumps(extra_vars), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return recap(done.stdout)


async def _native_changed(site: Path, rig: Rig, root: Path, **kw: Any) -> int:
    result, changed = await native_run(rig, site, {"host_root": str(root)}, **kw)
    assert result.ok, result.failures
    return changed


def _ansible_changed(site: Path, tmp_path: Path, root: Path, *args: str) -> int:
    return ansible_run(tmp_path, site, {"host_root": str(root)}, *args)["changed"]


def twins(site: Path) -> tuple[Any, Any]:
    """`native(rig, root, **run_options)` and `ansible(tmp_path, root, *args)` for `site` on one host whose
    root is `root`: each runs it (it must succeed) and says how many tasks changed something."""
    return functools.partial(_native_changed, site), functools.partial(_ansible_changed, site)
