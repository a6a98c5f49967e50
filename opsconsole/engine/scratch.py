"""An engine that writes nothing where the operator keeps state, for `--check` and for reading a script.

`--check`, and a script refused as bad input, once created the state directory, the local hosts' port
book and the demo repos: a check changed the machine. The engine built here lives on a scratch state
directory holding a copy of what the real one says about the fleet (the names a script may use: EC2
instances, local hosts' ports), and is thrown away with it. Every playbook is parsed as `Engine.open`
parses them; no demo repo is made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from opsconsole.config.model import Config
from opsconsole.engine.engine import Engine
from opsconsole.yamlsource import SourceError

# What of the state directory names hosts (opsconsole/inventory.py, opsconsole/ec2/records.py).
FLEET_STATE = ("inventory", "ec2")


@contextlib.contextmanager
def scratch_engine(config: Config) -> Iterator[Engine]:
    """An engine over `config` with a scratch copy of its state's fleet names (removed on exit)."""
    problem = state_dir_problem(config.state_dir)
    if problem:
        raise SourceError(config.file, None, "state_dir", f"{config.state_dir} cannot be the state directory: {problem}")
    with tempfile.TemporaryDirectory(prefix="opsconsole-check-") as scratch:
        state = Path(scratch) / "state"
        for part in FLEET_STATE:
            if (config.state_dir / part).is_dir():
                shutil.copytree(config.state_dir / part, state / part)
        engine = Engine(replace(config, state_dir=state))
        engine.deployer.load_playbooks()  # SourceError names a bad playbook's file and line
        yield engine


def state_dir_problem(path: Path) -> str | None:
    """Why the console could not make or use `path` as its state directory; None when it could. Tried, not
    guessed from permission bits (root passes every access check, yet cannot make a directory in /proc): a
    directory is made where the state directory is, or would be, and removed at once."""
    if path.exists() and not path.is_dir():
        return "it is not a directory"
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
