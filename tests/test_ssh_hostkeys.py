"""Host keys: unknown and changed keys stop work on that host, touch nothing, and `hostkeys accept` fixes it."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import asyncssh
import pytest

from opsconsole.config.loader import load_config
from opsconsole.cli.hostkeys import accept_for_config
from opsconsole.hostkeys import HostKeyError, known_keys, trust
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options

pytest_plugins = ["tests.lab.fixtures"]


def known_hosts_without(lab: Lab, tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "known_hosts"
    drop = {lab.hosts[n].address for n in names}
    path.write_text("".join(line + "\n" for line in lab.known_hosts.read_text().splitlines()
                            if line.split()[0] not in drop))
    return path


def marker_exists(lab: Lab, host: str, name: str) -> bool:
    return (Path(lab.hosts[host].files) / name).exists()


async def test_unknown_host_key_stops_work_and_names_key_and_fix(lab: Lab, tmp_path: Path) -> None:
    known = known_hosts_without(lab, tmp_path, "app-2")
    pool = SshPool(ssh_options(lab, known_hosts=known))
    try:
        with pytest.raises(HostKeyError) as info:
            await SshTransport(lab_host(lab, "app-2"), pool).run("touch unknown-key-marker")
        message = str(info.value)
        assert "app-2: host key is not known" in message
        assert f"ssh-ed25519 {lab.host_fingerprint('app-2')}" in message
        assert str(known) in message and "`opsconsole hostkeys accept app-2`" in message
        assert not marker_exists(lab, "app-2", "unknown-key-marker")
        # Other hosts are not held up by one host's key.
        assert (await SshTransport(lab_host(lab, "app-1"), pool).run("true")).ok
    finally:
        await pool.close()


async def test_changed_host_key_stops_work_then_accept_lets_it_proceed(lab: Lab, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    shutil.copy(lab.known_hosts, known)
    old = lab.host_fingerprint("app-3")
    new = lab.rotate_host_key("app-3")
    assert new != old
    pool = SshPool(ssh_options(lab, known_hosts=known))
    try:
        with pytest.raises(HostKeyError) as info:
            await SshTransport(lab_host(lab, "app-3"), pool).run("touch changed-key-marker")
        message = str(info.value)
        assert "app-3: HOST KEY CHANGED" in message
        assert f"now presents ssh-ed25519 {new}" in message and old in message
        assert "`opsconsole hostkeys accept app-3`" in message
        assert not marker_exists(lab, "app-3", "changed-key-marker")

        config = lab_config(lab, tmp_path, known)
        questions: list[str] = []
        said: list[str] = []
        # Saying no changes nothing.
        code = await accept_for_config(config, "app-3", options=ssh_options(lab, known_hosts=known),
                                       confirm=lambda q: questions.append(q) or False, out=said.append)
        assert code == 1 and "not accepted" in said[-1]
        assert new in questions[0] and old in questions[0] and "replaced" in questions[0]
        assert [k.get_fingerprint() for k in known_keys(known, lab.hosts["app-3"].address, 22)] == [old]
        # Saying yes records the new key, and work proceeds.
        code = await accept_for_config(config, "app-3", options=ssh_options(lab, known_hosts=known),
                                       confirm=lambda q: True, out=said.append)
        assert code == 0 and f"trusted ssh-ed25519 {new}" in said[-1]
        # The pool that refused the key (a console's, open all along) reads the file again now it changed.
        assert (await SshTransport(lab_host(lab, "app-3"), pool).run("touch changed-key-marker")).ok
        assert marker_exists(lab, "app-3", "changed-key-marker")
    finally:
        await pool.close()


async def test_unknown_jump_host_key_is_refused_and_accepted_first(lab: Lab, tmp_path: Path) -> None:
    known = known_hosts_without(lab, tmp_path, "jump", "app-1")
    pool = SshPool(ssh_options(lab, known_hosts=known))
    try:
        with pytest.raises(HostKeyError) as info:
            await SshTransport(lab_host(lab, "app-1"), pool).run("true")
        assert f"{lab.jump.address}: host key is not known" in str(info.value)
        assert f"`opsconsole hostkeys accept {lab.jump.address}`" in str(info.value)
    finally:
        await pool.close()
    config = lab_config(lab, tmp_path, known)
    said: list[str] = []
    options = ssh_options(lab, known_hosts=known)
    # The host behind the jump cannot even be asked while the jump host is not trusted.
    assert await accept_for_config(config, "app-1", options=options, confirm=lambda q: True, out=said.append) == 1
    assert "hostkeys accept" in said[-1]
    assert await accept_for_config(config, lab.jump.address, options=options, confirm=lambda q: True, out=said.append) == 0
    assert await accept_for_config(config, "app-1", options=options, confirm=lambda q: True, out=said.append) == 0
    assert await accept_for_config(config, "app-1", options=options, confirm=lambda q: False, out=said.append) == 0
    assert "already trusted" in said[-1]
    assert await accept_for_config(config, "nosuch", options=options, confirm=lambda q: True, out=said.append) == 2


def test_trust_replaces_a_hashed_entry(tmp_path: Path) -> None:
    old = asyncssh.generate_private_key("ssh-ed25519")
    new = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    known = tmp_path / "known_hosts"
    known.write_text(f"10.9.9.9 {old.export_public_key().decode().strip()}\n"
                     f"[10.9.9.8]:2222 {other.export_public_key().decode().strip()}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    trust(known, "10.9.9.9", 22, new)
    assert [k.public_data for k in known_keys(known, "10.9.9.9", 22)] == [new.public_data]
    assert [k.public_data for k in known_keys(known, "10.9.9.8", 2222)] == [other.public_data]


def lab_config(lab: Lab, tmp_path: Path, known: Path):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "opsconsole.yaml"
    hosts = "\n".join(f"          - {{name: {h.name}, address: {h.address}, user: {lab.user}}}" for h in lab.apps)
    cfg.write_text(textwrap.dedent(f"""\
        project: hostkeys
        state_dir: {tmp_path / 'state'}
        jump: {{host: {lab.jump.address}, user: {lab.user}, key: {lab.client_key}}}
        groups:
          itrust:
            provider: static
            hosts:
        """) + hosts + "\n")
    return load_config(cfg)


def test_hostkeys_cli_accepts_only_the_checked_fingerprint(lab: Lab, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from opsconsole.cli.main import main

    known = known_hosts_without(lab, tmp_path, "app-1")
    config = lab_config(lab, tmp_path, known)
    # The config names no known_hosts file yet, so point HOME's at ours.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(known, home / ".ssh" / "known_hosts")
    monkeypatch.setenv("HOME", str(home))
    right = lab.host_fingerprint("app-1")
    assert main(["hostkeys", "accept", "app-1", "--fingerprint", "SHA256:wrong", "--config", str(config.file)]) == 1
    assert known_keys(home / ".ssh" / "known_hosts", lab.hosts["app-1"].address, 22) == []
    assert main(["--config", str(config.file), "hostkeys", "accept", "app-1", "--fingerprint", right]) == 0
    assert [k.get_fingerprint() for k in known_keys(home / ".ssh" / "known_hosts", lab.hosts["app-1"].address, 22)] == [right]


def test_ssh_options_from_config_take_the_ssh_section(tmp_path: Path) -> None:
    from opsconsole.transport.pool import SshOptions

    cfg = tmp_path / "opsconsole.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: sshopts
        state_dir: {tmp_path / 'state'}
        jump: {{host: 10.9.9.1, user: ops}}
        ssh:
          known_hosts: keys/known_hosts
          identity_files: [keys/id_ed25519, ~/other_key]
          agent: false
          ssh_config: true
          max_channels: 3
          connect_timeout: 4s
        groups:
          web: {{provider: static, hosts: [10.9.9.2]}}
        """))
    config = load_config(cfg)
    options = SshOptions.from_config(config)
    assert options.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert options.client_keys == (str(tmp_path / "keys" / "id_ed25519"), str(Path("~/other_key").expanduser()))
    assert options.agent is False and options.ssh_config is True
    assert options.max_channels == 3 and options.connect_timeout == 4.0
    assert options.jump == config.jump
    assert SshPool(options).known_hosts == tmp_path / "keys" / "known_hosts"


def test_hostkeys_accept_uses_the_configs_known_hosts_and_identity(lab: Lab, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`ssh: known_hosts` is read and written, not ~/.ssh/known_hosts; the jump login uses `identity_files`
    (the jump entry names no key) and no agent (`agent: false`)."""
    from opsconsole.cli.main import main

    known = known_hosts_without(lab, tmp_path, "app-1")
    home = tmp_path / "home"
    home.mkdir()  # nothing in ~/.ssh: no known_hosts, no keys
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = tmp_path / "opsconsole.yaml"
    hosts = ", ".join(f"{{name: {h.name}, address: {h.address}, user: {lab.user}}}" for h in lab.apps)
    cfg.write_text(textwrap.dedent(f"""\
        project: hostkeys
        state_dir: {tmp_path / 'state'}
        jump: {{host: {lab.jump.address}, user: {lab.user}}}
        ssh:
          known_hosts: {known}
          identity_files: [{lab.client_key}]
          agent: false
        groups:
          itrust:
            provider: static
            hosts: [{hosts}]
        """))
    right = lab.host_fingerprint("app-1")
    assert main(["hostkeys", "accept", "app-1", "--fingerprint", right, "--config", str(cfg)]) == 0
    assert [k.get_fingerprint() for k in known_keys(known, lab.hosts["app-1"].address, 22)] == [right]
    assert not (home / ".ssh").exists()


def test_hostkeys_accept_honours_agent_false(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `agent: false` an agent holding the only key that logs in is not asked; with `agent: true` it is."""
    from opsconsole.cli.main import main

    known = known_hosts_without(lab, tmp_path, "app-1")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.02)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", str(lab.client_key)], check=True, capture_output=True)
        hosts = ", ".join(f"{{name: {h.name}, address: {h.address}, user: {lab.user}}}" for h in lab.apps)
        right = lab.host_fingerprint("app-1")
        for use_agent, expected in (("false", 1), ("true", 0)):
            cfg = tmp_path / f"agent-{use_agent}.yaml"
            cfg.write_text(textwrap.dedent(f"""\
                project: hostkeys
                state_dir: {tmp_path / 'state'}
                jump: {{host: {lab.jump.address}, user: {lab.user}}}
                ssh: {{known_hosts: {known}, agent: {use_agent}}}
                groups:
                  itrust:
                    provider: static
                    hosts: [{hosts}]
                """))
            assert main(["hostkeys", "accept", "app-1", "--fingerprint", right, "--config", str(cfg)]) == expected, \
                use_agent
        assert [k.get_fingerprint() for k in known_keys(known, lab.hosts["app-1"].address, 22)] == [right]
    finally:
        agent.terminate()
        agent.wait()
