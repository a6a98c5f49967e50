"""Build one commit of an app: clean checkout, build commands, artifact stored by commit.

Builds run on this machine through the local transport, or on `build.host` through its transport
(opsconsole.builds.remote); either way a build that runs past its timeout or is cancelled has its
whole process group killed.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
import asyncio
import hashlib
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

from opsconsole import login_env
from opsconsole.builds import git
from opsconsole.config.model import AppConfig
from opsconsole.events import BuildUpdate, EventBus, OutputLine
from opsconsole.fsio import append_jsonl, make_private_dir, read_jsonl
from opsconsole.hosts import Host
from opsconsole.transport.base import CommandResult, LineHandler
from opsconsole.builds import remote
from opsconsole.transport.base import Transport
from opsconsole.transport.local import LocalTransport


# What a build sees of the console's environment: the login allow-list (opsconsole.login_env) and what
# `build.env` names. Not the rest: AWS keys, SSH_AUTH_SOCK, the proxy token and database password
# variables stay with the console, since a build runs whatever anyone who can push to the branch wrote.
def build_environment(app: AppConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment an app's build commands run with: the allow-list plus what `build.env` names."""
    return login_env.login_environment(environ, also=app.build.env)


class BuildFailed(OperatorError):
    def __init__(self, record: "BuildRecord", message: str) -> None:
        self.record = record
        super().__init__(message)


@dataclass(frozen=True)
class BuildRecord:
    build_id: str
    app: str
    commit: str
    status: str  # queued | running | succeeded | failed | cancelled | timed_out | skipped
    author: str = ""
    subject: str = ""
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    artifact: str | None = None
    sha256: str | None = None
    log: str | None = None
    message: str = ""

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at


class BuildStore:
    """Build history as JSON lines (one line per state change; the last one wins)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "builds"
        make_private_dir(self.dir)
        self.history = self.dir / "history.jsonl"
        self.artifacts = state_dir / "artifacts"

    def save(self, record: BuildRecord) -> None:
        append_jsonl(self.history, asdict(record))

    def records(self) -> list[BuildRecord]:
        latest: dict[str, BuildRecord] = {}
        for data in read_jsonl(self.history):
            try:
                latest[data["build_id"]] = BuildRecord(**data)
            except (TypeError, KeyError):
                continue  # a line of some other shape
        return sorted(latest.values(), key=lambda r: r.queued_at)

    def artifact_for(self, app: str, commit: str) -> BuildRecord | None:
        for record in reversed(self.records()):
            if record.app == app and record.commit == commit and record.status == "succeeded" \
                    and record.artifact and Path(record.artifact).is_file():
                return record
        return None

    def log_path(self, build_id: str) -> Path:
        return self.dir / "logs" / f"{build_id}.log"


class Builder:
    def __init__(self, bus: EventBus, store: BuildStore, state_dir: Path,
                 build_host: Callable[[str], Transport] | None = None) -> None:
        self.bus = bus
        self.store = store
        self.state_dir = state_dir
        # `build.host` name -> its transport (the fleet's); OperatorError when there is no such host
        self.build_host = build_host
        self._cache_locks: dict[str, asyncio.Lock] = {}

    def _update(self, record: BuildRecord, **changes: object) -> BuildRecord:
        record = replace(record, **changes)  # type: ignore[arg-type]
        record = replace(record, message=self.bus.redactor.text(record.message))  # history.jsonl holds no secret
        self.store.save(record)
        self.bus.emit(BuildUpdate(build_id=record.build_id, app=record.app, commit=record.commit,
                                  status=record.status, author=record.author, subject=record.subject,
                                  duration=record.duration, artifact=record.artifact, message=record.message))
        return record

    async def update_cache(self, app: AppConfig) -> None:
        """Clone or fetch the app's cached mirror; one at a time per app (poller and commands share it)."""
        lock = self._cache_locks.setdefault(app.name, asyncio.Lock())
        async with lock:
            await git.update_cache(app.repo, self.cache_dir(app))

    async def resolve(self, app: AppConfig, commit: str | None) -> str:
        """The full commit id to build: the branch head, or `commit` (a sha or ref) from the repo."""
        cache = self.cache_dir(app)
        await self.update_cache(app)
        if commit is None:
            return await git.branch_head(app.repo, app.branch)
        try:
            return await git.resolve_commit(cache, commit)
        except git.GitError:
            raise git.GitError(f"commit {commit!r} is not in {app.repo}") from None

    def _host_transport(self, app: AppConfig) -> Transport:
        if self.build_host is None:
            raise OperatorError(f"app {app.name}: build.host {app.build.host!r} needs the fleet, which this "
                                "builder was not given")
        return self.build_host(str(app.build.host))

    def cache_dir(self, app: AppConfig) -> Path:
        return self.state_dir / "builds" / "cache" / f"{app.name}.git"

    async def new_record(self, app: AppConfig, commit: str, status: str = "queued") -> BuildRecord:
        """A build record for `commit` (a full sha) with its author and subject, saved and announced."""
        info = await git.commit_info(self.cache_dir(app), commit)
        build_id = f"{app.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        return self._update(BuildRecord(build_id=build_id, app=app.name, commit=info.sha, status=status,
                                        author=info.author, subject=info.subject, queued_at=time.time(),
                                        log=str(self.store.log_path(build_id))))

    def mark(self, record: BuildRecord, status: str, message: str = "") -> BuildRecord:
        """Record a build that ends without running: skipped (a newer commit won) or cancelled in the queue."""
        return self._update(record, status=status, finished_at=time.time(), message=message)

    async def build(self, app: AppConfig, commit: str) -> BuildRecord:
        """Build `commit` now, outside any queue; returns the succeeded record or raises BuildFailed."""
        await self.update_cache(app)
        return await self.run(app, await self.new_record(app, commit))

    async def run(self, app: AppConfig, record: BuildRecord) -> BuildRecord:
        """Run a queued build; returns the succeeded record or raises BuildFailed (cancel propagates)."""
        cache = self.cache_dir(app)
        build_id = record.build_id
        log_path = self.store.log_path(build_id)
        make_private_dir(log_path.parent)
        record = self._update(record, status="running", started_at=time.time())
        work = self.state_dir / "builds" / "work" / app.name
        try:
            await git.checkout_clean(cache, record.commit, work)
            deadline = time.monotonic() + app.build.timeout
            build_vars = {"OPSCONSOLE_APP": app.name, "OPSCONSOLE_COMMIT": record.commit,
                          "OPSCONSOLE_VERSION": record.short, "OPSCONSOLE_BUILD": build_id}
            host = self._host_transport(app) if app.build.host else None
            if host is None:
                transport: Transport = LocalTransport(Host(name=f"build:{app.name}", group="builds",
                                                           address="127.0.0.1", root=str(work)), self.bus.redactor)
                env = {**build_environment(app), **build_vars}

                async def step(command: str, timeout: float, on_line: LineHandler) -> CommandResult:
                    return await transport.run(command, on_line=on_line, timeout=timeout, env=env, inherit_env=False)
            else:
                await remote.ship_source(host, work, app.name, work.parent)
                # The host's own allow-listed variables, not ours (our PATH and HOME are this machine's).
                given = {name: value for name, value in os.environ.items() if name in app.build.env} | build_vars

                async def step(command: str, timeout: float, on_line: LineHandler) -> CommandResult:
                    return await host.run(remote.confined(command, login_env.ALLOWED, given, login_env.PREFIXES), on_line=on_line,
                                          timeout=timeout, env=given, cwd=remote.work_dir(app.name))
            hide = self.bus.redactor.text  # the log file gets what the bus shows: secrets masked
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as log:
                def on_line(line: str, stream: str) -> None:
                    log.write(hide(line) + "\n")
                    log.flush()
                    self.bus.emit(OutputLine(host=f"build:{app.name}", line=line, stream=stream, source=build_id))

                for command in app.build.commands:
                    log.write(hide(f"$ {command}") + "\n")
                    remaining = deadline - time.monotonic()
                    result = await step(command, max(remaining, 0.01), on_line)
                    if result.timed_out:
                        log.write(f"-- timed out after {app.build.timeout:g}s; process group killed\n")
                        raise BuildFailed(self._update(record, status="timed_out", finished_at=time.time(),
                                                       message=f"timed out after {app.build.timeout:g}s in `{command}`"),
                                          f"build {build_id} timed out after {app.build.timeout:g}s")
                    if not result.ok:
                        tail = " | ".join(result.tail[-5:])
                        raise BuildFailed(self._update(record, status="failed", finished_at=time.time(),
                                                       message=f"`{command}` failed ({result.describe()}): {tail}"),
                                          f"build {build_id} of {record.short} failed: `{command}` {result.describe()}: {tail}")
            artifact_src = work / app.build.artifact
            dest = self.store.artifacts / app.name / record.commit / artifact_src.name
            if host is not None:
                make_private_dir(dest.parent)
                digest = await remote.fetch_artifact(host, app.name, app.build.artifact, dest)
                return self._update(record, status="succeeded", finished_at=time.time(), artifact=str(dest),
                                    sha256=digest)
            if not artifact_src.is_file():
                raise BuildFailed(self._update(record, status="failed", finished_at=time.time(),
                                               message=f"artifact {app.build.artifact!r} was not produced"),
                                  f"build {build_id} failed")
            make_private_dir(dest.parent)
            shutil.copy2(artifact_src, dest)
            os.chmod(dest, 0o600)  # like everything under the state dir
            digest = hashlib.sha256(dest.read_bytes()).hexdigest()
            return self._update(record, status="succeeded", finished_at=time.time(), artifact=str(dest), sha256=digest)
        except BuildFailed:
            raise
        except git.GitError as exc:
            raise BuildFailed(self._update(record, status="failed", finished_at=time.time(), message=str(exc)), str(exc)) from None
        except OperatorError as exc:  # the build host: unknown, unreachable, or it could not ship or give back
            where = f" on build host {app.build.host}" if app.build.host else ""
            raise BuildFailed(self._update(record, status="failed", finished_at=time.time(),
                                           message=f"{exc}{where}"), f"build {build_id} failed{where}: {exc}") from None
        except BaseException:
            self._update(record, status="cancelled", finished_at=time.time(), message="cancelled; process group killed")
            raise
