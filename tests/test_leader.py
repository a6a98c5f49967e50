"""A service's session leader is the service itself when its command is one simple command (see
transport/leader.py), on both transports; anything the shell must stay for runs as written."""

from __future__ import annotations

import asyncio
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
    assert leader_command(command) == f"exec {command}"


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
    "-x server",                             # an option first
    "\xa0server",                            # a blank only Python splits on
    "declare -x A=1",                        # bash's builtins, where /bin/sh is bash
    "\tserver\\\n  --flag",                   # a line continued
])
def test_anything_the_shell_must_stay_for_runs_as_written(command: str) -> None:
    assert leader_command(command) == command


def test_a_last_word_keeps_its_escaped_blank() -> None:
    assert leader_command("server \\ ") == "exec server \\ "


async def settled_argv0(pid: int, passing: tuple[str, ...] = ("setsid", "/bin/sh")) -> str:
    """argv[0] of `pid` once it is past what it runs on its way (`passing`): start_service returns as soon as
    the process leads its session, which may be before /bin/sh, and then the service, are exec'd. An empty
    cmdline is on its way too: the kernel shows one while an exec replaces the process's memory."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        if (argv0 and argv0 not in passing) or asyncio.get_running_loop().time() > deadline:
            return argv0
        await asyncio.sleep(0.02)


async def test_the_pid_file_names_the_service_itself_not_a_waiting_shell(tmp_path: Path) -> None:
    transport = LocalTransport(Host(name="local", group="g", address="127.0.0.1", root=str(tmp_path / "root")))
    simple = await transport.start_service("simple", "sleep 300")
    compound = await transport.start_service("compound", "sleep 301 & wait")
    try:
        assert await settled_argv0(simple) == "sleep" and os.getsid(simple) == simple
        assert await settled_argv0(compound, passing=("setsid",)) == "/bin/sh"  # the shell stays: it waits for its job
    finally:
        assert await transport.stop_service("simple") is True
        assert await transport.stop_service("compound") is True
