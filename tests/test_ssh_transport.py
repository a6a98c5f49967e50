"""SshTransport against real sshd hosts behind the lab's jump host."""

from __future__ import annotations

import asyncio
import errno
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from opsconsole.transport.base import TransportError
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import _ALIVE, SshTransport, _read_pid
from tests.lab import Lab
from tests.test_leader import settled_argv0
from tests.lab.inventory import asyncssh_packet_log, lab_host, record_commands, ssh_options

pytest_plugins = ["tests.lab.fixtures"]


@pytest.fixture
def app1(lab: Lab, pool: SshPool) -> SshTransport:
    return SshTransport(lab_host(lab, "app-1"), pool)


async def until(check, what: str, timeout: float = 10.0) -> None:
    """Poll `check()` until it is true; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} after {timeout:g}s"
        await asyncio.sleep(0.05)


def live_processes(lab: Lab, host: str, marker: str) -> list[str]:
    """Processes on a lab host whose command line holds `marker` (zombies left out: they are dead)."""
    out = lab.exec(host, "ps", "-eo", "stat=,args=").stdout
    return [line for line in out.splitlines() if marker in line and not line.lstrip().startswith("Z")
            and "ps -eo" not in line]


async def test_direct_connect_to_app_host_has_no_route_but_the_jump_gets_there(lab: Lab, app1: SshTransport) -> None:
    with pytest.raises(OSError) as info:
        lab.connect_direct("app-1")
    assert info.value.errno == errno.EHOSTUNREACH
    result = await app1.run("hostname")
    assert result.ok and result.stdout == "app-1\n"


async def test_no_ignore_packet_pads_each_packet_once_logged_in(lab: Lab, pool: SshPool,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """asyncssh sends an empty MSG_IGNORE before every packet (a defence only CBC needs, and we offer no CBC):
    seen here while logging in, then never again on either connection, the jump's or the host's, while a
    command and SFTP still work. asyncssh's own packet log (debug level 3) is what is read."""
    with asyncssh_packet_log(caplog) as take:
        app1 = SshTransport(lab_host(lab, "app-1"), pool)
        assert (await app1.run("true")).ok  # opens the jump connection, then app-1's through it
        during_login = take()
        name = f"padding-{uuid.uuid4().hex}"
        result = await app1.run("cat; hostname", stdin=b"through both\n")
        assert result.ok and result.stdout == "through both\napp-1\n"
        await app1.write_file(f"work/{name}", b"x" * 100_000)
        assert await app1.read_file(f"work/{name}") == b"x" * 100_000
        after = take()
    assert any("Sent MSG_IGNORE" in m for m in during_login), "asyncssh no longer pads: drop skip_ignore_padding"
    sent = [m for m in after if "Sent MSG_" in m]
    assert len(sent) > 20, f"the packet log saw too little to judge: {sent}"
    assert not [m for m in sent if "MSG_IGNORE" in m], f"padding after log-in: {len(sent)} packets sent"


async def test_run_streams_lines_with_exit_code_cwd_env_and_stdin(app1: SshTransport) -> None:
    lines: list[tuple[str, str]] = []
    await app1.run("mkdir -p work/sub")
    result = await app1.run('pwd; echo "$GREETING" >&2; cat; exit 4', cwd="work/sub", env={"GREETING": "hi there"},
                            stdin=b"from stdin\n", on_line=lambda line, stream: lines.append((line, stream)))
    assert result.rc == 4 and not result.ok and result.describe() == "exit code 4"
    assert ("/srv/opsconsole/work/sub", "stdout") in lines
    assert ("hi there", "stderr") in lines and ("from stdin", "stdout") in lines
    assert result.stdout == "/srv/opsconsole/work/sub\nfrom stdin\n"
    assert not any("opsconsole-pgid" in line for line, _ in lines)


async def test_output_arrives_while_the_command_still_runs(app1: SshTransport) -> None:
    seen: list[float] = []
    assert (await app1.run("true")).ok  # connected first: the handshakes are not what is timed
    start = time.monotonic()
    await app1.run("echo one; sleep 1; echo two", on_line=lambda line, stream: seen.append(time.monotonic() - start))
    # Streamed, the lines come a second apart; buffered to the end, both would come at once.
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.6, seen


async def test_killed_by_signal_is_reported(app1: SshTransport) -> None:
    result = await app1.run("kill -TERM $$")
    assert result.rc is None and result.signal == 15 and result.describe() == "killed by signal 15"


async def test_timeout_kills_the_whole_remote_process_group(lab: Lab, app1: SshTransport) -> None:
    marker = f"ocl-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    result = await app1.run(f"sh -c 'sleep 300; : {marker}' & sleep 301; : {marker}", timeout=1.0)
    assert result.timed_out and result.rc is None and result.describe() == "timed out"
    assert time.monotonic() - start < 5
    await until(lambda: live_processes(lab, "app-1", marker) == [], "the timed-out process group still runs")


async def test_cancel_kills_the_remote_command(lab: Lab, app1: SshTransport) -> None:
    marker = f"ocl-{uuid.uuid4().hex[:8]}"
    # The command's own text is in no process's arguments (it reaches the shell on stdin): the marker is
    # in its child's, which the cancel must kill with the rest of the command's process group.
    task = asyncio.create_task(app1.run(f"sh -c 'sleep 300; : {marker}'; : {marker}"))
    await until(lambda: live_processes(lab, "app-1", marker), "the remote command never started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: live_processes(lab, "app-1", marker) == [], "the cancelled remote command still runs")


async def test_become_runs_as_root_via_sudo(app1: SshTransport) -> None:
    assert (await app1.run("id -un")).stdout == "ocl\n"
    assert (await app1.run("id -un", become=True)).stdout == "root\n"


async def test_files_over_sftp(lab: Lab, app1: SshTransport, tmp_path: Path) -> None:
    assert await app1.write_file("conf/app.env", b"A=1\n", mode=0o640) is True
    assert await app1.write_file("conf/app.env", b"A=1\n", mode=0o640) is False
    assert await app1.write_file("conf/app.env", b"A=1\n", mode=0o600) is True  # mode alone is a change
    local = Path(lab.hosts["app-1"].files) / "conf" / "app.env"
    assert local.read_bytes() == b"A=1\n" and local.stat().st_mode & 0o777 == 0o600
    assert await app1.read_file("conf/app.env") == b"A=1\n"
    assert await app1.exists("conf") and not await app1.exists("nope")
    with pytest.raises(TransportError, match="app-1: /srv/opsconsole/missing.txt: no such file"):
        await app1.read_file("missing.txt")
    src = tmp_path / "payload.bin"
    src.write_bytes(bytes(range(256)) * 4096 * 2)  # 2 MiB: the checksum path
    assert await app1.put_file(str(src), "big/payload.bin") is True
    assert await app1.put_file(str(src), "big/payload.bin") is False
    assert (Path(lab.hosts["app-1"].files) / "big" / "payload.bin").read_bytes() == src.read_bytes()


async def test_service_lifecycle_pid_and_log(lab: Lab, app1: SshTransport) -> None:
    pid = await app1.start_service("ticker", "echo started; exec sleep 600")
    assert pid > 0
    assert await app1.start_service("ticker", "echo started; exec sleep 600") == pid  # already runs: no-op
    assert await app1.service_pid("ticker") == pid
    files = Path(lab.hosts["app-1"].files)
    assert (files / "run" / "ticker.pid").read_text().strip() == str(pid)
    log = files / "log" / "ticker.log"
    await until(lambda: log.exists() and "started" in log.read_text(), "the service's log never said it started")
    assert await app1.stop_service("ticker") is True
    assert await app1.service_pid("ticker") is None
    assert await app1.stop_service("ticker") is False


async def test_the_pid_file_names_the_service_itself_not_a_waiting_shell(lab: Lab, app1: SshTransport) -> None:
    """dash forks for the last command of `sh -c`: a simple command gets `exec`, so the group's leader is the
    service and a stop watches it directly (transport/leader.py)."""
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.25"
    pid = await app1.start_service("simple", f"sleep {marker}")
    try:
        assert await settled_argv0(pid) == "sleep"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", marker.encode()]
    finally:
        assert await app1.stop_service("simple") is True
    assert live_processes(lab, "app-1", f"sleep {marker}") == []


async def test_service_pid_is_read_on_the_sftp_session_and_means_what_alive_means(lab: Lab, app1: SshTransport) -> None:
    """Asked after every start that did not listen within 0.2 s and before every `state: started`, the look
    runs no command on the host, and answers as the shell's `alive` does: a live session leader only."""
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.125"
    run_dir = Path(lab.hosts["app-1"].files) / "run"
    pid = await app1.start_service("looked", f"sleep {marker}")
    not_leader = lab.exec("app-1", "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!").stdout.strip()
    commands = record_commands(app1)
    try:
        assert await app1.service_pid("looked") == pid
        assert await app1.service_pid("never-started") is None
        (run_dir / "garbage.pid").write_text("not a pid\n")
        assert await app1.service_pid("garbage") is None
        (run_dir / "stranger.pid").write_text(f"{not_leader}\n")  # alive, but not what setsid started
        assert await app1.service_pid("stranger") is None
        (run_dir / "spaced.pid").write_text(f" {pid}\n")  # the shell's `alive " 123"` says no: so do we
        assert await app1.service_pid("spaced") is None
        # The shell's `read` drops NUL bytes (dash's and bash's): "12\0345" is pid 12345 to it, and to us.
        digits = str(pid).encode()
        (run_dir / "nul.pid").write_bytes(digits[:1] + b"\0" + digits[1:] + b"\n")
        assert await app1.service_pid("nul") == pid
        shell = lab.exec("app-1", "sh", "-c", f'{_ALIVE}\n{_read_pid(str(run_dir / "nul.pid"))} && alive "$pid" '
                         '&& echo "$pid"', check=False)
        assert shell.stdout.strip() == str(pid), shell
        os.mkfifo(run_dir / "fifo.pid")  # not a file (`[ -f ]`), and never opened: it would block the session
        assert await asyncio.wait_for(app1.service_pid("fifo"), 5) is None
        assert commands == [], commands
    finally:
        del app1.run  # recording ends
        lab.exec("app-1", "sh", "-c", f"kill {not_leader}", check=False)
        for name in ("garbage", "stranger", "spaced", "nul", "fifo"):
            (run_dir / f"{name}.pid").unlink(missing_ok=True)
        assert await app1.stop_service("looked") is True
    assert await app1.service_pid("looked") is None


async def test_stop_waits_for_the_whole_group_and_kills_what_outlives_its_leader(lab: Lab, app1: SshTransport) -> None:
    """A service whose child ignores TERM: the leader dies at once, the child would keep running (and keep
    the port). The stop waits out its timeout for the whole group, then KILLs what is left of it."""
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.5"  # a sleep of that many seconds: its ps line names it
    try:
        await app1.start_service("stubborn", f"(trap '' TERM; exec sleep {marker}) & wait")
        await until(lambda: live_processes(lab, "app-1", f"sleep {marker}"), "the child never started")
        started = time.monotonic()
        assert await app1.stop_service("stubborn", timeout=1.0) is True
        took = time.monotonic() - started
        assert live_processes(lab, "app-1", f"sleep {marker}") == [], "a process of the stopped service outlived the stop"
        assert took >= 1.0, f"the stop returned after {took:.2f}s, before its TERM timeout: it did not wait for the group"
        # A service that exits on TERM with all of its group is not held for the timeout.
        await app1.start_service("prompt", f"sleep {marker}1 & wait")
        started = time.monotonic()
        assert await app1.stop_service("prompt", timeout=5.0) is True
        assert time.monotonic() - started < 3.0
        assert live_processes(lab, "app-1", f"sleep {marker}1") == []
    finally:
        lab.exec("app-1", "pkill", "-KILL", "-f", f"sleep {marker}", check=False)  # a failed stop leaves none behind


async def test_port_forward_reaches_a_service_only_listening_on_the_hosts_loopback(app1: SshTransport) -> None:
    await app1.write_file("www/index.html", b"through the tunnel\n")
    await app1.start_service("www", "exec python3 -m http.server 8099 --bind 127.0.0.1", cwd="www")
    try:
        host, port = await app1.local_endpoint(8099)
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                try:
                    response = await client.get(f"http://{host}:{port}/index.html")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        assert response.text == "through the tunnel\n"
        assert await app1.local_endpoint(8099) == (host, port)  # one listener per connection
    finally:
        await app1.stop_service("www")


async def test_one_connection_per_host_and_channels_bounded_below_max_sessions(lab: Lab, pool: SshPool) -> None:
    transports = [SshTransport(lab_host(lab, h.name), pool) for h in lab.apps]
    # 3 hosts x 20 concurrent commands: past MaxSessions 10 sshd would refuse channels without the bound.
    results = await asyncio.gather(*(t.run("sleep 0.2; echo ok") for t in transports for _ in range(20)))
    assert all(r.ok and r.stdout == "ok\n" for r in results)
    assert pool.connects == 1 + len(transports)  # the jump host, then one per app host


async def test_the_jump_connection_holds_a_pty_so_round_trips_are_not_stalled_by_delayed_acks(
        app1: SshTransport) -> None:
    # Without a pty session on the jump host its sshd leaves Nagle on, and each round trip waits ~40 ms
    # for a delayed ACK (the speed itself is bench_ssh.py's to measure, not a test's).
    await app1.run("true")
    assert len(app1.pool._jump_ptys) == 1
    held = app1.pool._jump_ptys[0]
    assert not held.is_closing() and held.exit_status is None
    # sshd granted the pty (PermitTTY): the session sees a terminal.
    probe = await app1.pool._jumps[""].run("tty", term_type="dumb", check=False)
    assert probe.exit_status == 0 and probe.stdout.startswith("/dev/pts/"), probe.stdout


async def test_connection_set_up_is_paced_by_max_connecting(lab: Lab) -> None:
    """Hundreds of hosts must not all handshake at once (sshd's MaxStartups); each still gets its connection."""
    pool = SshPool(ssh_options(lab, max_connecting=1))
    try:
        transports = [SshTransport(lab_host(lab, h.name), pool) for h in lab.apps]
        results = await asyncio.gather(*(t.run("hostname") for t in transports))
        assert [r.stdout.strip() for r in results] == [h.name for h in lab.apps]
        assert pool.connecting_peak == 1
    finally:
        await pool.close()
    pool = SshPool(ssh_options(lab))  # the default lets them overlap
    try:
        await asyncio.gather(*(SshTransport(lab_host(lab, h.name), pool).run("true") for h in lab.apps))
        assert pool.connecting_peak == len(lab.apps)
    finally:
        await pool.close()


@pytest.mark.parametrize("become", [False, True])
async def test_a_running_command_its_secret_and_its_env_are_in_no_process_arguments(lab: Lab, app1: SshTransport,
                                                                                     become: bool) -> None:
    # Every user on the host (and on this machine) can read every process's arguments: no secret among them.
    from tests.cmdlines import cmdlines_holding
    secret, env_secret = f"s3cret-{uuid.uuid4().hex[:12]}", f"env-{uuid.uuid4().hex[:12]}"
    files = Path(lab.hosts["app-1"].files)
    for left in ("token.out", "stdin.out"):
        (files / left).unlink(missing_ok=True)
    marker = f"ocl-{uuid.uuid4().hex[:8]}"  # in a child's arguments, to see it killed (not the secret)
    running = asyncio.ensure_future(app1.run(
        f"TOKEN='{secret}'; printf %s \"$TOKEN\" > token.out; cat > stdin.out; sh -c 'sleep 30; : {marker}'",
        env={"API_TOKEN": env_secret}, stdin=b"input after the script\n", become=become))
    await until(lambda: (files / "stdin.out").exists() and (files / "stdin.out").read_text() != "" or running.done(),
                "the command never started")
    assert not running.done(), running.result()
    assert (files / "token.out").read_text() == secret  # it is the running command we look at
    assert (files / "stdin.out").read_text() == "input after the script\n"  # its own stdin still reaches it
    on_host = lab.exec("app-1", "ps", "-eo", "args=").stdout
    assert secret not in on_host and env_secret not in on_host
    assert cmdlines_holding(secret) == [] and cmdlines_holding(env_secret) == []
    await until(lambda: live_processes(lab, "app-1", marker) != [], "the command's child never started")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await until(lambda: live_processes(lab, "app-1", marker) == [], "the cancelled command still runs")


async def test_a_command_reading_stdin_without_input_gets_none_of_the_script(app1: SshTransport) -> None:
    result = await app1.run("cat; read line || echo nothing read\necho after")
    assert result.ok and result.stdout == "nothing read\nafter\n"
    assert (await app1.run("exit 7", become=True)).rc == 7
