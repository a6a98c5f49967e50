"""The shipped playbooks under real ansible-playbook on the SSH lab leave what the native runner leaves.

app-1 gets the native runner, app-2 (its twin) gets ansible-playbook with the inventory opsconsole's
fallback writes (through the jump host, strict host keys). opsconsole.builtin.service and .health run
there as the Ansible modules in playbooks/collections/. Both hosts end with the same files, modes, link
and running service, and a second run of each playbook reports changed=0 on both.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import ansible_run, end_state, native_run, new_runner, wipe
from tests.lab import Lab
from tests.lab.fixtures import skip_or_fail
from tests.lab.inventory import lab_host, ssh_options
from test_ssh_database import sql_as
from test_ssh_deploy import build_artifact

pytest_plugins = ["tests.lab.fixtures"]

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
PORT = 8080
COMMAND = f"exec python3 current/app.py --port {PORT} --bind 0.0.0.0"


@pytest.mark.timeout(900)  # eight ansible-playbook runs over the jump host, on a shared machine
async def test_shipped_app_playbooks_give_the_same_end_state_under_ansible_playbook(lab: Lab, tmp_path: Path) -> None:
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (lab_host(lab, name, port=PORT) for name in ("app-1", "app-2"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)
    artifact = build_artifact(tmp_path, "v1")
    deploy_vars = {"app": "itrust", "version": "v1", "commit": "c0ffee", "artifact": str(artifact),
                   "service_name": "itrust", "service_command": COMMAND}
    steps = [("itrust-install.yml", {}), ("app-server.yml", {"service_command": COMMAND}),
             ("itrust-deploy.yml", deploy_vars), ("app-server.yml", {"service_command": COMMAND})]
    try:
        await wipe(transports.values())
        for i, (name, extra) in enumerate(steps):
            for attempt in ("first", "second"):
                mine = await native_run(runner, events, PLAYBOOKS / name, [native], extra)
                theirs = ansible_run(PLAYBOOKS / name, [twin], transports, options, tmp_path / f"a{i}{attempt}",
                                     extra_vars=extra)
                assert mine.ok, f"{name} natively, {attempt} run: {mine.text}"
                assert theirs.ok, f"{name} with ansible-playbook, {attempt} run: {theirs.text}"
                if attempt == "second" or i == len(steps) - 1:  # the last step repeats what is already there
                    assert mine.changed == {native.name: 0}, f"{name} natively, {attempt} run"
                    assert theirs.changed == {twin.name: 0}, f"{name} with ansible-playbook, {attempt} run"
            a, b = (end_state(Path(lab.hosts[h.name].files), [h.name]) for h in (native, twin))
            assert a == b, f"after {name}: only natively {set(a.items()) - set(b.items())}, " \
                           f"only with ansible-playbook {set(b.items()) - set(a.items())}"
        # The deployed app runs and answers on both, the same release.
        assert end_state(Path(lab.hosts[twin.name].files), [twin.name])["run/itrust.pid"][2] == "live"
        for t in transports.values():
            host, local = await t.local_endpoint(PORT, t.host.address)
            async with httpx.AsyncClient(timeout=5) as client:
                assert (await client.get(f"http://{host}:{local}/health")).json()["version"] == "v1"
        # The services stop the same way too: stopped, then nothing left to stop.
        stop = tmp_path / "stop.yml"
        stop.write_text("- hosts: all\n  tasks:\n    - opsconsole.builtin.service: {name: itrust, state: stopped}\n")
        for attempt in (1, 0):
            mine = await native_run(runner, events, stop, [native])
            theirs = ansible_run(stop, [twin], transports, options, tmp_path / f"stop{attempt}")
            assert mine.ok and theirs.ok, mine.text + theirs.text
            assert mine.changed == {native.name: attempt} and theirs.changed == {twin.name: attempt}
        assert [await t.service_pid("itrust") for t in transports.values()] == [None, None]
    finally:
        for t in transports.values():
            await t.stop_service("itrust")
        await pool.close()


@pytest.mark.timeout(900)
async def test_shipped_database_playbook_gives_the_same_end_state_under_ansible_playbook(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The db host natively; app-3, put in the database group for this test, with ansible-playbook.
    if shutil.which("mariadb") is None or not Path("/usr/sbin/mariadbd").exists():
        skip_or_fail("the database test needs MariaDB (apt-get install mariadb-server mariadb-client)")
    password = f"pw'{uuid.uuid4().hex}\"x"
    monkeypatch.setenv("OPSCONSOLE_DB_PASSWORD", password)  # read by lookup('env') on this machine, both ways
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (replace(lab_host(lab, name), group="database") for name in ("db", "app-3"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)
    clients = {"db_client_hosts": [h.address for h in lab.apps[:2]]}
    playbook = PLAYBOOKS / "database.yml"
    try:
        await wipe(transports.values())
        for attempt in ("first", "second"):
            mine = await native_run(runner, events, playbook, [native], clients)
            theirs = ansible_run(playbook, [twin], transports, options, tmp_path / attempt, extra_vars=clients)
            assert mine.ok, f"natively, {attempt} run: {mine.text}"
            assert theirs.ok, f"with ansible-playbook, {attempt} run: {theirs.text}"
            if attempt == "second":
                assert mine.changed == {native.name: 0} and theirs.changed == {twin.name: 0}
        a, b = (end_state(Path(lab.hosts[h.name].files), [h.name, h.address], contents_of=["mariadb/data"])
                for h in (native, twin))
        assert a == b, f"only natively {set(a.items()) - set(b.items())}, " \
                       f"only with ansible-playbook {set(b.items()) - set(a.items())}"
        assert a["run/mariadb.pid"][2] == "live" and a["mariadb/secrets/app.pw"][:2] == ("file", "0600")
        # Both servers let the app hosts in with the password, and no one else.
        for server in (native, twin):
            for app in lab.apps[:2]:
                got = sql_as(lab, app.name, password, "SELECT CURRENT_USER()", server=server.address)
                assert got.returncode == 0 and got.stdout.split() == [f"itrust@{app.address}"], got.stderr
            assert sql_as(lab, lab.apps[2].name if server is native else "jump", password, "SELECT 1",
                          server=server.address).returncode != 0
    finally:
        for t in transports.values():
            await t.stop_service("mariadb", timeout=20)
        await pool.close()


@pytest.mark.timeout(600)
async def test_shipped_proxy_host_playbook_gives_the_same_end_state_under_ansible_playbook(
        lab: Lab, tmp_path: Path) -> None:
    # The proxy host natively; app-2, put in the proxy group for this test, with ansible-playbook.
    options = ssh_options(lab)
    pool = SshPool(options)
    native, twin = (replace(lab_host(lab, name), group="proxy") for name in ("proxy", "app-2"))
    transports = {h.name: SshTransport(h, pool) for h in (native, twin)}
    runner, events = new_runner(lambda h: transports[h.name], options)
    extra = {"proxy_backends": [f"{h.address}:8080" for h in lab.apps], "proxy_listen": "0.0.0.0:8000"}
    playbook = PLAYBOOKS / "proxy-host.yml"
    try:
        await wipe(transports.values())
        for attempt in ("first", "second"):
            mine = await native_run(runner, events, playbook, [native], extra)
            theirs = ansible_run(playbook, [twin], transports, options, tmp_path / attempt, extra_vars=extra)
            assert mine.ok, f"natively, {attempt} run: {mine.text}"
            assert theirs.ok, f"with ansible-playbook, {attempt} run: {theirs.text}"
            assert mine.changed == {native.name: 2 if attempt == "first" else 0}  # directories, backends
            assert theirs.changed == {twin.name: 2 if attempt == "first" else 0}
        a, b = (end_state(Path(lab.hosts[h.name].files), [h.name]) for h in (native, twin))
        assert a == b, f"only natively {set(a.items()) - set(b.items())}, " \
                       f"only with ansible-playbook {set(b.items()) - set(a.items())}"
        assert a["proxy/backends.txt"][1] == "0644" and f"{lab.apps[0].address}:8080" in a["proxy/backends.txt"][2]
    finally:
        await pool.close()
