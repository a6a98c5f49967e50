"""The `ssh` transport: the Transport interface over a pooled asyncssh connection.

Same semantics as the local transport: relative paths are relative to the host
root, services keep pid files under `<root>/run` and logs under `<root>/log`,
output is streamed line by line, and a timeout or cancel kills the command's
whole remote process group (found by a marker line the wrapper prints first on
stderr, because sshd gives us no pid).
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import re
import secrets
import shlex
import signal
import stat
from collections import deque
from pathlib import Path
from typing import Any, Awaitable

import asyncssh

from opsconsole.hosts import Host
from opsconsole.login_env import ENV_NAME
from opsconsole.pids import parse_stat
from opsconsole.transport.alive import alive_function, clock_function, group_alive_function
from opsconsole.transport.base import CommandResult, LineHandler, PathInTheWay, Transport, TransportError, shell_exact
from opsconsole.transport.leader import launch_lines
from opsconsole.transport.pool import LINK_ERRORS, SshPool
from opsconsole.transport.ports import PORT_IN_USE_RC, PortInUse, check_port_script, holder_from, listening_test
from opsconsole.transport.script_stdin import shell_for

TAIL_LINES = 20
ONE_REQUEST = 32 * 1024  # bytes: what every SFTP server takes in one read or write (see _one_request)
PGID_MARK = "@@opsconsole-pgid@@ "
# A pid file's first line as the shell's `IFS= read -r pid` takes it (as it is): a pid to `alive`.
_PID_LINE = re.compile(rb"([0-9]+)(?:\n|$)")
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# `alive PID`: the service runs (not a zombie, still its own session's leader); `group_alive PGID`: some of it
# does; `clock`: $now, hundredths of a second since boot.
_ALIVE = "\n".join((alive_function(), group_alive_function(), clock_function()))


class SshTransport(Transport):
    """Runs work on one SSH host; `pool` is shared by every host (one connection each, one jump)."""

    name = "ssh"

    def __init__(self, host: Host, pool: SshPool) -> None:
        if not posixpath.isabs(host.root):
            raise TransportError(f"{host.name}: the host root must be an absolute path on the host, got {host.root!r}")
        self.host = host
        self.pool = pool

    @property
    def root(self) -> str:
        return self.host.root

    def path(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.root, path))

    # -- commands ----------------------------------------------------------
    def _wrap(self, command: str, cwd: str | None, env: dict[str, str] | None, become: bool,
              stdin: bytes | None) -> tuple[str, bytes]:
        """(the command line sshd runs, what it reads on stdin). The script, with `command`, the env values
        and the paths, stays out of the command line: every user on the host can read that one."""
        exports = ""
        for key, value in (env or {}).items():
            if not ENV_NAME.match(key):
                raise TransportError(f"{self.host.name}: bad environment variable name {key!r}")
            exports += f"export {key}={shlex.quote(str(value))}; "
        workdir = self.path(cwd) if cwd else self.root
        q = shlex.quote
        # The first stderr line names the process group, so a timeout can kill the whole tree.
        script = (f'read -r s < /proc/$$/stat; set -- $s; printf "{PGID_MARK}%s\\n" "$5" >&2; set --; unset s\n'
                  # `[ -d ]` is a builtin: mkdir forked a process on the host for every command
                  f"[ -d {q(self.root)} ] || mkdir -p {q(self.root)} 2>/dev/null; cd {q(workdir)} || exit 125\n"
                  f"{exports}\n{command}")
        # `exec` keeps a user's heavy login shell out of the process tree; `sudo -n` fails fast instead of asking.
        argv, payload = shell_for(script, stdin)
        return (f"sudo -n -H -- {shlex.join(argv)}" if become else f"exec {shlex.join(argv)}"), payload

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
        line, payload = self._wrap(command, cwd, env, become, stdin)
        async with self.pool.channel(self.host):
            proc = await self.pool.with_connection(
                self.host, lambda conn: conn.create_process(line, encoding=None))  # bytes: see everything()
            return await self._follow(proc, command, on_line, timeout, become, payload)

    async def _follow(self, proc: asyncssh.SSHClientProcess, command: str, on_line: LineHandler | None,
                      timeout: float | None, become: bool, stdin: bytes) -> CommandResult:
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        out: list[str] = []
        pgid: list[int] = []

        async def pump(reader: asyncssh.SSHReader[bytes], stream: str) -> None:
            while raw := await reader.readline():
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if stream == "stderr" and not pgid and line.startswith(PGID_MARK):
                    pgid.append(int(line[len(PGID_MARK):]))
                    continue
                tail.append(line)
                if stream == "stdout":
                    out.append(line + "\n")
                if on_line is not None:
                    on_line(line, stream)

        async def everything() -> None:
            # The script, then the command's own input (see script_stdin), as bytes: decoding them here would
            # turn each non-UTF-8 byte into three and break the script's length prefix.
            proc.stdin.write(stdin)
            proc.stdin.write_eof()
            await asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"))
            await proc.wait_closed()

        try:
            async with asyncio.timeout(timeout):
                await everything()
        except TimeoutError:
            await asyncio.shield(self._kill(proc, pgid, become))
            return CommandResult(rc=None, timed_out=True, tail=tuple(tail), stdout="".join(out))
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(proc, pgid, become))
            raise
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError) as exc:
            self.pool.discard(self.host)
            raise TransportError(f"{self.host.name}: connection lost while running {command!r}: {exc}") from exc
        status, sig = proc.exit_status, proc.exit_signal
        if sig:
            return CommandResult(rc=None, signal=_signal_number(sig[0]), tail=tuple(tail), stdout="".join(out))
        if status is None:
            # No exit status: the channel died with the connection, not with the command.
            self.pool.discard(self.host)
            raise TransportError(f"{self.host.name}: connection lost while running {command!r}; "
                                 f"it may or may not have finished")
        return CommandResult(rc=status, tail=tuple(tail), stdout="".join(out))

    async def _kill(self, proc: asyncssh.SSHClientProcess, pgid: list[int], become: bool) -> None:
        try:
            if pgid:
                # /bin/sh, not the login shell: `kill -SIG -PGID` is spelled alike in dash, bash and zsh.
                kill = f"/bin/sh -c 'kill -KILL -{pgid[0]} 2>/dev/null; true'"
                async with self.pool.channel(self.host, spare=True):
                    conn = await self.pool.connection(self.host)
                    async with asyncio.timeout(10):
                        await conn.run(f"sudo -n {kill}" if become else f"exec {kill}")
            else:  # killed before the wrapper spoke: ask sshd to signal the session's process
                proc.kill()
        except (OSError, asyncssh.Error, TimeoutError, TransportError):
            pass  # the host is unreachable: nothing more we can do from here
        finally:
            proc.close()

    async def _sh(self, script: str, timeout: float = 60.0) -> CommandResult:
        result = await self.run(script, timeout=timeout)
        if result.timed_out:
            raise TransportError(f"{self.host.name}: timed out after {timeout:g}s")
        return result

    # -- files (SFTP) ------------------------------------------------------
    async def write_file(self, path: str, content: bytes, mode: int | None = None) -> bool:
        target = self.path(path)

        async def write(sftp: asyncssh.SFTPClient) -> bool:
            # lstat, not stat: a link planted at the target is replaced, never read through nor chmod-ed through.
            current, parent_is_dir = await self._lstat_target(sftp, target)
            regular = current is not None and stat.S_ISREG(current.permissions or 0)
            same_mode = mode is None or (current is not None and (current.permissions or 0) & 0o7777 == mode)
            if regular and current.size == len(content) and same_mode and len(content) <= _one_request(sftp):
                if await _small_file_holds(sftp, target, content):
                    return False
            elif regular and current.size == len(content):
                async with sftp.open(target, "rb") as f:
                    if await f.read() == content:
                        if mode is not None and (current.permissions or 0) & 0o7777 != mode:
                            await f.chmod(mode)  # on the handle we compared: the file, whatever its path is now
                            return True
                        return False
            keep = mode if mode is not None else (current.permissions & 0o7777 if regular and current.permissions else None)
            await _replace(sftp, target, content, keep, parent_is_dir=parent_is_dir)
            return True

        return await self._sftp(write, path)

    async def _lstat_target(self, sftp: asyncssh.SFTPClient, target: str) -> tuple[asyncssh.SFTPAttrs | None, bool]:
        """`target`'s lstat (None: not there), and whether its directory is known to be one, after refusing
        (TransportError) a directory between the host root and `target` that is a symbolic link: a file meant
        for the host root must not land wherever someone pointed a link (the root itself may be a link, and
        paths outside the root are the playbook's own choice). All asked at once (SFTP requests pipeline on
        the session): one round trip, not one per level."""
        relative = posixpath.relpath(posixpath.dirname(target), self.root)
        walked, paths = self.root, []
        # (".." or "../x" is outside the root; a directory named "..cache" is inside it and checked)
        if relative != "." and relative != ".." and not relative.startswith("../"):
            for part in relative.split("/"):
                walked = posixpath.join(walked, part)
                paths.append(walked)
        *found, current = await asyncio.gather(*(_stat(sftp, p, follow=False) for p in [*paths, target]))
        for walked, attrs in zip(paths, found):
            if attrs is None:
                break  # _replace creates the rest: nothing below a missing directory can be a link yet
            if stat.S_ISLNK(attrs.permissions or 0):
                raise TransportError(f"{self.host.name}: {walked} is a symbolic link; not writing {target} "
                                     "through it")
            if not stat.S_ISDIR(attrs.permissions or 0):
                # (the levels below it read as missing: OpenSSH answers ENOTDIR as "no such file")
                raise TransportError(f"{self.host.name}: {walked} exists and is not a directory")
        parent_is_dir = bool(found) and found[-1] is not None and stat.S_ISDIR(found[-1].permissions or 0)
        return current, parent_is_dir

    async def read_file(self, path: str) -> bytes:
        target = self.path(path)

        async def read(sftp: asyncssh.SFTPClient) -> bytes:
            # Its size, its bytes up to what one request carries, and the close, sent at once: a small file
            # in one round trip after the open.
            f = await sftp.open(target, "rb", block_size=0)
            attrs, data, _ = await _in_order(f.stat(), f.read(_one_request(sftp), 0), f.close())
            size = attrs.size if stat.S_ISREG(attrs.permissions or 0) else None
            if size == len(data):
                return data
            # The rest: of a bigger file (its size known: read in parallel requests), or to its end, of one
            # whose size says nothing (/proc's say 0 and a read gives about a page).
            bigger = size is not None and size > len(data)
            async with sftp.open(target, "rb", block_size=-1 if bigger else 0) as f:
                return data + (await f.read(size - len(data), len(data)) if bigger and size is not None
                               else await _to_end(f, len(data), sftp))

        return await self._sftp(read, path)

    async def put_file(self, local_path: str, path: str, mode: int | None = None) -> bool:
        try:
            content = Path(local_path).read_bytes()
        except OSError as exc:
            raise TransportError(f"{self.host.name}: cannot read {local_path}: {exc.strerror}") from exc
        if len(content) > 1 << 20:
            return await self._put_large(local_path, content, path, mode)
        return await self.write_file(path, content, mode)

    async def _put_large(self, local_path: str, content: bytes, path: str, mode: int | None) -> bool:
        # Compare by checksum on the host rather than reading a big file back over the wire; a link at the
        # target is never read through (`[ -L ]`) but replaced.
        target = self.path(path)
        digest = hashlib.sha256(content).hexdigest()
        have = await self._sh(f"[ ! -L {shlex.quote(target)} ] && sha256sum {shlex.quote(target)} 2>/dev/null")

        async def put(sftp: asyncssh.SFTPClient) -> bool:
            current, parent_is_dir = await self._lstat_target(sftp, target)
            if have.ok and have.stdout.split()[:1] == [digest] and current is not None \
                    and stat.S_ISREG(current.permissions or 0):
                if mode is None or (current.permissions or 0) & 0o7777 == mode:
                    return False
                async with sftp.open(target, "rb") as f:
                    await f.chmod(mode)
                return True
            await _replace(sftp, target, content, mode, parent_is_dir=parent_is_dir)
            return True

        return await self._sftp(put, path)

    def _plain_target(self, path: str) -> str | None:
        """The absolute path the shell would act on, or None when only the shell means it exactly: self.path()
        cleans a path as text, where the shell resolves `..` after a link, follows a link for a trailing
        `/`, and acts on the root itself for "" or "."."""
        return self.path(path) if shell_exact(path) else None

    async def ensure_directory(self, path: str) -> bool | None:
        target = self._plain_target(path)
        if target is None:
            return None

        async def make(sftp: asyncssh.SFTPClient) -> bool:
            # followed, as `[ -d ]`: a link to a directory is one; and not followed, for a dangling link
            attrs, own = await asyncio.gather(_stat(sftp, target), _stat(sftp, target, follow=False))
            if attrs is not None:
                if stat.S_ISDIR(attrs.permissions or 0):
                    return False
                raise PathInTheWay(f"{path} exists and is not a directory")
            if own is not None:
                raise PathInTheWay(f"{path} is a link to nothing, not a directory")
            await _make_directories(sftp, target)
            return True

        return await self._sftp(make, path)

    async def ensure_link(self, path: str, src: str) -> bool | None:
        target = self._plain_target(path)
        if target is None:
            return None

        async def link(sftp: asyncssh.SFTPClient) -> bool:
            # Made aside and renamed over (posix-rename@openssh.com): `current` never points nowhere.
            aside = f"{target}.opsconsole-tmp"
            # What is there, where it points if it is a link, and whether an aside was left: one round trip.
            attrs, points_to, left = await asyncio.gather(
                _stat(sftp, target, follow=False), _readlink(sftp, target), _stat(sftp, aside, follow=False))
            kind = (attrs.permissions or 0) if attrs is not None else 0
            if attrs is not None and stat.S_ISDIR(kind):
                raise PathInTheWay(f"{path} is a directory, not a link")
            if attrs is not None and stat.S_ISLNK(kind) and points_to == src:
                return False
            if left is not None:
                await sftp.remove(aside)  # left by a deploy killed between the two steps
            await sftp.symlink(src, aside)
            # asyncssh swaps symlink's arguments for OpenSSH's sftp-server by the server's banner: make sure
            # the link it made is the one meant before it goes over the target.
            if await sftp.readlink(aside) != src:
                await sftp.remove(aside)
                raise TransportError(f"{self.host.name}: the SFTP server made {aside} point elsewhere than {src}")
            await sftp.posix_rename(aside, target)
            return True

        return await self._sftp(link, path)

    async def exists(self, path: str) -> bool:
        target = self.path(path)

        async def check(sftp: asyncssh.SFTPClient) -> bool:
            return await _stat(sftp, target, follow=False) is not None

        return await self._sftp(check, path)

    async def _sftp(self, work, path: str):  # type: ignore[no-untyped-def]
        try:
            return await self.pool.with_sftp(self.host, work)
        except asyncssh.SFTPNoSuchFile as exc:
            raise TransportError(f"{self.host.name}: {self.path(path)}: no such file") from exc
        except asyncssh.SFTPError as exc:
            raise TransportError(f"{self.host.name}: {self.path(path)}: {exc.reason}") from exc

    # -- services ----------------------------------------------------------
    def _service_paths(self, name: str) -> tuple[str, str]:
        if not _SERVICE_NAME.match(name):
            raise TransportError(f"{self.host.name}: bad service name {name!r}")
        return self.path(f"run/{name}.pid"), self.path(f"log/{name}.log")

    async def start_service(
        self, name: str, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> int:
        result = await self._sh(f"{_ALIVE}\n" + self._start_script(name, command, cwd, env, port))
        return self._started(name, port, result)

    async def restart_service(
        self, name: str, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
        port: int | None = None, timeout: float = 10.0,
    ) -> int:
        # One command for both: at a hundred hosts every command is a fork of sshd and a shell on the host.
        # A process just stopped may hold its port for a moment more (a KILLed one while the kernel tears down
        # its memory; a child of its group): the port check would take that for another program. So after
        # stopping ours, wait (bounded) for the port to be free; a real other holder is refused after that.
        # `_free=1`: that wait saw the port free, so the start's own check (another `ss`) is not asked again.
        free = (f'_free=0; if [ "$stopped" = 0 ]; then i=0; while {listening_test(port)} && [ $i -lt 250 ]; '
                'do sleep 0.02; i=$((i+1)); done; [ $i -ge 250 ] || _free=1; fi\n') if port is not None else ""
        script = (f"{_ALIVE}\n" + self._stop_script(name, timeout) + free
                  + self._start_script(name, command, cwd, env, port, port_seen_free=bool(free)))
        return self._started(name, port, await self._sh(script, timeout=timeout + 30))

    def _start_script(self, name: str, command: str, cwd: str | None, env: dict[str, str] | None,
                      port: int | None, *, port_seen_free: bool = False) -> str:
        """Shell lines that start the service unless it runs, and print its pid. `port_seen_free`: the script
        before these lines sets `$_free` to 1 when it has just seen the port free (a restart's wait)."""
        pid_file, log_file = self._service_paths(name)
        q = shlex.quote
        exports = "".join(f"export {k}={q(str(v))}; " for k, v in (env or {}).items() if ENV_NAME.match(k))
        workdir = self.path(cwd) if cwd else self.root
        run_dir, log_dir = self.path("run"), self.path("log")
        check = check_port_script(port) if port is not None else ""
        if check and port_seen_free:
            check = f'if [ "$_free" != 1 ]; then\n{check}fi\n'
        # Every fork counts at a hundred hosts: mkdir, like cat, only when needed (`read` is the shell's own).
        return (
            f"[ -d {q(run_dir)} ] && [ -d {q(log_dir)} ] || mkdir -p {q(run_dir)} {q(log_dir)} || exit 1\n"
            f'if {_read_pid(pid_file)} && alive "$pid"; then echo "$pid"; exit 0; fi\n'
            + check
            + f"cd {q(workdir)} || exit 125\n"
            f"{exports}\n"
            + launch_lines(command, log_file)
            + f'echo "$_p" > {q(pid_file)}.tmp && mv {q(pid_file)}.tmp {q(pid_file)} && echo "$_p"\n'
        )

    def _started(self, name: str, port: int | None, result: CommandResult) -> int:
        if port is not None and result.rc == PORT_IN_USE_RC:
            raise PortInUse(self.host.name, self.host.address, name, port, holder_from(result.stdout))
        if not result.ok or not result.stdout.strip().isdigit():
            raise TransportError(f"{self.host.name}: could not start {name}: {result.describe()}: "
                                 f"{' | '.join(result.tail[-3:])}")
        return int(result.stdout.strip().splitlines()[-1])

    def _stop_script(self, name: str, timeout: float) -> str:
        """Shell lines that stop the service if it runs (TERM to its group, KILL to what is left of the group
        after `timeout`) and leave `$stopped` 0 if it ran, 3 if not. No exit: a restart goes on to the start."""
        pid_file, _ = self._service_paths(name)
        q = shlex.quote
        wait = max(1, int(timeout * 100))  # in hundredths of a second, as `clock` counts
        return (
            "stopped=3\n"
            f'if {_read_pid(pid_file)} && alive "$pid"; then\n'
            f'  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid"\n'
            # Polled every 20 ms against the clock: a restart waits for the exit, not a tick, and a look that
            # reads /proc (the leader gone, the group not) cannot stretch the timeout. The last answer is kept.
            f'  clock; end=$((now + {wait})); left=0\n'
            f'  while group_alive "$pid"; do clock; [ $now -lt $end ] || {{ left=1; break; }}; sleep 0.02; done\n'
            f'  if [ $left = 1 ]; then kill -KILL "-$pid" 2>/dev/null\n'
            # gone only once the kernel has torn it down (a big process takes a while): then its files are closed
            f'    clock; end=$((now + 500))\n'
            f'    while group_alive "$pid"; do clock; [ $now -lt $end ] || break; sleep 0.02; done\n'
            "  fi\n"
            "  stopped=0\n"
            "fi\n"
            f"rm -f {q(pid_file)}\n"
        )

    async def stop_service(self, name: str, timeout: float = 10.0) -> bool:
        result = await self._sh(f"{_ALIVE}\n" + self._stop_script(name, timeout) + "exit $stopped\n",
                                timeout=timeout + 30)
        if result.rc not in (0, 3):
            raise TransportError(f"{self.host.name}: could not stop {name}: {result.describe()}")
        return result.rc == 0

    async def service_pid(self, name: str) -> int | None:
        pid_file, _ = self._service_paths(name)
        try:
            return await self.pool.with_sftp(self.host, lambda sftp: _service_pid_over_sftp(sftp, pid_file))
        except (asyncssh.SFTPError, ValueError, IndexError):
            pass  # a /proc it may not read (or an odd one): the shell looks. A lost link is not looked at twice.
        result = await self._sh(f'{_ALIVE}\n{_read_pid(pid_file)} && alive "$pid" && echo "$pid"; true')
        text = result.stdout.strip()
        return int(text) if text.isdigit() else None

    # -- reaching the host's ports ----------------------------------------
    async def port_open(self, port: int) -> bool | None:
        """Asked as a direct-tcpip channel on the host's connection: sshd's connect() answers, where a
        command polling /proc/net/tcp forked three processes on the host per look."""
        try:
            conn = await self.pool.connection(self.host)
            _, writer = await conn.open_connection("127.0.0.1", port)
        except asyncssh.ChannelOpenError as exc:
            # sshd could not connect (refused): nothing listens. Anything else (prohibited by the server,
            # a lost link) is no answer about the port.
            return False if exc.code == asyncssh.OPEN_CONNECT_FAILED else None
        except (asyncssh.Error, OSError, TransportError):
            return None
        writer.close()
        return True

    async def local_endpoint(self, port: int, remote_host: str = "127.0.0.1") -> tuple[str, int]:
        """A (host, port) on this machine that reaches `remote_host:port` as the SSH host sees it."""
        return await self.pool.forward(self.host, port, remote_host)

    async def close(self) -> None:
        """Connections belong to the pool (shared by all hosts); the pool's owner closes it."""


def _read_pid(pid_file: str) -> str:
    """A shell condition: `pid_file` is a file and its first line, now in `$pid`, is not empty. The shell's
    `read`, where `pid=$(cat FILE)` forked a subshell and cat. The line as it is (`IFS=`): " 123" is no pid
    to `alive`, as `_service_pid_over_sftp` agrees."""
    q = shlex.quote(pid_file)
    return f'[ -f {q} ] && {{ IFS= read -r pid || [ -n "$pid" ]; }} < {q} && [ -n "$pid" ]'


async def _replace(sftp: asyncssh.SFTPClient, target: str, content: bytes, mode: int | None, *,
                   parent_is_dir: bool = False) -> None:
    """Replace `target` as fsio.write_atomic does locally: a temp file beside it with a random name, created
    exclusively (a symlink or file planted at a guessable name is never followed nor reused) with its final
    mode before a byte is written, fsynced when the server can (fsync@openssh.com), renamed over the target.
    A new file with no mode gets the host's umask (created 0666, the server applies its umask), as Ansible's
    modules and the local transport give it: not a fixed 0644, which was wider than a host's umask of 077.
    `parent_is_dir`: the caller has just seen the directory (one round trip fewer)."""
    final = 0o666 if mode is None else mode
    directory = posixpath.dirname(target)
    if not parent_is_dir and not await _is_dir(sftp, directory):
        await _make_directories(sftp, directory)
    small = len(content) <= _one_request(sftp)
    for attempt in range(3):
        tmp = posixpath.join(directory, f".{posixpath.basename(target)}.{secrets.token_hex(6)}.tmp")
        try:
            f = await sftp.open(tmp, asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL,
                                asyncssh.SFTPAttrs(permissions=final), encoding=None, block_size=0 if small else -1)
            break
        except asyncssh.SFTPError:
            if attempt == 2:  # 48 random bits taken three times: not a collision, a real refusal
                raise
    try:
        # (the chmod: the server's umask trimmed the mode given at creation)
        if small:  # one round trip for all of it: the server takes one handle's requests in order
            await _in_order(*([f.chmod(mode)] if mode is not None else []), f.write(content, 0), _fsync(f), f.close())
        else:
            async with f:
                if mode is not None:
                    await f.chmod(mode)
                await f.write(content)
                await _fsync(f)
        await sftp.posix_rename(tmp, target)
    except BaseException:
        try:
            await sftp.remove(tmp)
        except (asyncssh.SFTPError, OSError):
            pass
        raise


async def _fsync(f: asyncssh.SFTPClientFile) -> None:
    try:
        await f.fsync()
    except asyncssh.SFTPOpUnsupported:
        pass  # a server without fsync@openssh.com: the rename is still atomic


def _one_request(sftp: asyncssh.SFTPClient) -> int:
    """The most bytes one read or write request carries here: 32 KiB (what every server must take), or less if
    the server's limits say so. A file that fits is read or written in one request."""
    limits = sftp.limits
    return min(ONE_REQUEST, limits.max_read_len or ONE_REQUEST, limits.max_write_len or ONE_REQUEST)


async def _in_order(*steps: Awaitable[Any]) -> list[Any]:
    """Run SFTP requests on one handle as one round trip: each step sends its request when started (a file
    opened with block_size=0 reads and writes with one request, no helper tasks), gather starts them in
    order, and the server takes one handle's requests in the order sent (SFTP: requests on the same file
    are processed in order). All are awaited, so a close is never left behind by an earlier step's error;
    the first error is raised then."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def _small_file_holds(sftp: asyncssh.SFTPClient, target: str, content: bytes) -> bool:
    """Whether `target` (just seen as a regular file of len(content) bytes, which fits one request) holds
    `content`: its bytes, what it is now and the close, in one round trip after the open. What was opened must
    still be a regular file of that size (the look came before the open: a FIFO or a device put there since
    is not read as the file)."""
    f = await sftp.open(target, "rb", block_size=0)
    data, attrs, _ = await _in_order(f.read(len(content), 0), f.stat(), f.close())
    return data == content and attrs.size == len(content) and stat.S_ISREG(attrs.permissions or 0)


async def _to_end(f: asyncssh.SFTPClientFile, offset: int, sftp: asyncssh.SFTPClient) -> bytes:
    """What `f` (opened with block_size=0) holds from `offset` to its end, one request after another."""
    parts = []
    while chunk := await f.read(_one_request(sftp), offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


async def _readlink(sftp: asyncssh.SFTPClient, path: str) -> str | None:
    """Where the link `path` points; None when it is no link (or not there)."""
    try:
        return await sftp.readlink(path)
    except asyncssh.SFTPError:
        return None


async def _make_directories(sftp: asyncssh.SFTPClient, path: str) -> None:
    """`mkdir -p path` (absolute). Its parent usually exists: one mkdir. Else every level's mkdir at once, in one
    round trip (the server takes them in order; the levels that exist refuse, harmlessly), where asyncssh's
    makedirs tries mkdir then stat on each level from / in turn: ~10 round trips for
    /srv/opsconsole/releases/v. What that leaves undone is settled level by level (`_settle_levels`)."""
    try:
        await sftp.mkdir(path)
        return
    except LINK_ERRORS:  # (some are SFTPErrors too)
        raise  # the connection, not the path
    except asyncssh.SFTPError:
        pass
    parts = path.strip("/").split("/")
    levels = ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    made = await asyncio.gather(*(sftp.mkdir(level) for level in levels), return_exceptions=True)
    for result in made:
        if isinstance(result, LINK_ERRORS) or (isinstance(result, BaseException)
                                               and not isinstance(result, asyncssh.SFTPError)):
            raise result  # the connection, not the path
    if made[-1] is not None:
        await _settle_levels(sftp, levels)


async def _settle_levels(sftp: asyncssh.SFTPClient, levels: list[str]) -> None:
    """After the mkdirs sent at once: each level is a directory now (made, there already, or made meanwhile), or
    is made now, in order (a server may have answered out of order), or the refusal says which level and why:
    a file, a link to nothing, or the server's reason. OpenSSH answers a plain "Failure" for a read-only or
    full filesystem: asyncssh's makedirs reported that as "<level> is not a directory", which sent an operator
    looking for a file that was not there."""
    # (a missing level is None; what raises is the connection, or a level we may not look at)
    kinds = await asyncio.gather(*(_stat(sftp, level) for level in levels))
    for level, kind in zip(levels, kinds):
        if kind is not None:
            if stat.S_ISDIR(kind.permissions or 0):
                continue
            raise asyncssh.SFTPFailure(f"{level} exists and is not a directory")
        try:
            await sftp.mkdir(level)
        except LINK_ERRORS:
            raise
        except asyncssh.SFTPError as exc:
            if await _is_dir(sftp, level):
                continue  # made by someone else meanwhile
            own = await _stat(sftp, level, follow=False)
            if own is not None:  # missing when followed, there when not: a link to nothing, or a loop
                raise asyncssh.SFTPFailure(f"{level} is a link to nothing, not a directory") from None
            reason = exc.reason or "refused"
            hint = " (a read-only or full filesystem, among others)" if reason == "Failure" else ""
            message = f"cannot create directory {level}: {reason}{hint}"
            # the same kind of error (callers tell "no such file" from the rest), with the level and reason
            raise (asyncssh.SFTPError(exc.code, message) if type(exc) is asyncssh.SFTPError
                   else type(exc)(message)) from None


async def _service_pid_over_sftp(sftp: asyncssh.SFTPClient, pid_file: str) -> int | None:
    """What the shell's `_read_pid(FILE) && alive "$pid"` says (a live session leader, not a
    zombie), read on the SFTP session: no fork of sshd and a shell on the host. Asked after every start that
    did not listen within 0.2 s, and before every start (`state: started`): at a hundred hosts those commands
    added up."""
    try:
        attrs = await _stat(sftp, pid_file)
        if attrs is None or not stat.S_ISREG(attrs.permissions or 0):
            return None  # as `[ -f ]`; and a FIFO there would block the session's one server process
        async with sftp.open(pid_file, "rb") as f:
            raw = await f.read(64)
        # the first line, as `read` takes it (dash and bash drop NUL bytes); anything but digits fails `alive`
        match = _PID_LINE.match(raw.replace(b"\0", b""))
        if match is None:
            return None
        pid = match.group(1).decode()
        # /proc files say size 0: read a size, not "to the end". The command name may be any bytes.
        async with sftp.open(f"/proc/{pid}/stat", "rb") as f:
            fields = parse_stat((await f.read(4096)).decode(errors="replace"))
    except asyncssh.SFTPNoSuchFile:
        return None
    return int(pid) if fields[0] != "Z" and fields[3] == pid else None


async def _stat(sftp: asyncssh.SFTPClient, path: str, follow: bool = True) -> asyncssh.SFTPAttrs | None:
    try:
        return await (sftp.stat(path) if follow else sftp.lstat(path))
    except asyncssh.SFTPNoSuchFile:
        return None


async def _is_dir(sftp: asyncssh.SFTPClient, path: str) -> bool:
    attrs = await _stat(sftp, path)
    return attrs is not None and stat.S_ISDIR(attrs.permissions or 0)


def _signal_number(name: str) -> int:
    try:
        return int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 0
