"""A scratch state directory for an engine that must write nothing where the operator keeps state.

`--check`, and a script refused as bad input, once created the state directory, the local hosts' port
book and the demo repos: a check changed the machine. `Engine.checking` builds its engine on the config
given here, whose state directory is a scratch one holding a copy of what the real one says about the
fleet (the names a script may use: EC2 instances, local hosts' ports), thrown away on exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from opsconsole.config.model import Config
from opsconsole.yamlsource import SourceError

# What of the state directory names hosts (opsconsole/inventory.py, opsconsole/ec2/records.py, engine/cloud.py):
# regular files only, by name. A console saving its inventory meanwhile has temp files beside these
# (`.ec2-web.json.<hex>.tmp`) that vanish under a copy of the whole directory.
FLEET_STATE = ("inventory/local-ports.json", "inventory/ec2-*.json", "ec2/scaled.json")


@contextlib.contextmanager
def scratch_config(config: Config) -> Iterator[Config]:
    """`config` on a scratch copy of its state's fleet names (removed on exit). SourceError when the real
    state directory could not be made or used, as the engine would say it."""
    problem = state_dir_problem(config.state_dir)
    if problem:
        raise SourceError(config.file, None, "state_dir", f"{config.state_dir} cannot be the state directory: {problem}")
    with tempfile.TemporaryDirectory(prefix="opsconsole-check-") as scratch:
        state = Path(scratch) / "state"
        for pattern in FLEET_STATE:
            for source in sorted(config.state_dir.glob(pattern)):
                data = _regular_file(source)
                if data is not None:
                    target = state / source.relative_to(config.state_dir)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
        yield replace(config, state_dir=state, heartbeat=replace(config.heartbeat, log_file=state / "logs" / "heartbeat.log"))


def _regular_file(path: Path) -> bytes | None:
    """`path`'s bytes; None when it is gone, a link or not a regular file (none of ours)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            return None
        raise SourceError(path, None, "", f"cannot read it to check against it: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read()


def state_dir_problem(path: Path) -> str | None:
    """Why the console could not make or use `path` as its state directory; None when it could. Tried, not
    guessed from permission bits (root passes every access check, yet cannot make a directory in /proc): a
    directory is made where the state directory is, or would be, and removed at once."""
    if path.is_symlink() and not path.exists():
        return f"it is a link to {os.readlink(path)}, which does not exist"
    if path.exists() and not path.is_dir():
        return "it is not a directory"
    if path.is_dir() and os.geteuid() != 0 and path.stat().st_uid != os.geteuid():
        return f"it belongs to uid {path.stat().st_uid}; the console keeps it 0700 for its own user"
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        return f"{where} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".opsconsole-check-", dir=where))
    except OSError as exc:
        return f"{exc.strerror} (in {where})"
    return None
