"""The `local` transport: a host is a directory on this machine plus the processes started for it.

It lets the whole console (deploys, services, health checks) run on a laptop
with no root, no network and no cloud account, with the semantics the ssh
transport has on a real host: relative paths are relative to the host root,
services keep pid files under `<root>/run` and logs under `<root>/log`, output
is streamed line by line, and a timeout or cancel kills the command's whole
process group (TERM, then KILL after KILL_GRACE seconds).

`become`: when the console already runs as root a command just runs; otherwise
it runs through `sudo -n`, which fails at once instead of prompting for a
password nobody can type.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import stat
import time
from collections import deque
from pathlib import Path

from opsconsole.fsio import write_atomic
from opsconsole.login_env import login_environment
from opsconsole.hosts import Host
from opsconsole.pids import group_alive, stat_fields as _stat_fields
from opsconsole.redact import Redactor
from opsconsole.transport.base import CommandResult, LineHandler, Transport, TransportError
from opsconsole.transport.leader import launch_lines
from opsconsole.transport.script_stdin import shell_for
from opsconsole.transport.ports import PORT_IN_USE_RC, PortInUse, check_port_script, holder_from

TAIL_LINES = 20
STDOUT_CAP = 1 << 20  # keep at most 1 MiB of stdout in the result; every line is still streamed
KILL_GRACE = 2.0  # seconds between TERM and KILL of a timed-out or cancelled command
# After the command exits, a background child (`daemon &`) may hold our pipes open for hours;
# its output is not the command's, so we stop reading after this long.
PIPE_GRACE = 0.5
_CHUNK = 65536
_LONG_LINE = 256 * 1024  # a "line" this long is emitted without its newline, so memory stays bounded
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LocalTransport(Transport):
    """Runs work for one local host whose files live under `host.root` (created if missing)."""

    name = "local"

    def __init__(self, host: Host, redactor: Redactor | None = None) -> None:
        """`redactor`: the console's, so a very long output line is cut in pieces where no secret is cut."""
        if not host.root:
            raise TransportError(f"{host.name}: a local host needs a root directory")
        self.host = host
        self.redactor = redactor
        self._root = Path(host.root).expanduser().absolute()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> str:
        return str(self._root)

    def path(self, path: str) -> Path:
        """`path` made absolute against the host root (an absolute path stays as it is)."""
        return self._root / os.path.expanduser(path)

    # -- commands ----------------------------------------------------------
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
        inherit_env: bool = True,
    ) -> CommandResult:
        """The command sees `env` over a login's share of this process's environment (login_env: as over SSH,
        never the console's secrets); with `inherit_env=False`, `env` only (builds)."""
        self._root.mkdir(parents=True, exist_ok=True)
        workdir = self.path(cwd) if cwd else self._root
        if not workdir.is_dir():
            # As the ssh transport does (`cd DIR || exit 125`): a failed command, not a broken transport.
            line = f"cd: {workdir}: no such directory"
            if on_line is not None:
                on_line(line, "stderr")
            return CommandResult(rc=125, tail=(line,))
        # /bin/sh, as the ssh transport runs: a bashism must fail here too, not first on a host whose sh is dash.
        # The command goes on stdin, not in argv: other users can read argv (/proc/PID/cmdline), see script_stdin.
        argv, payload = shell_for(command, stdin)
        if become and os.geteuid() != 0:
            argv = ["sudo", "-n", "--", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=str(workdir),
                env={**(login_environment() if inherit_env else {}), **{k: str(v) for k, v in (env or {}).items()}},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                # Its own session and process group: one killpg reaches every descendant.
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"{self.host.name}: cannot start /bin/sh: {exc}") from exc

        tail: deque[str] = deque(maxlen=TAIL_LINES)
        out: list[str] = []
        out_size = 0

        def emit(line: str, stream: str) -> None:
            nonlocal out_size
            tail.append(line)
            if stream == "stdout" and out_size < STDOUT_CAP:
                piece = (line + "\n")[: STDOUT_CAP - out_size]
                out.append(piece)
                out_size += len(piece)
            if on_line is not None:
                on_line(line, stream)

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(payload)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the command did not read all of its input; that is its business
            finally:
                proc.stdin.close()

        async def everything() -> None:
            assert proc.stdout is not None and proc.stderr is not None
            helpers = [asyncio.ensure_future(_pump(proc.stdout, "stdout", emit, self.redactor)),
                       asyncio.ensure_future(_pump(proc.stderr, "stderr", emit, self.redactor))]
            helpers.append(asyncio.ensure_future(feed()))
            pumps = helpers[:2]
            try:
                # proc.wait() would also wait for the pipes to close, which a background child
                # may keep open for hours; so watch the exit status and the pipes separately.
                while proc.returncode is None and not all(p.done() for p in pumps):
                    await asyncio.wait(pumps, timeout=0.1)
                if proc.returncode is not None and not all(p.done() for p in pumps):
                    await asyncio.wait(pumps, timeout=PIPE_GRACE)  # output still in the pipe is the command's
                    if not all(p.done() for p in pumps):
                        proc._transport.close()  # type: ignore[attr-defined]  # exited: this only drops our pipe ends
                await proc.wait()
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)

        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the command
            # ends (gh-86296), and a cancelled build then ran its next command.
            async with asyncio.timeout(timeout):
                await everything()
        except TimeoutError:
            await asyncio.shield(_kill_group(proc))
            return CommandResult(rc=None, timed_out=True, tail=tuple(tail), stdout="".join(out))
        except asyncio.CancelledError:
            await asyncio.shield(_kill_group(proc))
            raise
        rc = proc.returncode
        if rc is not None and rc < 0:
            return CommandResult(rc=None, signal=-rc, tail=tuple(tail), stdout="".join(out))
        return CommandResult(rc=rc, tail=tuple(tail), stdout="".join(out))

    # -- files -------------------------------------------------------------
    async def write_file(self, path: str, content: bytes, mode: int | None = None) -> bool:
        try:
            return await asyncio.to_thread(_write_file, self.path(path), content, mode)
        except OSError as exc:
            raise TransportError(f"{self.host.name}: cannot write {self.path(path)}: {exc.strerror}") from None

    async def read_file(self, path: str) -> bytes:
        target = self.path(path)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            raise TransportError(f"{self.host.name}: {target}: no such file") from None
        except OSError as exc:
            raise TransportError(f"{self.host.name}: {target}: {exc.strerror}") from None

    async def put_file(self, local_path: str, path: str, mode: int | None = None) -> bool:
        try:
            content = await asyncio.to_thread(Path(local_path).read_bytes)
        except OSError as exc:
            raise TransportError(f"{self.host.name}: cannot read {local_path} on this machine: {exc.strerror}") from None
        return await self.write_file(path, content, mode)

    async def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    # -- services ----------------------------------------------------------
    def _service_paths(self, name: str) -> tuple[Path, Path]:
        if not _SERVICE_NAME.match(name):
            raise TransportError(f"{self.host.name}: bad service name {name!r} (letters, digits, _ . -)")
        return self._root / "run" / f"{name}.pid", self._root / "log" / f"{name}.log"

    async def start_service(
        self, name: str, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> int:
        pid_file, log_file = self._service_paths(name)
        running = await self.service_pid(name)
        if running is not None:
            return running
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # The launcher starts the service in its own session (launch_lines) and exits at once: the service is
        # re-parented away from us, so it outlives the console and never lingers as our zombie, and the pid
        # it says already leads that session, which stop_service kills as a whole.
        script = ((check_port_script(port) if port is not None else "")
                  + launch_lines(command, str(log_file)) + 'echo "$_p"\n')

        async def launch() -> int:
            result = await self.run(script, cwd=cwd, env=env, timeout=30)
            if port is not None and result.rc == PORT_IN_USE_RC:
                raise PortInUse(self.host.name, self.host.address, name, port, holder_from(result.stdout))
            text = result.stdout.strip()
            if not result.ok or not text.isdigit():
                raise TransportError(f"{self.host.name}: could not start {name}: {result.describe()}: "
                                     f"{' | '.join(result.tail[-3:])}")
            _write_file(pid_file, f"{text}\n".encode(), None)
            return int(text)

        # A cancel (an abort) must not land between the launch and the pid file: the service, in its own
        # session, would run on unrecorded, holding its port, and no stop would find it. Let the launcher
        # finish (it exits at once) and record the pid; then the cancel goes on.
        launching = asyncio.ensure_future(launch())
        try:
            pid = await asyncio.shield(launching)
        except asyncio.CancelledError:
            await asyncio.wait([launching])
            raise
        return pid

    async def stop_service(self, name: str, timeout: float = 10.0) -> bool:
        pid_file, _ = self._service_paths(name)
        pid = await self.service_pid(name)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while group_alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while group_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        pid_file.unlink(missing_ok=True)
        return True

    async def service_pid(self, name: str) -> int | None:
        pid_file, _ = self._service_paths(name)
        try:
            text = pid_file.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():
            return None
        return int(text) if _alive(int(text)) else None

    async def port_open(self, port: int) -> bool | None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True


async def _pump(reader: asyncio.StreamReader, stream: str, emit: LineHandler, redactor: Redactor | None) -> None:
    """Split a pipe into lines as they arrive (no length limit, unlike readline); flush a partial last line."""
    buffer = b""
    while chunk := await reader.read(_CHUNK):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            emit(raw.rstrip(b"\r").decode("utf-8", errors="replace"), stream)
        if len(buffer) >= _LONG_LINE:
            buffer = _emit_long(buffer, stream, emit, redactor)
    if buffer:
        emit(buffer.rstrip(b"\r").decode("utf-8", errors="replace"), stream)


def _emit_long(buffer: bytes, stream: str, emit: LineHandler, redactor: Redactor | None) -> bytes:
    """Emit most of an overlong line, keeping what follows the cut: the cut leaves a tail as long as the
    longest secret and moves back to a secret's start, so each piece, masked alone, hides it whole."""
    text = buffer.decode("utf-8", errors="surrogateescape")  # round-trips, even a character cut by the chunk
    at = len(text)
    if redactor:
        at = redactor.safe_cut(text, max(len(text) // 2, len(text) - redactor.longest))
    emit(text[:at].encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace"), stream)
    return text[at:].encode("utf-8", errors="surrogateescape")


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """TERM the command's process group, KILL what is left after KILL_GRACE, and reap the leader."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while group_alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    # Children may outlive the shell (or ignore TERM): the group is killed whatever the shell did.
    _signal_group(pgid, signal.SIGKILL)
    try:
        async with asyncio.timeout(5):
            await proc.wait()
    except TimeoutError:
        pass


def _write_file(target: Path, content: bytes, mode: int | None) -> bool:
    """Write atomically and durably unless content and mode already match; True if changed.

    A link planted at `target` is replaced, never read nor chmod-ed through: the file is opened with
    O_NOFOLLOW and compared and chmod-ed through that one descriptor."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # ELOOP: a symbolic link, replaced below
            raise
        st = None
    else:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                st = None
            elif st.st_size == len(content) and f.read() == content:
                if mode is not None and (st.st_mode & 0o7777) != mode:
                    os.fchmod(f.fileno(), mode)
                    return True
                return False
    if mode is not None:
        keep = mode
    elif st is not None:
        keep = st.st_mode & 0o7777
    else:  # a new file gets what `touch` would give it, as Ansible's modules do (the umask)
        umask = os.umask(0)
        os.umask(umask)
        keep = 0o666 & ~umask
    write_atomic(target, content, keep)  # a reader sees the old file or the new one, never half of one
    return True


def _alive(pid: int) -> bool:
    """The process exists, is not a zombie, and still leads its own session, as setsid left it.

    The session check guards against a stale pid file whose pid the kernel has since
    given to an unrelated process.
    """
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[3]) == pid


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A `become` command runs as root under sudo: ask sudo to deliver the signal.
        os.system(f"sudo -n kill -{int(sig)} -- -{int(pgid)} >/dev/null 2>&1")


__all__ = ["LocalTransport"]
