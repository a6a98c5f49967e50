"""Builds on a build host (`build.host: HOST`), as Jenkins builds on its own agent.

The console checks the commit out here (its mirror of the repo is here), ships the tree to the host
over the transport, runs the build commands there and brings the artifact back, its sha256 taken on
the host and checked against the bytes that arrived. A cancelled or timed-out command is killed there
with its process group, by the transport.

The host's environment is confined as a local build's is: only the host's own allow-listed variables
(its PATH and HOME, not ours) and the values `build.env` names, which the transport exports in its
wrapper, are left set — the rest is unset in the build's own shell, so no value is in any argv.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import shlex
import tarfile
from pathlib import Path
from typing import Mapping

from opsconsole.errors import OperatorError
from opsconsole.fsio import write_atomic
from opsconsole.transport.base import Transport

BUILDS_DIR = "builds"  # under the build host's root: builds/APP is the work tree, as the local one


class RemoteBuildError(OperatorError):
    """The build host could not take the source or give the artifact back (not a failed build command)."""


def confined(command: str, allowed: tuple[str, ...], given: Mapping[str, str],
             prefixes: tuple[str, ...] = ()) -> str:
    """`command` with an environment confined as a local build's: the host's own `allowed` variables (and
    those starting with `prefixes`) where set, and the names in `given`, whose values the transport exports.

    Everything else is unset in the shell that runs the command, not by `env -i NAME=value …`: that would put
    each value in a process's arguments, readable by every user of the build host (the transport sends this
    whole script on stdin, so nothing here is in any argv)."""
    keep = " ".join(sorted({*allowed, *given}))
    patterns = "|".join(f"{p}*" for p in prefixes if p.replace("_", "").isalnum())
    prefix_case = f" {patterns}) ;;" if patterns else ""
    # `env` lists the exported names (a value with a newline may add a stray "name", which unset ignores).
    return (f'for __v in $(env | sed -n "s/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p"); do\n'
            f'  case " {keep} " in *" $__v "*) ;; *) case $__v in{prefix_case} *) unset "$__v" 2>/dev/null;; esac;; esac\n'
            f'done; unset __v\n{command}')


def work_dir(app: str) -> str:
    return posixpath.join(BUILDS_DIR, app)


async def ship_source(transport: Transport, tree: Path, app: str, scratch: Path) -> None:
    """The checked-out `tree` (without .git) becomes builds/APP on the host, nothing left from earlier builds."""
    tarball = scratch / f"{app}-source.tar.gz"

    def pack() -> None:
        with tarfile.open(tarball, "w:gz") as tar:
            for child in sorted(tree.iterdir()):
                if child.name != ".git":
                    tar.add(child, arcname=child.name)

    await asyncio.to_thread(pack)
    tarball.chmod(0o600)
    remote_tar = posixpath.join(BUILDS_DIR, f".{app}-source.tar.gz")
    try:
        await transport.put_file(str(tarball), remote_tar, mode=0o600)
    finally:
        tarball.unlink(missing_ok=True)
    q = shlex.quote
    where = work_dir(app)
    result = await transport.run(f"rm -rf {q(where)} && mkdir -p {q(where)} && tar -xzf {q(remote_tar)} -C {q(where)}"
                                 f" && rm -f {q(remote_tar)}", timeout=600)
    if not result.ok:
        raise RemoteBuildError(f"could not unpack the source on the build host: {result.describe()}: "
                               + " | ".join(result.tail[-3:]))


async def fetch_artifact(transport: Transport, app: str, artifact: str, dest: Path) -> str:
    """Copy builds/APP/ARTIFACT from the host to `dest` (0600); its sha256, the host's and ours agreeing."""
    remote = posixpath.join(work_dir(app), artifact)
    result = await transport.run(f"test -f {shlex.quote(remote)} && sha256sum -- {shlex.quote(remote)}", timeout=600)
    if not result.ok or not result.stdout.split():
        raise RemoteBuildError(f"artifact {artifact!r} was not produced on the build host")
    theirs = result.stdout.split()[0]
    content = await transport.read_file(remote)
    ours = hashlib.sha256(content).hexdigest()
    if ours != theirs:
        raise RemoteBuildError(f"artifact {artifact!r} arrived damaged: sha256 {ours} here, {theirs} on the build host")
    write_atomic(dest, content, mode=0o600)
    return ours
