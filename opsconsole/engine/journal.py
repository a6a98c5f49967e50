"""The append-only journal: every command, who issued it, when, and how it ended.

Entries are JSON lines written (and fsynced) before a command acts and after it
ends, so a console that is killed mid-command leaves a `start` with no `end`:
the next console reads that as "interrupted". The file is never rewritten.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from opsconsole.fsio import append_jsonl, make_private_dir, read_jsonl
from opsconsole.pids import pid_alive
from opsconsole.redact import Redactor


def default_issuer() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class Journal:
    def __init__(self, path: Path, redactor: Redactor | None = None) -> None:
        self.path = path
        # Secrets never reach the file: configured values, and secret-looking `NAME=value` in typed commands.
        self.redactor = redactor if redactor is not None else Redactor()
        make_private_dir(path.parent)

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        if isinstance(fields.get("command"), str):
            fields["command"] = self.redactor.command(fields["command"])
        entry = self.redactor.value({"ts": time.time(), "kind": kind, **fields})
        append_jsonl(self.path, entry)  # whole at the end even with two consoles writing, on disk on return
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry in order; a torn last line (a crash mid-write) is skipped."""
        return read_jsonl(self.path)

    def unfinished(self) -> list[dict[str, Any]]:
        """Commands that started but never recorded an end, whose console is gone (not one still running here)."""
        open_: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            cid = entry.get("id")
            if entry.get("kind") == "command.start":
                open_[cid] = entry
            elif entry.get("kind") in ("command.end", "command.interrupted"):
                open_.pop(cid, None)
        return [e for e in open_.values() if not _still_running(e)]

    def close_unfinished(self, noticed_by: str) -> list[dict[str, Any]]:
        """Record each unfinished command as interrupted (once), so it is reported once, not at every start."""
        found = self.unfinished()
        for entry in found:
            self.append("command.interrupted", id=entry.get("id"), command=entry.get("command"),
                        issuer=entry.get("issuer"), noticed_by=noticed_by, message="its console stopped")
        return found


def _still_running(entry: dict[str, Any]) -> bool:
    """A command started by a process on this machine that is still alive is not unfinished, it is running."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or entry.get("machine") != socket.gethostname():
        return False
    return pid_alive(pid)
