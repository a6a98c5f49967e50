"""The shell checks the service scripts share, run by a real /bin/sh against real processes and sockets:
`alive PID` (transport/alive.py) and the listening test (transport/ports.py)."""

from __future__ import annotations

import socket
import subprocess
import time

from opsconsole.transport.alive import alive_function
from opsconsole.transport.ports import listening_test


def _sh(script: str) -> int:
    return subprocess.run(["/bin/sh", "-c", script], timeout=10).returncode


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


def test_listening_test_sees_a_listening_port_and_not_a_closed_one() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    assert _sh(listening_test(port)) == 1  # bound, not listening
    server.listen()
    assert _sh(listening_test(port)) == 0
    server.close()
    assert _sh(listening_test(port)) == 1
