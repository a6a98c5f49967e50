"""The shipped playbooks under real ansible-playbook on the SSH lab leave what the native runner leaves.

app-1 gets the native runner, app-2 (its twin) gets ansible-playbook with the inventory opsconsole's
fallback writes (through the jump host, strict host keys). opsconsole.builtin.service and .health run
there as the Ansible modules in playbooks/collections/. Both hosts end with the same files, modes, link
and running service, and a second run of each playbook reports changed=0 on both.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.ansible_twin import ansible_run, end_state, native_run, new_runner, wipe
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options
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
            a, b = (end_state(Path(lab.hosts[h.name].files), h.name) for h in (native, twin))
            assert a == b, f"after {name}: only natively {set(a.items()) - set(b.items())}, " \
                           f"only with ansible-playbook {set(b.items()) - set(a.items())}"
        # The deployed app runs and answers on both, the same release.
        assert end_state(Path(lab.hosts[twin.name].files), twin.name)["run/itrust.pid"][2] == "live"
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
