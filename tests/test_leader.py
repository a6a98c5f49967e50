"""A service's session leader is the service itself when its command is one simple command (see
transport/leader.py), on both transports; anything the shell must stay for runs as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opsconsole.hosts import Host
from opsconsole.transport.leader import leader_command
from opsconsole.transport.local import LocalTransport


@pytest.mark.parametrize("command", [
    "python3 current/app.py --port 8080 --bind 0.0.0.0",
    "  ./bin/server --name 'a b' -x \"$PORT\"  ",
    "/usr/bin/env FOO=1 gunicorn app:wsgi",
])
def test_one_simple_command_replaces_the_shell(command: str) -> None:
    assert leader_command(command) == f"exec {command.strip()}"


@pytest.mark.parametrize("command", [
    "",
    "cd app && python3 main.py",             # a list
    "python3 a.py; python3 b.py",
    "server | logger",                       # a pipeline
    "sleep 300 & wait",                      # a background job
    "(trap '' TERM; sleep 9) & wait",        # a subshell
    "{ server; }",                           # a group
    "server > out.log",                      # a redirection the shell sets up
    "server $(cat args)",                    # a command substitution
    "server `cat args`",
    "PORT=8080 server",                      # an assignment first
    "exec server",                           # exec already
    "cd /srv",                               # builtins and keywords: no program of that name
    "trap '' TERM",
    "echo hello",
    "if true; then server; fi",
    "'quoted' server",                       # a first word the shell would unquote or expand
    "$SERVER --port 1",
    "server\nother",                         # two lines
])
def test_anything_the_shell_must_stay_for_runs_as_written(command: str) -> None:
    assert leader_command(command) == command


def _argv0(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


async def test_the_pid_file_names_the_service_itself_not_a_waiting_shell(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="local", group="g", address="127.0.0.1", root=str(tmp_path / "root")))
    simple = await transport.start_service("simple", "sleep 300")
    compound = await transport.start_service("compound", "sleep 301 & wait")
    try:
        assert _argv0(simple) == "sleep" and os.getsid(simple) == simple
        assert _argv0(compound) == "/bin/sh"  # the shell stays: it waits for its job
    finally:
        assert await transport.stop_service("simple") is True
        assert await transport.stop_service("compound") is True
