"""Safe files: no shell injection through a module's arguments, a private state dir, SFTP writes that never
follow a planted link nor exist with a wider mode, builds without the console's environment, and an admin
client that sends its token to loopback only.

Real parts: the playbook runner on the local transport and on the SSH lab's hosts, the console as a
subprocess on a local fleet, a real HTTP listener on this machine's non-loopback address.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, kill_services, write_config
from opsconsole.events import EventBus, TaskFinished
from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.traffic.base import TrafficError
from opsconsole.traffic.embedded import EmbeddedDriver
from opsconsole.transport.base import TransportError
from opsconsole.transport.local import LocalTransport
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options

pytest_plugins = ["tests.lab.fixtures"]


def injection_path(marker: str) -> str:
    return f"x'; fi; touch {marker}; if false; then echo '"


def injection_playbook(tmp: Path, marker: str) -> Path:
    """The issue's path: it closes the module's quoted echo and runs `touch` if pasted raw into the script."""
    path = injection_path(marker)
    book = tmp / "inject.yml"
    book.write_text(f"- hosts: all\n  tasks:\n    - file:\n        path: {json.dumps(path)}\n        state: directory\n"
                    f"    - file:\n        path: {json.dumps(path + '-link')}\n        src: /nowhere\n        state: link\n")
    return book


async def run_playbook(book: Path, host: Host, transport_for) -> list[TaskFinished]:  # type: ignore[no-untyped-def]
    bus = EventBus()
    finished: list[TaskFinished] = []
    bus.subscribe(lambda e: finished.append(e) if isinstance(e, TaskFinished) else None)
    await PlaybookRunner(bus, transport_for).run(load_playbook(book), [host])
    return finished


async def test_file_module_path_injection_runs_nothing_locally(tmp_path: Path) -> None:
    root = tmp_path / "host"
    marker = tmp_path / "PWNED"
    host = Host(name="h1", group="g", address="127.0.0.1", root=str(root))
    finished = await run_playbook(injection_playbook(tmp_path, str(marker)), host, LocalTransport)
    assert [f.status for f in finished] == ["changed", "changed"], finished
    assert not marker.exists()
    # What was asked for, literally: a directory and a link whose names hold the quotes and semicolons.
    assert (root / injection_path(str(marker))).is_dir()
    assert (root / (injection_path(str(marker)) + "-link")).is_symlink()


async def test_file_module_path_injection_runs_nothing_over_ssh(lab: Lab) -> None:
    app = lab.apps[0]
    marker = f"{app.root}/PWNED"
    (Path(app.files) / "PWNED").unlink(missing_ok=True)  # the lab's files outlive a test
    pool = SshPool(ssh_options(lab))
    host = lab_host(lab, app.name)
    try:
        book_dir = Path(app.files).parent / "books"
        book_dir.mkdir(exist_ok=True)
        finished = await run_playbook(injection_playbook(book_dir, marker), host, lambda h: SshTransport(h, pool))
    finally:
        await pool.close()
    assert [f.status for f in finished] == ["changed", "changed"], finished
    assert not (Path(app.files) / "PWNED").exists()
    assert (Path(app.files) / injection_path(marker).lstrip("/")).is_dir()


def test_state_dir_private_after_a_demo_like_run(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, count=2)
    state = tmp_path / "state"
    try:
        proc = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-", "--keep-going"],
                              input="deploy itrust\nwait healthy itrust 30s\nrun itrust-1 -- exit 3\nstatus\n",
                              capture_output=True, text=True, timeout=180, cwd=ROOT)
    finally:
        kill_services(state)
    assert "2/2 hosts of itrust healthy" in proc.stdout and "✔ status" in proc.stdout, proc.stdout + proc.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    kinds = {p.relative_to(state).parts[0] for p in state.rglob("*")}
    assert {"journal.jsonl", "builds", "artifacts", "inventory", "hosts"} <= kinds  # a real run's worth
    assert list(state.glob("builds/logs/*.log")) and list(state.glob("inventory/*"))
    open_ = [f"{p.relative_to(state)} {stat.S_IMODE(p.lstat().st_mode):04o}" for p in state.rglob("*")
             if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert open_ == [], open_


async def test_sftp_write_never_follows_a_planted_link_and_is_never_wider_than_its_mode(lab: Lab) -> None:
    app = lab.apps[0]
    files = Path(app.files)
    victim = files / "victim.txt"
    for left in ("conf.txt.opsconsole-tmp", "conf.txt", "big.bin"):  # the lab's files outlive a test
        (files / left).unlink(missing_ok=True)
    victim.write_text("untouched\n")
    os.chown(victim, files.stat().st_uid, files.stat().st_gid)
    # The old writer's temp name was predictable: a link there made it write through into the victim.
    (files / "conf.txt.opsconsole-tmp").symlink_to(victim)
    pool = SshPool(ssh_options(lab))
    t = SshTransport(lab_host(lab, app.name), pool)
    modes: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        # Every temp file this write creates, seen while it is being written: it must already be 0600.
        while not stop.is_set():
            for entry in os.scandir(files):
                if entry.name.startswith(".big.bin") or entry.name == "big.bin.opsconsole-tmp":
                    try:
                        modes.append(stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
                    except FileNotFoundError:
                        pass

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        assert await t.write_file("conf.txt", b"new content\n", 0o640)
        watcher.start()
        deadline = time.monotonic() + 60
        while not modes and time.monotonic() < deadline:  # write until the watcher has caught a temp file
            await t.write_file("big.bin", os.urandom(24 << 20), 0o600)
    finally:
        stop.set()
        await pool.close()
    assert victim.read_text() == "untouched\n"
    assert (files / "conf.txt").read_bytes() == b"new content\n" and not (files / "conf.txt").is_symlink()
    assert stat.S_IMODE((files / "conf.txt").stat().st_mode) == 0o640
    assert modes, "the watcher never saw a temp file"
    assert set(modes) == {0o600}, [f"{m:04o}" for m in modes]
    assert stat.S_IMODE((files / "big.bin").stat().st_mode) == 0o600
    assert not [p.name for p in files.iterdir() if p.name.endswith(".tmp")]


def test_builds_see_an_allow_listed_environment(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    text = cfg.read_text().replace(
        "commands: [sh build.sh]", "commands: [\"mkdir -p dist && env > dist/env.txt && echo pw $BUILD_DB_PW\"]\n"
        "      env: [BUILD_CACHE_URL, BUILD_DB_PW]").replace("artifact: dist/app.tar.gz", "artifact: dist/env.txt")
    cfg.write_text(text + "secrets:\n  db: {env: BUILD_DB_PW}\n")
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "aws-Ty7", "SSH_AUTH_SOCK": "/tmp/agent.sock",
           "OPSCONSOLE_PROXY_TOKEN": "tok-Gh3", "OPSCONSOLE_DB_PASSWORD": "db-Pp1",
           "BUILD_CACHE_URL": "http://cache.example", "LC_ALL": "C.UTF-8", "BUILD_DB_PW": "build-pw-Wq4"}
    proc = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", "-"],
                          input="build itrust\n", capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [artifact] = (tmp_path / "state" / "artifacts" / "itrust").glob("*/env.txt")
    seen = dict(line.split("=", 1) for line in artifact.read_text().splitlines() if "=" in line)
    assert seen["BUILD_CACHE_URL"] == "http://cache.example" and seen["LC_ALL"] == "C.UTF-8"
    assert seen["PATH"] == os.environ["PATH"] and seen["OPSCONSOLE_APP"] == "itrust"
    for name in ("AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "OPSCONSOLE_PROXY_TOKEN", "OPSCONSOLE_DB_PASSWORD"):
        assert name not in seen, name
    # A secret the build was given and printed is masked in its log and on screen (the artifact is its own).
    assert seen["BUILD_DB_PW"] == "build-pw-Wq4"
    [log] = (tmp_path / "state" / "builds" / "logs").glob("*.log")
    assert "pw ***" in log.read_text() and "build-pw-Wq4" not in log.read_text()
    assert "pw ***" in proc.stdout and "build-pw-Wq4" not in proc.stdout


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_admin_client_refuses_a_non_loopback_url_and_sends_no_token(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to listen on")
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"apps": {}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    runtime = tmp_path / "proxy.json"
    runtime.write_text(json.dumps({"pid": 1, "admin": f"http://{address}:{server.server_port}"}))
    try:
        with pytest.raises(TrafficError, match="only sent to a loopback address"):
            driver = EmbeddedDriver.from_runtime_file(runtime, "the-admin-token")
            try:
                await driver.state()
            finally:
                await driver.close()
        with pytest.raises(TrafficError, match="refusing the proxy admin URL 'http://example.com:80'"):
            EmbeddedDriver("http://example.com:80", "the-admin-token")
    finally:
        server.shutdown()
        server.server_close()
    assert seen == []
    # Loopback forms are accepted (the SSH-forwarded port of a remote proxy is one of them).
    for url in ("http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "unix:/tmp/admin.sock"):
        await EmbeddedDriver(url, "t").close()
    await asyncio.sleep(0)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)")
def test_the_console_environment_is_not_readable_by_its_own_users_builds() -> None:
    """Another process of the same user (a build's code) cannot read the console's environment or memory."""
    tmp_path = Path(tempfile.mkdtemp(prefix="opsconsole-dumpable-"))  # pytest's tmp dirs are root's alone
    tmp_path.chmod(0o777)
    cfg = tmp_path / "opsconsole.yaml"
    cfg.write_text(f"project: p\nstate_dir: {tmp_path / 'state'}\ngroups:\n  g: {{provider: local, count: 1}}\n"
                   "heartbeat: {interval: 1s}\n")
    cfg.chmod(0o644)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CONSOLE_SECRET": "environ-Secret-5150"}
    console = subprocess.Popen([*nobody, sys.executable, "-m", "opsconsole.cli.main", "--config", str(cfg),
                                "heartbeat"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "state").exists():  # the console is up and past its start
            assert console.poll() is None and time.monotonic() < deadline, console.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        peek = subprocess.run([*nobody, "cat", f"/proc/{console.pid}/environ"], capture_output=True)
        assert b"environ-Secret-5150" not in peek.stdout
        assert peek.returncode != 0 and b"Permission denied" in peek.stderr, peek
    finally:
        console.terminate()
        console.wait(timeout=10)
        shutil.rmtree(tmp_path, ignore_errors=True)


async def test_sftp_never_chmods_reads_nor_writes_through_a_planted_link_and_a_new_file_gets_the_umask(
        lab: Lab) -> None:
    # Everything here lives under one fresh directory of the lab host's root.
    app = lab.apps[0]
    files = Path(app.files)
    base = files / f"t14-{os.urandom(4).hex()}"
    owner = files.stat().st_uid, files.stat().st_gid

    def mine(path: Path) -> Path:  # what the SSH user could have planted itself
        os.chown(path, *owner, follow_symlinks=False)
        return path

    for d in (base, base / "conf", base / "elsewhere", base / "big"):
        d.mkdir()
        mine(d)
    victim = base / "elsewhere" / "victim.conf"
    victim.write_bytes(b"a=1\n")
    mine(victim)
    victim.chmod(0o600)
    # Relative links: they point alike here and inside the host's namespace (where base is under /srv/opsconsole).
    (base / "conf" / "app.conf").symlink_to("../elsewhere/victim.conf")
    mine(base / "conf" / "app.conf")
    big = os.urandom(2 << 20)
    big_victim = base / "elsewhere" / "big.bin"
    big_victim.write_bytes(big)
    mine(big_victim)
    big_victim.chmod(0o600)
    (base / "big" / "big.bin").symlink_to("../elsewhere/big.bin")
    mine(base / "big" / "big.bin")
    source = base.parent / f"{base.name}-source.bin"
    source.write_bytes(big)
    (base / "linked").symlink_to("elsewhere")  # a directory link: a write below it would land elsewhere
    mine(base / "linked")
    dotted = files / f"..{base.name}"  # inside the root though its name starts with "..": checked the same
    dotted.symlink_to(f"{base.name}/elsewhere")
    mine(dotted)
    rel = base.name
    pool = SshPool(ssh_options(lab))
    t = SshTransport(lab_host(lab, app.name), pool)
    try:
        # Unchanged content through a link: the link is replaced, the file it pointed to keeps its mode.
        assert await t.write_file(f"{rel}/conf/app.conf", b"a=1\n", 0o644) is True
        assert await t.put_file(str(source), f"{rel}/big/big.bin", 0o644) is True
        with pytest.raises(TransportError, match=f"/srv/opsconsole/{base.name}/linked is a symbolic link"):
            await t.write_file(f"{rel}/linked/sub/x.conf", b"x\n")
        with pytest.raises(TransportError, match="is a symbolic link"):
            await t.write_file(f"{rel}/linked/y.conf", b"y\n")
        with pytest.raises(TransportError, match=f"/srv/opsconsole/..{base.name} is a symbolic link"):
            await t.write_file(f"..{base.name}/z.conf", b"z\n")
        assert await t.write_file(f"{rel}/conf/new.conf", b"n\n") is True  # a new file with no mode
        umask = int((await t.run("umask")).stdout.strip(), 8)  # what `touch` gets there; Ansible gives the same
    finally:
        await pool.close()
        source.unlink()
        dotted.unlink()
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600 and victim.read_bytes() == b"a=1\n"
    assert stat.S_IMODE(big_victim.stat().st_mode) == 0o600
    for placed in (base / "conf" / "app.conf", base / "big" / "big.bin"):
        assert not placed.is_symlink() and stat.S_IMODE(placed.stat().st_mode) == 0o644
    assert sorted(p.name for p in (base / "elsewhere").iterdir()) == ["big.bin", "victim.conf"]
    assert stat.S_IMODE((base / "conf" / "new.conf").stat().st_mode) == 0o666 & ~umask
    shutil.rmtree(base)


def test_a_pre_existing_open_state_dir_is_closed_to_others_when_the_console_opens_it(tmp_path: Path) -> None:
    # A state dir an older version left 0755, with 0644 logs and inventory files in it.
    from opsconsole.config.loader import load_config
    from opsconsole.engine.engine import Engine
    from opsconsole.fsio import append_jsonl

    cfg = write_config(tmp_path)
    state = tmp_path / "state"
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change\n")
    outside.chmod(0o644)
    (state / "builds" / "logs").mkdir(parents=True)
    (state / "inventory").mkdir()
    (state / "builds" / "logs" / "old.log").write_text("an old build log\n")
    (state / "inventory" / "itrust").write_text("hosts\n")
    (state / "journal.jsonl").write_text("")
    (state / "builds" / "link-out").symlink_to(outside)
    for p in [state, *state.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    Engine(load_config(cfg))
    open_ = [f"{p.relative_to(state)} {stat.S_IMODE(p.lstat().st_mode):04o}" for p in [state, *state.rglob("*")]
             if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert open_ == [], open_
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # a link in it is not followed
    # A journal left 0644 inside an already private dir is tightened when it is next appended to.
    (state / "journal.jsonl").chmod(0o644)
    append_jsonl(state / "journal.jsonl", {"kind": "test"})
    assert stat.S_IMODE((state / "journal.jsonl").stat().st_mode) == 0o600
