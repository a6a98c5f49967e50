"""Plays outside the native set run with real ansible-playbook: the loader says which runner and why,
each task's start and result reach the event bus, cancelling kills it, and without ansible-core such a
play is refused before anything runs, naming the module and the extra to install."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import Message, TaskStarted
from opsconsole.playbook import loader
from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)
from tests.conftest import write_config


@pytest.fixture(autouse=True)
def module_temp_dirs_under_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several tests here kill ansible-playbook mid-task, on purpose. A module killed so leaves the directory
    AnsiballZ unpacked it into (`ansible_<module>_payload_*`, ~130 KB) in its TMPDIR: this machine's /tmp,
    five per run, until this. ansible-playbook and its modules inherit the console's environment."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))

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


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent, process group, command line) of every process on this machine."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid, pgid = (int(f) for f in (d / "stat").read_text().rsplit(")", 1)[1].split()[1:3])
                found[int(d.name)] = (ppid, pgid, (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _sleep_play(hosts: str) -> tuple[str, str]:
    """(marker, a play on `hosts` that runs `sleep MARKER` under ansible-playbook — `until` is not native).
    The marker is a sleep this run alone runs: the test finds its processes by it."""
    marker = f"{60 + (time.time_ns() % 1000) / 1000:.3f}"
    return marker, textwrap.dedent(f"""\
        - hosts: {hosts}
          gather_facts: false
          tasks:
            - name: long
              ansible.builtin.command: sleep {marker}
              register: slept
              until: slept.rc == 0
              retries: 1
              delay: 0
        """)


async def _cancel_mid_play(rig: Rig, twice: bool) -> None:
    """Start a play that runs `sleep` under ansible-playbook, cancel the awaiting task mid-task (and again
    during the cleanup if `twice`), then nothing of the run may be left: no process in ansible-playbook's
    group, none of its workers (ansible-core's workers setsid() into groups of their own), no sleep."""
    hosts = rig.hosts(1)
    marker, play = _sleep_play("web")
    book = load_playbook(rig.playbook(play))
    task = asyncio.ensure_future(rig.runner.run(book, hosts))
    deadline = time.monotonic() + 60
    play_files = str(book.directory.absolute() / ".opsconsole-play-")
    while True:
        procs = _processes()
        # ansible-playbook and its forked workers share the command line; the one we started is our child
        leaders = [pid for pid, (ppid, pgid, cmd) in procs.items() if "ansible-playbook" in cmd
                   and play_files in cmd and ppid == os.getpid()]
        if leaders and any(f"sleep {marker}" in cmd for _, _, cmd in procs.values()):
            break
        assert time.monotonic() < deadline, "the sleep never started under ansible-playbook"
        await asyncio.sleep(0.05)
    (leader,) = leaders
    assert procs[leader][1] == leader  # it leads its own group
    started = time.monotonic()
    task.cancel()
    if twice:
        await asyncio.sleep(0.01)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    left = {pid: cmd for pid, (_, pgid, cmd) in _processes().items()
            if pgid == leader or f"sleep {marker}" in cmd or (play_files in cmd and "ansible" in cmd)}
    assert not left, f"left running after the cancel: {left}"


async def test_cancel_kills_ansible_playbooks_whole_process_group(rig: Rig) -> None:
    await _cancel_mid_play(rig, twice=False)


async def test_a_second_cancel_during_the_cleanup_still_kills_the_group(rig: Rig) -> None:
    await _cancel_mid_play(rig, twice=True)


CONSOLE = """
import asyncio, sys
from pathlib import Path
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.events import EventBus
from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.local import LocalTransport
host = Host(name="web-1", group="web", address="127.0.0.1", root=sys.argv[2])
runner = PlaybookRunner(EventBus(), lambda h: LocalTransport(h))
asyncio.run(runner.run(load_playbook(Path(sys.argv[1])), [host]))
"""


async def test_a_console_killed_outright_leaves_no_ansible_playbook_behind(rig: Rig) -> None:
    # No cleanup of ours runs when the console gets SIGKILL: the kernel's parent-death signal must end
    # ansible-playbook, which then stops its workers (their own sessions) and their commands itself.
    marker, play = _sleep_play("web")
    path = rig.playbook(play)
    console = await asyncio.create_subprocess_exec(sys.executable, "-c", CONSOLE, str(path), str(rig.root("web-1")))
    deadline = time.monotonic() + 60
    while not any(f"sleep {marker}" in cmd for _, _, cmd in _processes().values()):
        assert time.monotonic() < deadline, "the sleep never started under ansible-playbook"
        assert console.returncode is None, "the console ended early"
        await asyncio.sleep(0.05)
    console.kill()
    await console.wait()
    play_files = str(path.parent.absolute() / ".opsconsole-play-")
    deadline = time.monotonic() + 15
    while True:
        left = {pid: cmd for pid, (_, _, cmd) in _processes().items()
                if f"sleep {marker}" in cmd or (play_files in cmd and "ansible" in cmd)}
        if not left:
            break
        assert time.monotonic() < deadline, f"left running 15 s after the console was killed: {left}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["abort", "engine close"])
async def test_abort_or_engine_close_mid_play_leaves_no_ansible_playbook_behind(tmp_path: Path, how: str) -> None:
    cfg = write_config(tmp_path, count=1)
    marker, play = _sleep_play("itrust")
    (cfg.parent / "slow.yml").write_text(play)
    engine = Engine(load_config(cfg))
    engine.prepare()
    running = asyncio.ensure_future(engine.execute(engine.parse("playbook run slow.yml")))
    try:
        deadline = time.monotonic() + 60
        while not any(f"sleep {marker}" in cmd for _, _, cmd in _processes().values()):
            assert time.monotonic() < deadline and not running.done(), "the sleep never started"
            await asyncio.sleep(0.05)
        if how == "abort":
            assert (await engine.execute(engine.parse("abort"))).ok
        else:
            await engine.close()
        outcome = await asyncio.wait_for(running, 15)
        assert not outcome.ok and outcome.message == "aborted"
        left = {pid: cmd for pid, (_, _, cmd) in _processes().items()
                if f"sleep {marker}" in cmd or (".opsconsole-play-" in cmd and str(cfg.parent) in cmd)}
        assert not left, f"left running after {how}: {left}"
    finally:
        await engine.close()


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


def test_without_ansible_core_a_short_module_name_is_refused_too(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "ansible_playbook", lambda: None)
    path = rig.playbook("""
        - hosts: web
          tasks:
            - name: edit
              replace: {path: app.ini, regexp: x, replace: y}
        """)
    with pytest.raises(SourceError) as info:
        load_playbook(path)
    assert str(info.value) == (f"{path}:5: plays[0].tasks[0].replace: replace is not run natively and "
                               "ansible-playbook is not installed: pip install 'opsconsole[ansible]' to run this "
                               "play with it")
    assert not rig.root("web-1").exists()


@pytest.mark.parametrize("module", ["service", "ansible.builtin.service", "ansible.builtin.systemd", "systemd"])
def test_ansibles_service_manager_goes_to_ansible_playbook_saying_why(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    path = rig.playbook(f"""
        - hosts: web
          tasks:
            - name: native
              debug: {{msg: hi}}
        - hosts: web
          tasks:
            - name: nginx up
              {module}: {{name: nginx, state: started, enabled: true}}
        """)
    native, fallback = load_playbook(path).plays
    assert native.runner == "native"
    assert (fallback.runner, fallback.why) == ("ansible", f"play 2 uses {module} (Ansible's service manager, which "
                                               "opsconsole does not run natively: it would drive the host's init "
                                               "system): runs with ansible-playbook")
    monkeypatch.setattr(loader, "ansible_playbook", lambda: None)
    with pytest.raises(SourceError) as info:
        load_playbook(path)
    assert str(info.value).startswith(f"{path}:9: plays[1].tasks[0].{module}: {module} (Ansible's service manager"), \
        info.value
    assert str(info.value).endswith("is not run natively and ansible-playbook is not installed: pip install "
                                    "'opsconsole[ansible]' to run this play with it")
    assert not rig.root("web-1").exists()


def test_the_inventory_keeps_a_python_the_host_names() -> None:
    """A host var `ansible_python_interpreter` is the operator's word: the fallback's inventory keeps it
    (it once overwrote it with auto_silent); without one, Ansible discovers (ssh) or gets ours (local)."""
    from opsconsole.hosts import Host
    from opsconsole.playbook.fallback import inventory
    from opsconsole.transport.local import LocalTransport

    named = Host(name="a", group="web", address="10.0.0.1", transport="ssh", root="/srv/a",
                 vars={"ansible_python_interpreter": "/opt/py/bin/python3"})
    plain = Host(name="b", group="web", address="10.0.0.2", transport="ssh", root="/srv/b")
    local = Host(name="c", group="web", address="127.0.0.1", transport="local", root="/tmp")
    inv = inventory([named, plain, local], LocalTransport, None, lambda h: {})  # only .root is read
    hosts = inv["all"]["hosts"]
    assert hosts["a"]["ansible_python_interpreter"] == "/opt/py/bin/python3"
    assert hosts["b"]["ansible_python_interpreter"] == "auto_silent"
    assert hosts["c"]["ansible_python_interpreter"] == sys.executable


async def test_a_fallback_play_on_local_hosts_sees_a_logins_environment_not_the_consoles(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """ansible-playbook ran with the console's whole environment, and a local host's tasks (and the services
    they start) ran in it: the native runner's login environment was bypassed by any play it hands over."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-hosts")
    hosts = rig.hosts(1)
    book = load_playbook(rig.playbook("""
        - hosts: web
          gather_facts: false
          environment: {GIVEN: given}
          tasks:
            - name: what a task sees
              shell: 'echo "${AWS_SECRET_ACCESS_KEY:-unset} $GIVEN" > {{ host_root }}/seen.txt'
        """))
    assert book.plays[0].runner == "ansible", book.plays[0].why
    result = await rig.runner.run(book, hosts)
    assert result.ok, result.failures
    assert (rig.root("web-1") / "seen.txt").read_text() == "unset given\n"
