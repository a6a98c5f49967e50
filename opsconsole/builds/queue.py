"""The build queue: one build per app at a time, a global limit across apps, newest commit wins.

A build requested while another of the same app is already waiting replaces
it; the one replaced is recorded as `skipped`, so nothing silently vanishes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable

from opsconsole.builds.runner import BuildFailed, Builder, BuildRecord
from opsconsole.config.model import AppConfig

OnSuccess = Callable[[AppConfig, BuildRecord], Awaitable[None]]


@dataclass
class _Waiting:
    record: BuildRecord
    auto_deploy: bool = False
    done: asyncio.Future[BuildRecord] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class _AppLane:
    waiting: _Waiting | None = None
    running: tuple[BuildRecord, asyncio.Task[BuildRecord]] | None = None
    worker: asyncio.Task[None] | None = None


class BuildQueue:
    def __init__(self, builder: Builder, apps: dict[str, AppConfig], max_parallel: int,
                 on_success: OnSuccess | None = None) -> None:
        self.builder = builder
        self.apps = apps
        self._slots = asyncio.Semaphore(max_parallel)
        self._lanes: dict[str, _AppLane] = {name: _AppLane() for name in apps}
        self.on_success = on_success

    async def submit(self, app: AppConfig, commit: str, *, auto_deploy: bool = False) -> asyncio.Future[BuildRecord]:
        """Queue a build of `commit`; the future resolves with its final record (succeeded, failed, skipped…).

        `auto_deploy`: on success, start the app's configured deploy (the poller's builds do; a build an
        operator's `deploy` or `roll` asked for does not — that command deploys it itself).
        """
        lane = self._lanes[app.name]
        if lane.waiting is not None and lane.waiting.record.commit == commit:
            return lane.waiting.done
        record = await self.builder.new_record(app, commit)
        if lane.waiting is not None:
            replaced = lane.waiting
            replaced.done.set_result(self.builder.mark(replaced.record, "skipped", f"superseded by {record.short}"))
        lane.waiting = _Waiting(record, auto_deploy)
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.ensure_future(self._work(app, lane))
        return lane.waiting.done

    async def _work(self, app: AppConfig, lane: _AppLane) -> None:
        while lane.waiting is not None:
            async with self._slots:
                job, lane.waiting = lane.waiting, None
                if job is None or job.done.done():
                    continue
                task = asyncio.ensure_future(self.builder.run(app, job.record))
                lane.running = (job.record, task)
                try:
                    record = await task
                except BuildFailed as exc:
                    job.done.set_result(exc.record)
                    continue
                except asyncio.CancelledError:
                    if not job.done.done():
                        job.done.set_result(self._final(job.record, "cancelled"))
                    if not task.cancelled():
                        raise  # the worker itself is being shut down
                    continue
                finally:
                    lane.running = None
            job.done.set_result(record)
            if self.on_success is not None and job.auto_deploy:
                await self.on_success(app, record)

    def _final(self, record: BuildRecord, status: str) -> BuildRecord:
        latest = {r.build_id: r for r in self.builder.store.records()}.get(record.build_id, record)
        return latest if latest.status == status else self.builder.mark(record, status)

    def cancel(self, build_id: str) -> BuildRecord | None:
        """Cancel a waiting or running build; None if no such build is queued or running."""
        for lane in self._lanes.values():
            if lane.waiting is not None and lane.waiting.record.build_id == build_id:
                job, lane.waiting = lane.waiting, None
                record = self.builder.mark(job.record, "cancelled", "cancelled before it started")
                job.done.set_result(record)
                return record
            if lane.running is not None and lane.running[0].build_id == build_id:
                lane.running[1].cancel()
                return lane.running[0]
        return None

    def active(self) -> list[BuildRecord]:
        result = []
        for lane in self._lanes.values():
            if lane.running is not None:
                result.append(replace(lane.running[0], status="running"))
            if lane.waiting is not None:
                result.append(lane.waiting.record)
        return result

    async def close(self) -> None:
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for lane in self._lanes.values():
            if lane.running is not None:
                lane.running[1].cancel()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

