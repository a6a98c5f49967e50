"""The interface every transport implements (`local` now, `ssh` later).

Playbooks and builds only ever talk to this interface, so a play that works on
the local demo fleet works unchanged over SSH.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
import abc
from dataclasses import dataclass, field
from typing import Callable

# Called with (line, stream) for each line of output, stream being "stdout" or "stderr".
LineHandler = Callable[[str, str], None]


class TransportError(OperatorError):
    """The transport could not do what was asked (host unreachable, file missing, ...)."""


class PathInTheWay(TransportError):
    """Something else already stands where a directory or a link was asked for; the message names it."""


def shell_exact(path: str) -> bool:
    """Whether joining `path` to the host root as text means what the shell means by it, so a transport may
    act on it without a shell: no `..` (the shell resolves it after a link), no `.` part, no trailing `/`
    (which follows a link), not empty (the root itself), no leading `~` (the local transport expands it; the
    quoted word in a script does not)."""
    return (bool(path) and not path.endswith("/") and not path.startswith("~")
            and not any(part in (".", "..") for part in path.split("/")))


@dataclass(frozen=True)
class CommandResult:
    rc: int | None  # None when killed by a signal or timed out
    signal: int | None = None
    timed_out: bool = False
    tail: tuple[str, ...] = field(default_factory=tuple)  # last lines of output, stdout and stderr interleaved
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit code {self.rc}"


class Transport(abc.ABC):
    """Runs work on one host. Relative paths are relative to the host's root directory."""

    name: str

    @property
    @abc.abstractmethod
    def root(self) -> str:
        """The host's base directory for our files (a local dir, or a remote path)."""

    @abc.abstractmethod
    async def run(
        self,
        command: str,
        *,
        on_line: LineHandler | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        become: bool = False,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run a shell command; stream its output lines to `on_line`; kill it (and its children) on timeout or cancel."""

    @abc.abstractmethod
    async def write_file(self, path: str, content: bytes, mode: int | None = None) -> bool:
        """Write `content` to `path` (creating parent directories). Returns True if the file changed."""

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes:
        """Read a file; TransportError if it does not exist."""

    @abc.abstractmethod
    async def put_file(self, local_path: str, path: str, mode: int | None = None) -> bool:
        """Copy a file from this machine to the host. Returns True if it changed."""

    @abc.abstractmethod
    async def exists(self, path: str) -> bool:
        """Whether a file or directory exists at `path`."""

    @abc.abstractmethod
    async def start_service(
        self, name: str, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> int:
        """Start a long-running process detached from us, with a pid file; returns its pid.

        Starting a service that already runs is a no-op returning its pid.
        Output goes to `<root>/log/<name>.log`. With `port`, a port another program already
        listens on raises PortInUse (opsconsole.transport.ports), naming the port and the host.
        """

    @abc.abstractmethod
    async def stop_service(self, name: str, timeout: float = 10.0) -> bool:
        """Stop the service (TERM, then KILL after `timeout`). Returns True if it was running."""

    async def restart_service(
        self, name: str, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
        port: int | None = None, timeout: float = 10.0,
    ) -> int:
        """Stop the service as stop_service does (nothing running is no error), then start it as start_service
        does; returns the new pid. A transport that pays per command (SSH) does both in one."""
        await self.stop_service(name, timeout)
        return await self.start_service(name, command, cwd=cwd, env=env, port=port)

    async def ensure_directory(self, path: str) -> bool | None:
        """`mkdir -p path` without a command on the host, where this transport has a cheaper way (SSH: its
        SFTP session): True if made, False if a directory (or a link to one) was there; PathInTheWay if
        something else is. None: no cheaper way here, the caller runs its command."""
        return None

    async def ensure_link(self, path: str, src: str) -> bool | None:
        """`path` a symbolic link to `src` (made beside it and renamed over, so it never dangles), without a
        command where this transport can: True if made or changed, False if it already pointed there;
        PathInTheWay if a directory stands there. None: no cheaper way here."""
        return None

    @abc.abstractmethod
    async def service_pid(self, name: str) -> int | None:
        """The pid of the running service, or None if it does not run."""

    async def port_open(self, port: int) -> bool | None:
        """Whether something on the host accepts TCP connections on 127.0.0.1:`port` now, asked without
        running a command there; None when this transport cannot ask that way."""
        return None

    async def close(self) -> None:
        """Release connections; the local transport holds none."""
