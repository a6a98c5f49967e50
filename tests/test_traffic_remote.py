"""traffic/remote.py's clear refusals, before any forward is opened: no runtime file yet, a unix admin socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsconsole.hosts import Host
from opsconsole.traffic.base import TrafficUnavailable
from opsconsole.traffic.remote import remote_admin_port
from opsconsole.transport.local import LocalTransport


def transport(tmp_path: Path) -> LocalTransport:
    return LocalTransport(Host(name="proxy-1", group="proxy", address="127.0.0.1", root=str(tmp_path)))


async def test_no_runtime_file_names_the_host_and_path(tmp_path: Path) -> None:
    with pytest.raises(TrafficUnavailable, match=r"proxy-1:.*run/proxy.json is missing .*has `provision` started"):
        await remote_admin_port(transport(tmp_path), "run/proxy.json")  # type: ignore[arg-type]


async def test_a_unix_admin_socket_cannot_be_forwarded(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "proxy.json").write_text(json.dumps({"admin": "unix:/x/admin.sock", "pid": 1}))
    with pytest.raises(TrafficUnavailable, match=r"loopback TCP admin listen"):
        await remote_admin_port(transport(tmp_path), "run/proxy.json")  # type: ignore[arg-type]


async def test_the_port_comes_from_the_runtime_file(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "proxy.json").write_text(json.dumps({"admin": "http://127.0.0.1:41234", "pid": 1}))
    assert await remote_admin_port(transport(tmp_path), "run/proxy.json") == 41234  # type: ignore[arg-type]
