"""Alert hooks on health state changes: a command fed the event as JSON, and/or a webhook POST.

Hooks run in the background and never hold up the monitor; their failures are
reported as warnings, once per failure.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from opsconsole.events import EventBus, HealthChanged, Message


class AlertHooks:
    def __init__(self, bus: EventBus, command: str | None, webhook: str | None, timeout: float = 10.0) -> None:
        self.bus = bus
        self.command = command
        self.webhook = webhook
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook)

    def fire(self, event: HealthChanged) -> None:
        if not self.enabled:
            return
        task = asyncio.ensure_future(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: HealthChanged) -> None:
        payload = json.dumps(event.to_dict()).encode()
        if self.command:
            try:
                proc = await asyncio.create_subprocess_shell(
                    self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
                async with asyncio.timeout(self.timeout):
                    _, err = await proc.communicate(payload)
                if proc.returncode != 0:
                    self._warn(f"alert command exited {proc.returncode}: {err.decode(errors='replace').strip()[-200:]}")
            except TimeoutError:
                proc.kill()
                self._warn(f"alert command timed out after {self.timeout:g}s")
            except OSError as exc:
                self._warn(f"alert command could not run: {exc}")
        if self.webhook:
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.post(self.webhook, content=payload,
                                                 headers={"Content-Type": "application/json"})
                if response.status_code >= 300:
                    self._warn(f"alert webhook answered {response.status_code}")
            except httpx.HTTPError as exc:
                self._warn(f"alert webhook failed: {exc}")

    def _warn(self, text: str) -> None:
        self.bus.emit(Message(text=text, level="warning"))

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
