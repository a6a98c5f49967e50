"""Plays outside the native set run with real ansible-playbook: the loader says which runner and why,
each task's start and result reach the event bus, cancelling kills it, and without ansible-core such a
play is refused before anything runs, naming the module and the extra to install."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from opsconsole.events import Message, TaskStarted
from opsconsole.playbook import loader
from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

MIXED = """
    - name: native play
      hosts: web
      tasks:
        - name: a config
          copy: {content: "name=old\\nport=1\\n", dest: app.ini, force: false}
    - name: fallback play
      hosts: web
      gather_facts: false
      tasks:
        - name: edit with a module we do not have
          ansible.builtin.replace:
            path: "{{ host_root }}/app.ini"
            regexp: '^port=.*$'
            replace: 'port={{ 8000 + (inventory_hostname[-1] | int) }}'
        - name: a keyword we do not have
          command: cat {{ host_root }}/app.ini
          register: out
          until: out.rc == 0
          retries: 2
          delay: 0
          changed_when: false
"""


async def test_a_play_outside_the_native_set_runs_with_ansible_playbook(rig: Rig) -> None:
    hosts = rig.hosts(2)
    path = rig.playbook(MIXED)
    book = load_playbook(path)
    assert [(p.runner, p.why) for p in book.plays] == [
        ("native", ""), ("ansible", "play 2 uses ansible.builtin.replace: runs with ansible-playbook")]
    result = await rig.runner.run(book, hosts)
    assert result.ok, result.failures
    for i in (1, 2):
        assert (rig.root(f"web-{i}") / "app.ini").read_text() == f"name=old\nport={8000 + i}\n"
        # ansible-playbook's tasks reached the bus as the native ones do, per host
        assert rig.statuses(f"web-{i}") == {"a config": "changed", "edit with a module we do not have": "changed",
                                            "a keyword we do not have": "ok"}
    assert any(isinstance(e, Message) and "play 2 uses ansible.builtin.replace" in e.text for e in rig.events)
    assert not list(path.parent.glob(".opsconsole-play-*"))  # the play file written for it is gone
    # idempotent the second time, through ansible-playbook too
    rig.events.clear()
    assert (await rig.runner.run(book, hosts)).ok
    assert rig.statuses("web-1") == {"a config": "ok", "edit with a module we do not have": "ok",
                                     "a keyword we do not have": "ok"}


async def test_a_failure_under_ansible_playbook_names_host_and_task(rig: Rig) -> None:
    hosts = rig.hosts(1)
    result = await rig.run("""
        - hosts: web
          gather_facts: false
          tasks:
            - name: replace in a missing file
              ansible.builtin.replace: {path: "{{ host_root }}/none.ini", regexp: x, replace: y}
        """, hosts)
    assert not result.ok
    assert result.failures["web-1"].startswith("task 'replace in a missing file' failed on web-1 (ansible-playbook): ")
    assert "none.ini does not exist" in result.failures["web-1"]


async def test_cancel_kills_ansible_playbook(rig: Rig) -> None:
    hosts = rig.hosts(1)
    book = load_playbook(rig.playbook("""
        - hosts: web
          gather_facts: false
          tasks:
            - name: long
              ansible.builtin.command: sleep 60
              async: 120
              poll: 1
        """))
    task = asyncio.ensure_future(rig.runner.run(book, hosts))
    deadline = time.monotonic() + 60
    while not any(isinstance(e, TaskStarted) and e.task == "long" for e in rig.events):
        assert time.monotonic() < deadline, "the task never started"
        await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10


def test_without_ansible_core_such_a_play_is_refused_naming_module_and_extra(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "ansible_playbook", lambda: None)  # as if the extra were not installed
    path = rig.playbook(MIXED)
    with pytest.raises(SourceError) as info:
        load_playbook(path)
    assert str(info.value) == (f"{path}:12: plays[1].tasks[0].ansible.builtin.replace: ansible.builtin.replace is "
                               "not run natively and ansible-playbook is not installed: pip install "
                               "'opsconsole[ansible]' to run this play with it")
    assert not rig.root("web-1").exists()
