"""LocalTransport with real processes and files under tmp_path."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsconsole.hosts import Host
from opsconsole.transport.base import TransportError
from opsconsole.transport.local import STDOUT_CAP, LocalTransport


def gone(pid: int) -> bool:
    """No such process, or only its zombie left (pid 1 in a container may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


async def wait_gone(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return gone(pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def transport(tmp_path: Path):
    t = LocalTransport(Host(name="h1", group="g", address="127.0.0.1", root=str(tmp_path / "h1")))
    yield t
    for pid_file in (tmp_path / "h1" / "run").glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


async def test_root_is_created_and_is_the_default_cwd(tmp_path: Path) -> None:
    t = LocalTransport(Host(name="h", group="g", address="127.0.0.1", root=str(tmp_path / "a" / "b")))
    assert Path(t.root) == tmp_path / "a" / "b" and Path(t.root).is_dir()
    (tmp_path / "a" / "b" / "sub").mkdir()
    assert (await t.run("pwd")).stdout == f"{tmp_path / 'a' / 'b'}\n"
    assert (await t.run("pwd", cwd="sub")).stdout == f"{tmp_path / 'a' / 'b' / 'sub'}\n"
    missing = await t.run("pwd", cwd="nowhere")  # like the ssh transport: `cd DIR || exit 125`
    assert missing.rc == 125 and "nowhere: no such directory" in missing.tail[-1]


async def test_lines_stream_as_they_are_printed(transport: LocalTransport) -> None:
    seen: list[tuple[float, str, str]] = []
    start = time.monotonic()
    result = await transport.run("echo first; echo oops >&2; sleep 1; printf 'last without newline'",
                                 on_line=lambda line, stream: seen.append((time.monotonic() - start, line, stream)))
    assert result.ok and result.rc == 0
    assert [(line, stream) for _, line, stream in seen] in (
        [("first", "stdout"), ("oops", "stderr"), ("last without newline", "stdout")],
        [("oops", "stderr"), ("first", "stdout"), ("last without newline", "stdout")])
    first_at = next(t for t, line, _ in seen if line == "first")
    last_at = next(t for t, line, _ in seen if line == "last without newline")
    assert last_at - first_at > 0.8, "the first line was only delivered when the command ended"
    assert result.stdout == "first\nlast without newline\n"
    assert set(result.tail) == {"first", "oops", "last without newline"}


async def test_env_stdin_exit_code_tail_and_stdout_cap(transport: LocalTransport) -> None:
    result = await transport.run('echo "$GREETING"; cat; exit 4', env={"GREETING": "hi"}, stdin=b"from stdin\n")
    assert result.rc == 4 and not result.ok and result.describe() == "exit code 4"
    assert result.stdout == "hi\nfrom stdin\n"
    many = await transport.run("seq 1 30")
    assert many.tail == tuple(str(i) for i in range(11, 31))
    big = await transport.run("head -c 3000000 /dev/zero | tr '\\0' 'x'; echo; echo end")
    assert big.ok and len(big.stdout) == STDOUT_CAP and big.tail[-1] == "end"


async def test_long_line_without_newline_does_not_break_reading(transport: LocalTransport) -> None:
    lines: list[str] = []
    result = await transport.run("head -c 200000 /dev/zero | tr '\\0' 'y'; echo; echo after",
                                 on_line=lambda line, _: lines.append(line))
    assert result.ok and lines[-1] == "after" and "".join(lines[:-1]) == "y" * 200000


async def test_timeout_kills_the_whole_process_group(transport: LocalTransport, tmp_path: Path) -> None:
    # A child that ignores TERM and a grandchild: both must be gone after the timeout.
    script = ("bash -c 'trap \"\" TERM; sleep 300 & echo $! > grandchild.pid; wait' & echo $! > child.pid; "
              "echo started; wait")
    start = time.monotonic()
    result = await transport.run(script, timeout=0.5)
    assert result.timed_out and result.rc is None and not result.ok and result.describe() == "timed out"
    assert result.tail == ("started",)
    assert time.monotonic() - start < 6
    root = Path(transport.root)
    for name in ("child.pid", "grandchild.pid"):
        pid = int((root / name).read_text())
        assert await wait_gone(pid), f"{name} {pid} survived the timeout"


async def test_cancel_kills_the_process_group(transport: LocalTransport) -> None:
    task = asyncio.create_task(transport.run("sleep 300 & echo $! > kid.pid; wait"))
    kid_file = Path(transport.root) / "kid.pid"
    for _ in range(100):
        if kid_file.exists() and kid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    kid = int(kid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 6)
    assert await wait_gone(kid)


async def test_a_background_child_does_not_hold_the_command(transport: LocalTransport) -> None:
    start = time.monotonic()
    result = await transport.run("sleep 5 & echo $! > bg.pid; echo done")
    assert result.ok and result.stdout == "done\n"
    assert time.monotonic() - start < 3
    os.kill(int((Path(transport.root) / "bg.pid").read_text()), signal.SIGKILL)


async def test_become_as_root_runs_directly(transport: LocalTransport) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root; as a user, become goes through `sudo -n`")
    result = await transport.run("id -u", become=True)
    assert result.stdout == "0\n"


async def test_write_file_reports_change_and_is_atomic(transport: LocalTransport, tmp_path: Path) -> None:
    target = Path(transport.root) / "conf" / "app.conf"
    assert await transport.write_file("conf/app.conf", b"a=1\n") is True
    assert target.read_bytes() == b"a=1\n"
    inode = target.stat().st_ino
    assert await transport.write_file("conf/app.conf", b"a=1\n") is False
    assert target.stat().st_ino == inode  # unchanged content: the file was not rewritten
    assert await transport.write_file("conf/app.conf", b"a=1\n", mode=0o600) is True
    assert target.stat().st_mode & 0o777 == 0o600
    assert await transport.write_file("conf/app.conf", b"a=1\n", mode=0o600) is False
    assert await transport.write_file("conf/app.conf", b"a=2\n") is True
    assert target.stat().st_ino != inode  # replaced by rename, not written in place
    assert target.stat().st_mode & 0o777 == 0o600  # the mode survives a rewrite
    assert sorted(p.name for p in target.parent.iterdir()) == ["app.conf"]  # no temp files left
    assert await transport.read_file("conf/app.conf") == b"a=2\n"
    assert await transport.exists("conf/app.conf") and not await transport.exists("conf/other")
    with pytest.raises(TransportError, match="no such file"):
        await transport.read_file("conf/other")
    source = tmp_path / "local.bin"
    source.write_bytes(b"\x00\x01")
    assert await transport.put_file(str(source), "bin/x", mode=0o755) is True
    assert await transport.put_file(str(source), "bin/x", mode=0o755) is False
    assert (Path(transport.root) / "bin" / "x").stat().st_mode & 0o777 == 0o755
    with pytest.raises(TransportError, match="cannot read"):
        await transport.put_file(str(tmp_path / "missing"), "bin/y")


async def test_service_start_is_idempotent_answers_and_stops(transport: LocalTransport) -> None:
    port = free_port()
    command = f"echo booting; exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    pid = await transport.start_service("web", command, env={"X": "1"})
    root = Path(transport.root)
    assert (root / "run" / "web.pid").read_text().strip() == str(pid)
    assert await transport.start_service("web", command) == pid  # already running: no second one
    assert await transport.service_pid("web") == pid
    deadline = time.monotonic() + 10
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.0 200")
            writer.close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the service never answered"
            await asyncio.sleep(0.1)
    # Its own session: it would outlive us, and it is not in our process group.
    assert os.getsid(pid) == pid and os.getpgid(pid) != os.getpgid(0)
    assert "booting" in (root / "log" / "web.log").read_text()
    assert await transport.stop_service("web") is True
    assert await wait_gone(pid)
    assert not (root / "run" / "web.pid").exists()
    assert await transport.service_pid("web") is None
    assert await transport.stop_service("web") is False


async def test_stop_kills_children_and_escalates_to_kill(transport: LocalTransport) -> None:
    pid = await transport.start_service("stubborn", "trap '' TERM; sleep 300 & echo $! > run/kid; wait")
    kid_file = Path(transport.root) / "run" / "kid"
    for _ in range(100):
        if kid_file.exists() and kid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    kid = int(kid_file.read_text())
    start = time.monotonic()
    assert await transport.stop_service("stubborn", timeout=0.5) is True
    assert time.monotonic() - start < 5
    assert await wait_gone(pid) and await wait_gone(kid)


async def test_stale_pid_file_starts_a_new_service(transport: LocalTransport) -> None:
    dead = await transport.run("echo $$")
    stale = int(dead.stdout)
    assert await wait_gone(stale)
    pid_file = Path(transport.root) / "run" / "svc.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{stale}\n")
    assert await transport.service_pid("svc") is None
    pid = await transport.start_service("svc", "sleep 300")
    assert pid != stale and await transport.service_pid("svc") == pid
    # A pid file naming a live process that is not ours (not a session leader) is not "running" either.
    if os.getsid(0) != os.getpid():
        pid_file.write_text(f"{os.getpid()}\n")
        assert await transport.service_pid("svc") is None
    pid_file.write_text(f"{pid}\n")
    assert await transport.stop_service("svc") is True


async def test_a_start_whose_log_cannot_be_opened_fails_and_says_why(transport: LocalTransport) -> None:
    """As over SSH (launch_lines): nothing started, so no pid of a process already gone is handed back."""
    (Path(transport.root) / "log" / "svc.log").mkdir(parents=True)
    with pytest.raises(TransportError, match="did not start.*svc.log: Is a directory|svc.log: Is a directory"):
        await transport.start_service("svc", "sleep 300")
    assert not (Path(transport.root) / "run" / "svc.pid").exists()
    assert await transport.service_pid("svc") is None


async def test_the_pid_a_start_gives_already_leads_its_session(transport: LocalTransport) -> None:
    """The pid returned is the service's session leader at once: an immediate look finds it running."""
    pid = await transport.start_service("svc", "sleep 300")
    try:
        assert os.getsid(pid) == pid
        assert await transport.service_pid("svc") == pid
    finally:
        assert await transport.stop_service("svc") is True


async def test_bad_service_name_is_refused(transport: LocalTransport) -> None:
    with pytest.raises(TransportError, match="bad service name"):
        await transport.start_service("../etc", "true")


# One shell everywhere: the ssh transport runs `/bin/sh -c`, so the local one must too, or a
# bashism passes on the demo fleet and fails on a Debian host, where /bin/sh is dash.
_BASHISMS = ["[[ 1 == 1 ]] && echo double-brackets", "echo {a,b}", "echo ${BASH_VERSION:-not-bash}",
             "a=(x y); echo ${a[1]}"]


def _sh(command: str) -> tuple[int, str]:
    done = subprocess.run(["/bin/sh", "-c", command], check=False, capture_output=True, text=True, timeout=10)
    return done.returncode, done.stdout


@pytest.mark.parametrize("command", _BASHISMS)
async def test_commands_run_in_bin_sh_like_over_ssh(transport: LocalTransport, command: str) -> None:
    result = await transport.run(command)
    assert (result.rc, result.stdout) == _sh(command)


async def test_services_run_in_bin_sh_like_over_ssh(transport: LocalTransport) -> None:
    script = "echo {a,b}; echo ${BASH_VERSION:-not-bash}; exec sleep 30"
    pid = await transport.start_service("shelly", script)
    log = Path(transport.root) / "log" / "shelly.log"
    deadline = time.monotonic() + 5
    while log.read_text().count("\n") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert log.read_text() == _sh("echo {a,b}; echo ${BASH_VERSION:-not-bash}")[1]
    assert await transport.stop_service("shelly") is True
    assert await wait_gone(pid)


async def test_a_running_command_its_secret_and_its_env_are_in_no_process_arguments(transport: LocalTransport) -> None:
    # Another local user can read every process's arguments; a rendered secret must not be among them.
    from tests.cmdlines import cmdlines_holding
    secret, env_secret = f"s3cret-{os.urandom(6).hex()}", f"env-{os.urandom(6).hex()}"
    running = asyncio.ensure_future(transport.run(
        f"TOKEN='{secret}'; printf %s \"$TOKEN\" > token.out; cat > stdin.out; sleep 30",
        env={"API_TOKEN": env_secret}, stdin=b"input after the script\n"))
    out = Path(transport.root) / "stdin.out"
    deadline = time.monotonic() + 10
    while not (out.exists() and out.read_text()):
        assert time.monotonic() < deadline and not running.done(), "the command never started"
        await asyncio.sleep(0.02)
    assert (Path(transport.root) / "token.out").read_text() == secret  # it is the running command we look at
    assert out.read_text() == "input after the script\n"  # the command's own stdin still reaches it
    assert cmdlines_holding(secret) == [] and cmdlines_holding(env_secret) == []
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_an_unchanged_file_is_never_chmod_ed_through_a_planted_link(transport: LocalTransport,
                                                                          tmp_path: Path) -> None:
    # Someone who can write in the host root plants a link to a file of theirs (or of root's) whose content
    # matches: a mode change must not reach that file, and the link is replaced by our file.
    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"a=1\n")
    victim.chmod(0o600)
    (Path(transport.root) / "conf").mkdir()
    link = Path(transport.root) / "conf" / "app.conf"
    link.symlink_to(victim)
    assert await transport.write_file("conf/app.conf", b"a=1\n", mode=0o644) is True
    assert victim.stat().st_mode & 0o777 == 0o600 and victim.read_bytes() == b"a=1\n"
    assert not link.is_symlink() and link.read_bytes() == b"a=1\n" and link.stat().st_mode & 0o777 == 0o644


async def test_an_overlong_line_is_never_cut_inside_a_secret(tmp_path: Path) -> None:
    # A line longer than the pipe reader keeps whole is emitted in pieces, and each piece is masked on its
    # own (the event bus masks each OutputLine): a cut inside a secret would show both halves of it.
    from opsconsole.redact import MASK, Redactor
    secret = "Zq81xv-s3cret-77"
    redactor = Redactor([secret])
    t = LocalTransport(Host(name="h", group="g", address="127.0.0.1", root=str(tmp_path / "h")), redactor)
    pieces: list[str] = []
    # 700 KB of "SECRET " with no newline: nearly every place a piece could end falls inside a secret.
    count = 700000 // (len(secret) + 1)
    result = await t.run(f"yes '{secret}' | tr '\\n' ' ' | head -c {count * (len(secret) + 1)}; echo",
                         on_line=lambda line, stream: pieces.append(line))
    assert result.ok and len(pieces) >= 2, [len(p) for p in pieces]
    assert "".join(pieces) == f"{secret} " * count  # cut in pieces, nothing lost nor repeated
    shown = "".join(redactor.text(p) for p in pieces)
    assert secret[:8] not in shown and secret[-8:] not in shown
    assert shown.count(MASK) == count


async def test_a_command_reading_stdin_without_input_gets_none_of_the_script(transport: LocalTransport) -> None:
    # The script itself arrives on the shell's stdin: a command reading stdin must not eat the rest of it.
    result = await transport.run("cat; read line || echo nothing read\necho after")
    assert result.ok and result.stdout == "nothing read\nafter\n"
    # A syntax error fails the command with sh's 2 (and, parsed whole first, nothing of it runs).
    broken = await transport.run("echo before\nif true; then")
    assert broken.rc == 2 and broken.stdout == ""


async def test_commands_and_services_see_a_logins_environment_not_the_consoles_secrets(
        transport: LocalTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local host is this machine: its commands and services once inherited everything the console was
    started with (AWS keys, the proxy token), while the same app over SSH gets a login's environment."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-app")
    monkeypatch.setenv("LC_TIME", "C")
    result = await transport.run('echo "${AWS_SECRET_ACCESS_KEY:-unset} $LC_TIME $GIVEN"; command -v sh',
                                 env={"GIVEN": "given"})
    assert result.ok and result.stdout.splitlines()[0] == "unset C given", result.stdout  # PATH still finds sh
    pid = await transport.start_service("envcheck", "sleep 30")
    try:
        # Read once the pid runs the service itself: mid-exec (launcher shell → setsid → sh → sleep) its
        # environ reads empty for an instant, which passed the first check and failed the second (seen in CI).
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
            assert time.monotonic() < deadline, Path(f"/proc/{pid}/cmdline").read_bytes()
            await asyncio.sleep(0.01)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"AWS_SECRET_ACCESS_KEY=") for v in environ), environ
        assert any(v.startswith(b"PATH=") for v in environ)
    finally:
        await transport.stop_service("envcheck")
