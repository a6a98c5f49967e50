"""The ansible-playbook fallback on the SSH lab, through the jump host with strict host keys: a play using a
module outside the native set gives on one app host what the same edit gives natively on its twin."""

from __future__ import annotations

import textwrap
from pathlib import Path

from opsconsole.events import EventBus, TaskFinished
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.pool import SshPool
from opsconsole.transport.ssh import SshTransport
from tests.lab import Lab
from tests.lab.inventory import lab_host, ssh_options

pytest_plugins = ["tests.lab.fixtures"]

SETUP = """
- name: a config, natively
  hosts: all
  tasks:
    - name: dir
      file: {path: fallback, state: directory, mode: "0755"}
    - name: config
      copy: {content: "name=app\\nport=1\\n", dest: fallback/app.ini, force: false, mode: "0640"}
"""
EDIT_NATIVE = """
- name: the edit, natively
  hosts: all
  tasks:
    - name: port
      lineinfile: {path: "{{ host_root }}/fallback/app.ini", regexp: "^port=", line: "port=9090"}
"""
EDIT_ANSIBLE = """
- name: the edit, with ansible-playbook
  hosts: all
  gather_facts: false
  tasks:
    - name: port
      ansible.builtin.replace: {path: "{{ host_root }}/fallback/app.ini", regexp: "^port=.*$", replace: "port=9090"}
"""


async def test_fallback_over_the_jump_host_gives_the_native_end_state(lab: Lab, tmp_path: Path) -> None:
    bus = EventBus()
    events: list[object] = []
    bus.subscribe(events.append)
    options = ssh_options(lab)
    pool = SshPool(options)
    native_host, ansible_host = (lab_host(lab, h.name) for h in lab.apps[:2])
    transports: dict[str, SshTransport] = {}

    def transport_for(host):  # type: ignore[no-untyped-def]
        return transports.setdefault(host.name, SshTransport(host, pool))

    runner = PlaybookRunner(bus, transport_for, ssh=options)

    def book(name: str, text: str):  # type: ignore[no-untyped-def]
        (tmp_path / name).write_text(textwrap.dedent(text))
        return load_playbook(tmp_path / name)

    try:
        for host in (native_host, ansible_host):
            await transport_for(host).run("rm -rf fallback .ansible")
        assert (await runner.run(book("setup.yml", SETUP), [native_host, ansible_host])).ok
        fallback = book("edit-ansible.yml", EDIT_ANSIBLE)
        assert fallback.plays[0].runner == "ansible"
        for _ in range(2):  # the second time: nothing changes on either side
            events.clear()
            native = await runner.run(book("edit-native.yml", EDIT_NATIVE), [native_host])
            through = await runner.run(fallback, [ansible_host])
            assert native.ok and through.ok, (native.failures, through.failures)
            done = {(e.host, e.status) for e in events if isinstance(e, TaskFinished) and e.task == "port"}
            assert len(done) == 2
        assert done == {(native_host.name, "ok"), (ansible_host.name, "ok")}
        files = {h: Path(lab.hosts[h].files) / "fallback" / "app.ini" for h in (native_host.name, ansible_host.name)}
        texts = {h: (p.read_text(), oct(p.stat().st_mode & 0o777)) for h, p in files.items()}
        assert texts[native_host.name] == texts[ansible_host.name] == ("name=app\nport=9090\n", "0o640")
    finally:
        await pool.close()
