"""Small asyncio helpers the parts share."""

from __future__ import annotations

import asyncio
from typing import Any


async def insist_cancel(task: "asyncio.Future[Any]", every: float = 1.0, tries: int = 30) -> None:
    """Cancel `task` again every `every` seconds until it ends.

    On Python 3.11 a cancel can be lost inside `asyncio.wait_for` (seen here about once in twenty
    runs of a cancelled build); work the operator stopped must not run on.
    """
    loop = asyncio.get_running_loop()
    for _ in range(tries):
        if task.done():
            return
        task.cancel()
        deadline = loop.time() + every
        while not task.done() and loop.time() < deadline:
            await asyncio.sleep(0.02)
