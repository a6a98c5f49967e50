"""One EC2 client per group, and calls to it that never block the event loop.

boto3 is synchronous; every call runs in a worker thread (`asyncio.to_thread`)
and any failure comes back as an `Ec2Error`. Throttling (RequestLimitExceeded)
and transient errors are retried by botocore itself: "standard" retry mode,
exponential backoff with full jitter (1 s, 2 s, 4 s … at most 20 s a wait, up
to 8 attempts a call) — ours is no second implementation of that. What we add:
a cap on the calls a group makes per second (`calls_per_second`), so 200
instances' worth of calls does not burst into AWS's throttle in the first
place, and our own loops (waiting for a state) back off on top, see
`fleet.Ec2Fleet._wait_states`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from opsconsole.ec2.config import Ec2GroupConfig
from opsconsole.ec2.errors import Ec2Error, translate

RETRIES = {"max_attempts": 8, "mode": "standard"}


def make_client(cfg: Ec2GroupConfig) -> Any:
    """An EC2 client for the group's region (and endpoint). Credentials: boto3's standard chain only."""
    boto_config = BotoConfig(region_name=cfg.region, retries=RETRIES, connect_timeout=10, read_timeout=60,
                             user_agent_extra="opsconsole")
    # A fresh session per client: boto3's default session is not thread-safe, and we call from threads.
    return boto3.session.Session().client("ec2", endpoint_url=cfg.endpoint_url, config=boto_config)


class Ec2Api:
    """Runs calls on one client; `where` names the config section in every error message."""

    def __init__(self, cfg: Ec2GroupConfig, where: str) -> None:
        self.cfg = cfg
        self.where = where
        self._client: Any = None
        self._pace = asyncio.Lock()
        self._next_start = 0.0

    async def _wait_turn(self) -> None:
        """Space call starts 1/calls_per_second apart (a call that waits holds the others back, in order)."""
        async with self._pace:
            loop = asyncio.get_running_loop()
            delay = self._next_start - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next_start = max(loop.time(), self._next_start) + 1.0 / self.cfg.calls_per_second

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = make_client(self.cfg)
            except Exception as exc:  # e.g. a malformed endpoint_url or an unknown region
                raise translate(exc, "setting up the EC2 client", self.where) from None
        return self._client

    async def call(self, doing: str, operation: str, **params: Any) -> dict[str, Any]:
        """`client.<operation>(**params)` in a thread; `doing` words the error ("creating 2 instances")."""
        client = self.client
        await self._wait_turn()
        try:
            return await asyncio.to_thread(getattr(client, operation), **params)
        except Ec2Error:
            raise
        except Exception as exc:
            raise translate(exc, doing, self.where) from None

    async def pages(self, doing: str, operation: str, key: str, **params: Any) -> list[Any]:
        """Every item under `key` over all pages of a Describe* operation, `page_size` items a page.

        Page by page through `call`, so each page is paced and retried like any call. (AWS refuses
        MaxResults next to explicit ids: callers that name ids get one answer, unpaged.)
        """
        items: list[Any] = []
        token: str | None = None
        while True:
            page_params = dict(params)
            if not any(name.endswith("Ids") for name in params):
                page_params["MaxResults"] = self.cfg.page_size
            if token:
                page_params["NextToken"] = token
            answer = await self.call(doing, operation, **page_params)
            items.extend(answer.get(key, []))
            token = answer.get("NextToken")
            if not token:
                return items
