"""SSH as operators already have it: ~/.ssh/config (ProxyJump, User, Port, IdentityFile) and a real ssh-agent.

Every test points HOME at a temp dir holding its own ~/.ssh/config, so nothing of this machine's SSH setup is
read or written. The lab's sshds listen on 22 and 2222 (tests/lab/sshd.py), so a `Port` line can be seen
being honoured from the host's side ($SSH_CONNECTION names the server port).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from opsconsole.hostkeys import HostKeyError
from opsconsole.hosts import Host
from opsconsole.transport.base import TransportError
from opsconsole.transport.pool import SshOptions, SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab

pytest_plugins = ["tests.lab.fixtures"]


def home_with_ssh_config(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, identity: bool = True,
                         app_port: int = 2222) -> Path:
    """A HOME whose ~/.ssh/config reaches the app hosts by alias through ProxyJump, as an operator writes it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = f"  IdentityFile {lab.client_key}\n" if identity else ""
    entries = [f"Host bastion\n  HostName {lab.jump.address}\n  User {lab.user}\n{key}"]
    for h in lab.apps:
        entries.append(f"Host {h.name}\n  HostName {h.address}\n  User {lab.user}\n  Port {app_port}\n{key}"
                       "  ProxyJump bastion\n")
    (home / ".ssh" / "config").write_text("\n".join(entries))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def alias(lab: Lab, name: str) -> Host:
    """A host known only by its ~/.ssh/config alias: no address, user or port of its own in opsconsole."""
    return Host(name=name, group="itrust", address=name, transport="ssh", root=lab.hosts[name].root, role="app")


def connections_to_bastion(lab: Lab) -> int:
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", f"{lab.jump.address}:22"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


async def test_ssh_config_user_port_identity_and_one_shared_bastion_connection(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_with_ssh_config(lab, tmp_path, monkeypatch)
    before = connections_to_bastion(lab)
    pool = SshPool(SshOptions(known_hosts=str(lab.known_hosts), agent=False, ssh_config=True))
    try:
        transports = [SshTransport(alias(lab, h.name), pool) for h in lab.apps]
        results = await asyncio.gather(*(t.run('echo "$(id -un) $SSH_CONNECTION"') for t in transports))
        for h, r in zip(lab.apps, results):
            assert r.ok, r.describe()
            user, _, _, server_ip, server_port = r.stdout.split()
            assert user == lab.user  # User from ~/.ssh/config (opsconsole named none)
            assert (server_ip, server_port) == (h.address, "2222")  # HostName and Port from ~/.ssh/config
        # One connection to the bastion carries all three hosts (asyncssh alone opens one per host).
        assert connections_to_bastion(lab) - before == 1
        assert pool.connects == 1 + len(transports)
    finally:
        await pool.close()
    assert connections_to_bastion(lab) == before


async def test_a_real_ssh_agent_logs_in_with_no_key_file_anywhere(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_with_ssh_config(lab, tmp_path, monkeypatch, identity=False)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        # The agent holds a copy of the key; the file it came from is gone before we connect.
        key = tmp_path / "agent_key"
        shutil.copy(lab.client_key, key)
        key.chmod(0o600)
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", str(key)], check=True, capture_output=True, env=env)
        key.unlink()
        for options in (SshOptions(known_hosts=str(lab.known_hosts), agent=False, ssh_config=True),
                        SshOptions(known_hosts=str(lab.known_hosts), agent=True, ssh_config=True)):
            monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
            pool = SshPool(options)
            try:
                if not options.agent:
                    with pytest.raises(TransportError, match="login refused"):
                        await SshTransport(alias(lab, "app-1"), pool).run("true")
                else:
                    r = await SshTransport(alias(lab, "app-1"), pool).run("id -un")
                    assert r.ok and r.stdout.strip() == lab.user
            finally:
                await pool.close()
    finally:
        agent.terminate()
        agent.wait()


async def test_a_changed_host_key_behind_a_proxyjump_still_stops_work(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_with_ssh_config(lab, tmp_path, monkeypatch)
    known = tmp_path / "known_hosts"
    shutil.copy(lab.known_hosts, known)  # what the operator trusted before the key changed
    name = lab.apps[-1].name
    lab.rotate_host_key(name)
    pool = SshPool(SshOptions(known_hosts=str(known), agent=False, ssh_config=True))
    try:
        with pytest.raises(HostKeyError) as info:
            await SshTransport(alias(lab, name), pool).run(f"touch {lab.hosts[name].root}/should-not-exist")
        assert name in str(info.value)
        assert not (Path(lab.hosts[name].files) / "should-not-exist").exists()
        # The other hosts, whose keys did not change, still work through the same bastion.
        r = await SshTransport(alias(lab, lab.apps[0].name), pool).run("hostname")
        assert r.ok and r.stdout.strip() == lab.apps[0].name
    finally:
        await pool.close()


async def test_an_unreachable_proxyjump_is_one_clear_error_naming_it(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = home_with_ssh_config(lab, tmp_path, monkeypatch)
    cfg = home / ".ssh" / "config"
    cfg.write_text(cfg.read_text().replace(f"HostName {lab.jump.address}\n", f"HostName {lab.jump.address}\n  Port 2399\n", 1))
    pool = SshPool(SshOptions(known_hosts=str(lab.known_hosts), agent=False, ssh_config=True, connect_timeout=5))
    try:
        with pytest.raises(TransportError) as info:
            await SshTransport(alias(lab, "app-1"), pool).run("true")
        assert "bastion" in str(info.value) and "2399" in str(info.value), str(info.value)
    finally:
        await pool.close()
