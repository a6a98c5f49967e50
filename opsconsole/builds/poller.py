"""Follow an app's branch: ask the remote for its head cheaply, queue a build when it moves.

`git ls-remote` costs one round trip and no objects, so polling every few
seconds is fine. Commits that arrived together (three quick pushes) are all
listed: the newest is built, the ones before it are recorded as skipped.
Problems (unreachable repo, missing branch) are reported once when they start
and once when they end — not every poll.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from opsconsole.builds import git
from opsconsole.builds.queue import BuildQueue
from opsconsole.config.model import AppConfig
from opsconsole.events import EventBus, Message
from opsconsole.fsio import write_atomic


class HeadBook:
    """The last branch head seen per app, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.heads: dict[str, str] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            self.heads = {}

    def get(self, app: str) -> str | None:
        return self.heads.get(app)

    def set(self, app: str, sha: str) -> None:
        self.heads[app] = sha
        write_atomic(self.path, json.dumps(self.heads, indent=1, sort_keys=True))


class BranchPoller:
    def __init__(self, bus: EventBus, app: AppConfig, queue: BuildQueue, heads: HeadBook) -> None:
        self.bus = bus
        self.app = app
        self.queue = queue
        self.heads = heads
        self.problem: str | None = None
        self.polls = 0

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.app.poll_interval)

    async def poll_once(self) -> str | None:
        """One poll; returns the head seen, or None if the remote could not be asked."""
        self.polls += 1
        try:
            head = await git.branch_head(self.app.repo, self.app.branch)
        except (git.GitError, asyncio.TimeoutError, OSError) as exc:
            self._problem(str(exc))
            return None
        self._problem(None)
        last = self.heads.get(self.app.name)
        if head == last:
            return head
        builder = self.queue.builder
        try:
            await builder.update_cache(self.app)
            skipped = await self._between(last, head)
        except git.GitError as exc:
            self._problem(str(exc))
            return None
        for sha in skipped:
            record = await builder.new_record(self.app, sha, status="skipped")
            builder.mark(record, "skipped", f"{head[:7]} arrived in the same poll")
        self.bus.emit(Message(text=f"{self.app.name}: {self.app.branch} moved to {head[:7]}"
                                   + (f" ({len(skipped)} earlier commit(s) skipped)" if skipped else "")))
        self.heads.set(self.app.name, head)
        if builder.store.artifact_for(self.app.name, head) is None:
            await self.queue.submit(self.app, head, auto_deploy=True)
        return head

    async def _between(self, last: str | None, head: str) -> list[str]:
        """Commits after `last` up to (not including) `head`, oldest first, along the first parents."""
        if last is None:
            return []
        cache = self.queue.builder.cache_dir(self.app)
        try:
            out = await git.git("rev-list", "--first-parent", "--reverse", f"{last}..{head}", cwd=cache)
        except git.GitError:
            return []  # history rewritten (force push): nothing between to list
        return [sha for sha in out.split() if sha != head]

    def _problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        if problem is not None:
            self.bus.emit(Message(text=f"{self.app.name}: cannot poll {self.app.repo} ({self.app.branch}): {problem}",
                                  level="warning"))
        else:
            self.bus.emit(Message(text=f"{self.app.name}: polling {self.app.branch} works again"))
        self.problem = problem
