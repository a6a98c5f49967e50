"""The shell checks the service scripts share, run by a real /bin/sh against real processes and sockets:
`alive PID` (transport/alive.py) and the listening test (transport/ports.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from opsconsole.transport.alive import alive_function
from opsconsole.transport.ports import listening_test


def _sh(script: str, path: str = "/usr/sbin:/usr/bin:/sbin:/bin") -> int:
    return subprocess.run(["/bin/sh", "-c", script], timeout=10, env={"PATH": path}).returncode


def _alive(pid: int, session_leader: bool = True) -> bool:
    return _sh(f"{alive_function(session_leader)}\nalive {pid}") == 0


def test_alive_tells_a_running_session_leader_from_a_zombie_and_a_stranger() -> None:
    leader = subprocess.Popen(["sleep", "30"], start_new_session=True)
    follower = subprocess.Popen(["sleep", "30"])  # runs, but in our session: not what setsid starts
    try:
        deadline = time.monotonic() + 5
        while not _alive(leader.pid):  # Popen returns before the child's setsid(): poll for it
            assert time.monotonic() < deadline, "the session leader never looked alive"
            time.sleep(0.02)
        assert not _alive(follower.pid)
        assert _alive(follower.pid, session_leader=False)
        leader.kill()
        deadline = time.monotonic() + 5
        while _alive(leader.pid, session_leader=False):  # dead, not yet reaped: a zombie is not alive
            assert time.monotonic() < deadline, "a zombie looked alive"
            time.sleep(0.02)
        assert leader.poll() is not None  # it was a zombie, not gone: reaping it works only now
        assert not _alive(leader.pid, session_leader=False)
    finally:
        for p in (leader, follower):
            p.kill()
            p.wait()


@pytest.mark.parametrize("tools", [("ss",), ("cat", "awk")], ids=["ss-alone", "proc-without-ss"])
def test_listening_test_sees_a_listening_port_and_not_a_closed_one(tools: tuple[str, ...], tmp_path: Path) -> None:
    """Each way alone on PATH: ss without cat and awk (a failing ss would fall back to nothing and miss the
    listener), and the /proc files where a host has no ss."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert found, f"{tool} is missing on this machine"
        (bin_dir / tool).symlink_to(found)
    path = str(bin_dir)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    other = socket.create_server(("127.0.0.1", 0))  # another port listening is not this one
    established = socket.create_connection(other.getsockname())  # nor a connection from or to it
    try:
        assert _sh(listening_test(port), path) == 1  # bound, not listening
        server.listen()
        assert _sh(listening_test(port), path) == 0
        server.close()
        assert _sh(listening_test(port), path) == 1
        try:
            v6 = socket.create_server(("::1", port), family=socket.AF_INET6)  # IPv6 only: seen too
        except OSError:
            v6 = None  # no IPv6 here
        if v6 is not None:
            assert _sh(listening_test(port), path) == 0
            v6.close()
    finally:
        established.close()
        other.close()


def test_alive_reads_a_process_whose_name_holds_spaces_and_a_parenthesis() -> None:
    """/proc/PID/stat's second field is the command name in parentheses, and a process may name itself
    anything: counted by spaces from the start, `x) y z` shifted the state and session fields."""
    import sys

    named = subprocess.Popen([sys.executable, "-c",
                              "open('/proc/self/comm', 'w').write('x) y z'); print('named', flush=True); "
                              "import time; time.sleep(30)"],
                             start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert named.stdout is not None and named.stdout.readline() == "named\n"
        with open(f"/proc/{named.pid}/stat") as f:
            assert "(x) y z)" in f.read()
        assert _alive(named.pid) and _alive(named.pid, session_leader=False)
        named.kill()
        deadline = time.monotonic() + 5
        while _alive(named.pid, session_leader=False):  # a zombie now: not alive, whatever its name
            assert time.monotonic() < deadline, "a zombie with a spaced name looked alive"
            time.sleep(0.02)
    finally:
        named.kill()
        named.wait()


@pytest.mark.parametrize("command", ["sleep 30", "exit 3"], ids=["runs", "dies-at-once"])
def test_the_ssh_start_script_says_the_pid_once_it_leads_its_session(command: str, tmp_path: Path) -> None:
    """The pid a start prints (and writes) must already be what `service_pid` recognises, a session leader:
    a `setsid` that takes its time (a loaded host; here a wrapper sleeping 0.5 s) once left a window where
    an immediate look said "not running" (seen in CI). A service that dies at once is not waited for."""
    from opsconsole.hosts import Host
    from opsconsole.transport.ssh import _ALIVE, SshTransport

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("setsid", path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert real, "setsid is missing on this machine"
    (bin_dir / "setsid").write_text(f"#!/bin/sh\nsleep 0.5\nexec {real} \"$@\"\n")
    (bin_dir / "setsid").chmod(0o755)
    transport = SshTransport(Host(name="h", group="g", address="127.0.0.1", root=str(tmp_path / "root")),
                             pool=None)  # type: ignore[arg-type]  (the script alone is run, here)
    script = f"{_ALIVE}\n" + transport._start_script("svc", command, None, None, None)
    started = time.monotonic()
    run = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"})
    took = time.monotonic() - started
    pid = int(run.stdout.strip())
    try:
        if command == "sleep 30":
            assert _alive(pid), "the pid printed was not yet the service's session leader"
        else:
            assert took < 1.9, took  # the dead child is not waited for the whole 2 s
    finally:
        _kill_service(pid)


def _kill_service(pid: int) -> None:
    """SIGKILL the service `pid` and its group, if it leads one of its own (never our group)."""
    try:
        if os.getsid(pid) == pid and os.getpgid(pid) != os.getpgid(0):
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _start_script(root: Path, command: str) -> str:
    from opsconsole.hosts import Host
    from opsconsole.transport.ssh import _ALIVE, SshTransport

    transport = SshTransport(Host(name="h", group="g", address="127.0.0.1", root=str(root)),
                             pool=None)  # type: ignore[arg-type]  (the script alone is run, here)
    return f"{_ALIVE}\n" + transport._start_script("svc", command, None, None, None)


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line holds `marker` (a start's service or the shell that would become it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_start_whose_log_blocks_leaves_nothing_behind_once_killed(tmp_path: Path) -> None:
    """A log that blocks on open (a FIFO an operator pointed at a logger, a hung mount) holds the start until
    the transport kills its command's group on the timeout. Nothing may survive that kill: a shell already in
    a session of its own, waiting on the log, would start the service later with no pid file, and the next
    start would run a second copy."""
    root = tmp_path / "root"
    (root / "log").mkdir(parents=True)
    (root / "run").mkdir()
    fifo = root / "log" / "svc.log"
    os.mkfifo(fifo)
    marker = f"{os.getpid() % 10**5 + 10**5}.371"
    start = subprocess.Popen(["/bin/sh", "-c", _start_script(root, f"sleep {marker}")], start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # the start is blocked on the log by now (it cannot end before a reader opens it)
        assert start.poll() is None, "the start ended though its log could not be opened"
    finally:
        os.killpg(start.pid, signal.SIGKILL)  # what the transport does to a command past its timeout
        start.wait()
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = _processes_with(marker)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader appears: a survivor would go on now
    try:
        time.sleep(0.3)
        left += _processes_with(marker)
    finally:
        os.close(reader)
        for pid in set(left):
            _kill_service(pid)
    assert not left, f"processes outlived the killed start: {sorted(set(left))}"
    assert not (root / "run" / "svc.pid").exists()


def test_a_start_whose_log_cannot_be_opened_fails_and_says_why(tmp_path: Path) -> None:
    """A log that cannot be opened (here a directory in its place; a root-owned file or a read-only
    filesystem alike) starts nothing: the start must fail with the shell's reason, not hand back the pid of a
    process already gone."""
    root = tmp_path / "root"
    (root / "log" / "svc.log").mkdir(parents=True)
    (root / "run").mkdir()
    run = subprocess.run(["/bin/sh", "-c", _start_script(root, "sleep 30")], capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        assert run.returncode != 0, run
        assert run.stdout.strip() == "", run.stdout
        assert "svc.log" in run.stderr and "did not start" in run.stderr, run.stderr
        assert not (root / "run" / "svc.pid").exists()
    finally:
        for pid in _processes_with("sleep\x0030"):
            if os.getsid(pid) == pid:
                _kill_service(pid)


def test_a_command_that_does_not_parse_fails_the_start_with_the_shells_words(tmp_path: Path) -> None:
    """The service's shell reads its whole first line before it says its pid: a command that does not parse
    starts nothing, and the start says so with what the shell wrote to the log."""
    root = tmp_path / "root"
    run = subprocess.run(["/bin/sh", "-c", _start_script(root, "echo 'unclosed")], capture_output=True,
                         text=True, timeout=30, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert run.returncode != 0 and run.stdout.strip() == "", run
    assert "did not start" in run.stderr and "unterminated quoted string" in run.stderr.lower(), run.stderr
