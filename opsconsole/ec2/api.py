"""One EC2 client per group, and calls to it that never block the event loop.

boto3 is synchronous; every call runs in a worker thread (`asyncio.to_thread`)
and any failure comes back as an `Ec2Error`. Throttling and transient errors
are retried by botocore itself ("standard" retry mode: exponential backoff
with jitter) — our own loops (waiting for a state) add their own backoff on
top, see `fleet.Ec2Fleet._wait_states`.
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
        try:
            return await asyncio.to_thread(getattr(client, operation), **params)
        except Ec2Error:
            raise
        except Exception as exc:
            raise translate(exc, doing, self.where) from None

    async def pages(self, doing: str, operation: str, key: str, **params: Any) -> list[Any]:
        """Every item under `key` over all pages of a paginated operation."""
        client = self.client

        def collect() -> list[Any]:
            items: list[Any] = []
            for page in client.get_paginator(operation).paginate(**params):
                items.extend(page.get(key, []))
            return items

        try:
            return await asyncio.to_thread(collect)
        except Exception as exc:
            raise translate(exc, doing, self.where) from None
