"""Playbooks end to end over the local transport: real processes, real files, a real HTTP service."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from opsconsole.events import Event, EventBus, OutputLine, PlayFinished, TaskFinished, TaskStarted
from opsconsole.hosts import Host
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.model import PlaybookResult
from opsconsole.playbook.runner import PlaybookRunner
from opsconsole.transport.local import LocalTransport
from opsconsole.yamlsource import SourceError


def gone(pid: int) -> bool:
    """No such process, or only its zombie left (pid 1 in a container may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rig:
    """Hosts under tmp_path, a runner over local transports, and every event it emitted."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.transports: dict[str, LocalTransport] = {}
        self.runner = PlaybookRunner(self.bus, self.transport_for)

    def transport_for(self, host: Host) -> LocalTransport:
        return self.transports.setdefault(host.name, LocalTransport(host))

    def hosts(self, n: int, group: str = "web", **vars_: Any) -> list[Host]:
        return [Host(name=f"{group}-{i}", group=group, address="127.0.0.1", root=str(self.root(f"{group}-{i}")),
                     vars=dict(vars_)) for i in range(1, n + 1)]

    def root(self, name: str) -> Path:
        return self.tmp / "hosts" / name

    def playbook(self, text: str, name: str = "play.yml") -> Path:
        path = self.tmp / "pb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    async def run(self, text: str, hosts: list[Host], **kw: Any) -> PlaybookResult:
        return await self.runner.run(load_playbook(self.playbook(text)), hosts, **kw)

    def finished(self, host: str | None = None) -> list[TaskFinished]:
        return [e for e in self.events if isinstance(e, TaskFinished) and host in (None, e.host)]

    def statuses(self, host: str) -> dict[str, str]:
        return {e.task: e.status for e in self.finished(host)}

    def stop_everything(self) -> None:
        for pid_file in (self.tmp / "hosts").glob("*/run/*.pid"):
            try:
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.stop_everything()


# -- running ---------------------------------------------------------------
async def test_output_streams_per_host_and_register_feeds_later_tasks(rig: Rig) -> None:
    hosts = rig.hosts(2)
    result = await rig.run("""
        - hosts: web
          tasks:
            - name: say
              shell: echo "hello from {{ inventory_hostname }}"; echo warn >&2
              register: said
            - name: show
              debug:
                msg: "{{ said.stdout_lines[0] }} rc={{ said.rc }} changed={{ said.changed }}"
        """, hosts)
    assert result.ok and result.host_status == {"web-1": "ok", "web-2": "ok"}
    lines = [(e.host, e.line, e.stream, e.source) for e in rig.events if isinstance(e, OutputLine)]
    assert ("web-1", "hello from web-1", "stdout", "say") in lines
    assert ("web-2", "warn", "stderr", "say") in lines
    assert ("web-2", "hello from web-2 rc=0 changed=True", "stdout", "show") in lines
    assert rig.statuses("web-1") == {"say": "changed", "show": "ok"}
    started = [e.task for e in rig.events if isinstance(e, TaskStarted) and e.host == "web-1"]
    assert started == ["say", "show"]


async def test_variable_precedence_and_builtins(rig: Rig) -> None:
    (rig.tmp / "pb" / "templates").mkdir(parents=True)
    (rig.tmp / "pb" / "templates" / "levels.j2").write_text(
        "1={{ v1 }} 2={{ v2 }} 3={{ v3 }} 4={{ v4.stdout }} 5={{ v5 }}\n"
        "host={{ inventory_hostname }} addr={{ ansible_host }} root={{ host_root }} port={{ port }}\n"
        "groups={{ groups.web | join(',') }}/{{ groups.db | join(',') }} mine={{ group_names | join(',') }}\n"
        "nested={{ greeting }} dir={{ playbook_dir }}\n")
    levels = {f"v{i}": "group" for i in range(1, 6)}
    hosts = [Host(name="web-1", group="web", address="127.0.0.9", root=str(rig.root("web-1")), port=8123,
                  vars=levels),
             Host(name="db-1", group="db", address="127.0.0.1", root=str(rig.root("db-1")))]
    result = await rig.run("""
        - hosts: web-1
          vars: {v2: play, v3: play, v4: play, v5: play, greeting: "hi {{ inventory_hostname }}"}
          tasks:
            - name: register v4
              shell: echo registered
              register: v4
            - name: register v5, which extra vars still beat
              shell: echo registered
              register: v5
            - name: render
              template: {src: levels.j2, dest: out/levels.txt, mode: "0640"}
              vars: {v3: task, v4: task, v5: task}
        """, hosts, extra_vars={"v5": "extra"})
    assert result.ok, result.failures
    out = rig.root("web-1") / "out" / "levels.txt"
    assert out.read_text() == (
        "1=group 2=play 3=task 4=registered 5=extra\n"
        f"host=web-1 addr=127.0.0.9 root={rig.root('web-1')} port=8123\n"
        "groups=web-1/db-1 mine=web\n"
        f"nested=hi web-1 dir={rig.tmp / 'pb'}\n")
    assert out.stat().st_mode & 0o777 == 0o640
    assert result.host_status == {"web-1": "ok"}  # db-1 was not selected
    assert not rig.root("db-1").exists()


async def test_files_report_changed_only_when_something_changed(rig: Rig) -> None:
    (rig.tmp / "pb" / "files").mkdir(parents=True)
    (rig.tmp / "pb" / "files" / "motd").write_text("welcome\n")
    hosts = rig.hosts(1)
    text = """
        - hosts: all
          tasks:
            - {name: dir, file: {path: releases/v1, state: directory, mode: "0750"}}
            - {name: copy src, copy: {src: motd, dest: releases/v1/motd}}
            - {name: copy content, copy: {content: "v={{ version }}\\n", dest: releases/v1/VERSION, mode: "0600"}}
            - {name: link, file: {path: current, src: releases/v1, state: link}}
            - {name: touch, file: {path: releases/v1/stamp, state: touch}}
            - {name: gone, file: {path: old, state: absent}}
        """
    (rig.root("web-1") / "old" / "deep").mkdir(parents=True)
    first = await rig.run(text, hosts, extra_vars={"version": "1"})
    assert first.ok, first.failures
    assert rig.statuses("web-1") == {"dir": "changed", "copy src": "changed", "copy content": "changed",
                                     "link": "changed", "touch": "changed", "gone": "changed"}
    root = rig.root("web-1")
    assert (root / "current" / "motd").read_text() == "welcome\n"
    assert os.readlink(root / "current") == "releases/v1"
    assert (root / "releases" / "v1" / "VERSION").read_text() == "v=1\n"
    assert (root / "releases" / "v1" / "VERSION").stat().st_mode & 0o777 == 0o600
    assert (root / "releases" / "v1").stat().st_mode & 0o777 == 0o750
    assert not (root / "old").exists()

    rig.events.clear()
    second = await rig.run(text, hosts, extra_vars={"version": "1"})
    assert second.ok
    assert set(rig.statuses("web-1").values()) == {"ok"}

    rig.events.clear()
    third = await rig.run(text, hosts, extra_vars={"version": "2"})
    assert third.ok
    assert rig.statuses("web-1")["copy content"] == "changed"
    assert rig.statuses("web-1")["copy src"] == "ok"


async def test_when_register_notify_handlers_and_ignore_errors(rig: Rig) -> None:
    hosts = rig.hosts(1)
    result = await rig.run("""
        - hosts: web
          tasks:
            - name: probe
              shell: echo probing; exit 3
              register: probe
              ignore_errors: true
            - name: runs when rc is 3
              shell: echo yes > when-true
              when: probe.rc == 3 and probe.failed
            - name: skipped when rc is 0
              shell: echo no > when-false
              when: probe.rc == 0
              register: skipped_one
            - name: knows it was skipped
              shell: echo {{ skipped_one.skipped }} > skipped-flag
            - name: config changes
              copy: {content: "a\\n", dest: app.conf}
              notify: [second handler, first handler]
            - name: config again, unchanged
              copy: {content: "a\\n", dest: app.conf}
              notify: never runs
            - name: other change, same handler
              copy: {content: "b\\n", dest: other.conf}
              notify: first handler
          handlers:
            - name: first handler
              shell: echo first >> handlers.log
            - name: never runs
              shell: echo never >> handlers.log
            - name: second handler
              shell: echo second >> handlers.log
        """, hosts)
    assert result.ok, result.failures
    root = rig.root("web-1")
    assert (root / "when-true").exists()
    assert not (root / "when-false").exists()
    assert (root / "skipped-flag").read_text() == "True\n"
    # Handlers run once each, at the end, in the order they are defined — not the order notified.
    assert (root / "handlers.log").read_text() == "first\nsecond\n"
    statuses = rig.statuses("web-1")
    assert statuses["probe"] == "failed" and statuses["skipped when rc is 0"] == "skipped"
    assert statuses["config again, unchanged"] == "ok" and "never runs" not in statuses


async def test_failing_task_names_host_task_command_exit_code_and_output(rig: Rig) -> None:
    hosts = rig.hosts(1)
    result = await rig.run("""
        - hosts: web
          tasks:
            - name: migrate the database
              shell: echo "step one"; echo "disk full" >&2; exit 7
            - name: after
              shell: touch after
        """, hosts)
    assert not result.ok
    assert result.host_status == {"web-1": "failed"}
    why = result.failures["web-1"]
    for part in ("migrate the database", "web-1", 'echo "step one"; echo "disk full" >&2; exit 7',
                 "exit code 7", "step one", "disk full"):
        assert part in why, (part, why)
    failed = [e for e in rig.finished("web-1") if e.status == "failed"]
    assert len(failed) == 1 and failed[0].rc == 7 and failed[0].message == why
    assert not (rig.root("web-1") / "after").exists()


async def test_undefined_variable_fails_the_task_naming_it(rig: Rig) -> None:
    result = await rig.run("""
        - hosts: web
          tasks:
            - name: uses a typo
              shell: echo {{ verison }} > out
        """, rig.hosts(1))
    assert not result.ok
    assert "verison" in result.failures["web-1"] and "uses a typo" in result.failures["web-1"]
    assert not (rig.root("web-1") / "out").exists()


async def test_serial_one_stops_at_the_failing_host(rig: Rig) -> None:
    hosts = rig.hosts(3)
    result = await rig.run("""
        - hosts: web
          serial: 1
          tasks:
            - name: mark
              shell: touch marker
            - name: check
              shell: test "{{ inventory_hostname }}" != web-2
        """, hosts)
    assert not result.ok
    assert result.host_status == {"web-1": "ok", "web-2": "failed", "web-3": "skipped"}
    assert (rig.root("web-1") / "marker").exists() and (rig.root("web-2") / "marker").exists()
    assert not (rig.root("web-3") / "marker").exists()
    assert not rig.finished("web-3")
    done = [e for e in rig.events if isinstance(e, PlayFinished)]
    assert [(d.ok_hosts, d.failed_hosts, d.skipped_hosts) for d in done] == [(("web-1",), ("web-2",), ("web-3",))]


async def test_serial_percentage_and_limit(rig: Rig) -> None:
    hosts = rig.hosts(4)
    result = await rig.run("""
        - hosts: web
          serial: 50%
          tasks:
            - {name: mark, shell: "date +%s.%N > marker; sleep 0.3"}
        """, hosts, limit={"web-1", "web-2", "web-4"})
    assert result.ok and result.host_status == {"web-1": "ok", "web-2": "ok", "web-4": "ok"}
    assert not (rig.root("web-3") / "marker").exists()
    t = {h: float((rig.root(h) / "marker").read_text()) for h in ("web-1", "web-2", "web-4")}
    # 3 hosts at 50% -> batches of 1: each starts after the previous finished.
    assert t["web-1"] + 0.25 < t["web-2"] and t["web-2"] + 0.25 < t["web-4"]


async def test_cancel_mid_play_kills_the_command_and_leaves_later_hosts_untouched(rig: Rig) -> None:
    hosts = rig.hosts(3)
    play = load_playbook(rig.playbook("""
        - hosts: web
          serial: 1
          tasks:
            - name: long
              shell: touch marker; sleep 300 & echo $! > child.pid; wait
        """))
    task = asyncio.create_task(rig.runner.run(play, hosts))
    child_file = rig.root("web-1") / "child.pid"
    for _ in range(200):
        if child_file.exists() and child_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    child = int(child_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    for _ in range(60):
        if gone(child):
            break
        await asyncio.sleep(0.05)
    assert gone(child), "the cancelled task's child process is still running"
    assert not (rig.root("web-2") / "marker").exists() and not (rig.root("web-3") / "marker").exists()
    done = [e for e in rig.events if isinstance(e, PlayFinished)]
    assert done and done[-1].skipped_hosts == ("web-2", "web-3") and done[-1].failed_hosts == ("web-1",)
    # "cancelled", not "failed": nothing went wrong on the host (the console must not show it FAILED)
    assert [(e.task, e.status) for e in rig.finished("web-1")] == [("long", "cancelled")]
    assert "cancelled" in rig.finished("web-1")[0].message


async def test_service_started_answers_and_is_idempotent(rig: Rig) -> None:
    port = free_port()
    hosts = [Host(name="app-1", group="app", address="127.0.0.1", root=str(rig.root("app-1")), port=port)]
    (rig.root("app-1") / "www").mkdir(parents=True)
    (rig.root("app-1") / "www" / "health").write_text("ok\n")
    text = """
        - hosts: app
          tasks:
            - name: run the server
              opsconsole.builtin.service:
                name: web
                state: "{{ want }}"
                command: exec {{ python }} -m http.server {{ port }} --bind 127.0.0.1
                chdir: www
                env: {GREETING: hi}
            - name: port open
              ansible.builtin.wait_for: {port: "{{ port }}", timeout: 10}
            - name: health
              opsconsole.builtin.health: {url: "http://{{ ansible_host }}:{{ port }}/health", timeout: 10s}
        """
    extra = {"python": sys.executable, "want": "started"}
    t = rig.transport_for(hosts[0])
    first = await rig.run(text, hosts, extra_vars=extra)
    assert first.ok, first.failures
    pid = await t.service_pid("web")
    assert pid is not None
    assert rig.statuses("app-1") == {"run the server": "changed", "port open": "ok", "health": "ok"}
    assert (rig.root("app-1") / "run" / "web.pid").read_text().strip() == str(pid)

    rig.events.clear()
    again = await rig.run(text, hosts, extra_vars=extra)
    assert again.ok and rig.statuses("app-1")["run the server"] == "ok"
    assert await t.service_pid("web") == pid

    rig.events.clear()
    restarted = await rig.run(text, hosts, extra_vars={**extra, "want": "restarted"})
    assert restarted.ok and rig.statuses("app-1")["run the server"] == "changed"
    new_pid = await t.service_pid("web")
    assert new_pid is not None and new_pid != pid and gone(pid)

    rig.events.clear()
    stop = await rig.run("""
        - hosts: app
          tasks:
            - {name: stop, opsconsole.builtin.service: {name: web, state: stopped}}
            - {name: closed, wait_for: {port: "{{ port }}", timeout: 1}}
        """, hosts)
    assert rig.statuses("app-1")["stop"] == "changed"
    assert gone(new_pid) and not (rig.root("app-1") / "run" / "web.pid").exists()
    assert not stop.ok and "timed out after 1s" in stop.failures["app-1"]


async def test_command_module_has_no_shell_features(rig: Rig) -> None:
    result = await rig.run("""
        - hosts: web
          tasks:
            - {name: literal, command: "echo $HOME | cat > nothing", register: out}
            - {name: show, debug: {msg: "{{ out.stdout }}"}}
        """, rig.hosts(1))
    assert result.ok
    assert not (rig.root("web-1") / "nothing").exists()
    assert any(isinstance(e, OutputLine) and e.line == "$HOME | cat > nothing" and e.source == "show"
               for e in rig.events)


async def test_loop_and_templated_source_checked_at_run_time(rig: Rig, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact.txt"
    artifact.write_text("built\n")
    text = """
        - hosts: web
          tasks:
            - name: dirs
              file: {path: "{{ item }}", state: directory}
              loop: [releases, log, "{{ extra_dir }}"]
            - name: upload
              copy: {src: "{{ artifact }}", dest: "releases/a.txt"}
        """
    ok = await rig.run(text, rig.hosts(1), extra_vars={"artifact": str(artifact), "extra_dir": "cache"})
    assert ok.ok, ok.failures
    assert all((rig.root("web-1") / d).is_dir() for d in ("releases", "log", "cache"))
    assert (rig.root("web-1") / "releases" / "a.txt").read_text() == "built\n"
    bad = await rig.run(text, rig.hosts(1), extra_vars={"artifact": str(tmp_path / "missing.tgz"), "extra_dir": "c"})
    assert not bad.ok and "missing.tgz" in bad.failures["web-1"] and "upload" in bad.failures["web-1"]


async def test_shipped_install_playbook_runs_locally(rig: Rig) -> None:
    repo_playbooks = Path(__file__).resolve().parent.parent / "playbooks"
    play = load_playbook(repo_playbooks / "itrust-install.yml")
    result = await rig.runner.run(play, rig.hosts(2, group="itrust"), extra_vars={"app": "itrust"})
    assert result.ok, result.failures
    assert (rig.root("itrust-2") / "releases").is_dir()
    assert any(isinstance(e, OutputLine) and e.line.startswith("itrust-1 runs Python 3") for e in rig.events)


# -- refusing bad playbooks at load time ------------------------------------
GOOD_FIRST_TASK = """\
- hosts: web
  tasks:
    - name: would touch a marker
      shell: touch marker
"""

BAD = {
    # case: (text appended after GOOD_FIRST_TASK, line, key path, words)
    "unknown module": ("    - name: typo\n      shel: echo hi\n", 6, "plays[0].tasks[1].shel", "unknown module"),
    "two modules": ("    - name: two\n      shell: echo\n      debug: {msg: x}\n", 7, "plays[0].tasks[1].debug",
                    "exactly one module"),
    "unknown task key": ("    - name: k\n      shell: echo\n      retriez: 3\n", 7, "plays[0].tasks[1].retriez",
                         "task key"),
    "no module": ("    - name: nothing\n      when: true\n", 5, "plays[0].tasks[1]", "no module"),
    "missing required": ("    - name: copy\n      copy:\n        content: x\n", 6, "plays[0].tasks[1].copy.dest",
                         "required argument missing"),
    "bad state": ("    - name: f\n      file:\n        path: x\n        state: dir\n", 8,
                  "plays[0].tasks[1].file.state", "'dir' is not one of directory, absent, touch, link"),
    "missing template": ("    - name: t\n      template:\n        src: nope.j2\n        dest: x\n", 7,
                         "plays[0].tasks[1].template.src", "file not found: nope.j2"),
    "missing copy src": ("    - name: c\n      copy: {src: files/gone.txt, dest: x}\n", 6,
                         "plays[0].tasks[1].copy.src", "file not found"),
    "service without command": ("    - name: s\n      opsconsole.builtin.service:\n        name: web\n"
                                "        state: started\n", 8,
                                "plays[0].tasks[1].opsconsole.builtin.service.command", "required argument missing"),
    # Names that meant opsconsole's own behaviour: refused, naming the new name.
    "old service name": ("    - name: s\n      service:\n        name: web\n        state: started\n"
                         "        command: ./run\n", 6,
                         "plays[0].tasks[1].service", "opsconsole's service started by its command is "
                         "`opsconsole.builtin.service` (same arguments)"),
    "old daemon name": ("    - name: s\n      daemon: {name: web, state: stopped}\n", 6,
                        "plays[0].tasks[1].daemon", "is `opsconsole.builtin.service`"),
    "wait_for url": ("    - name: w\n      wait_for:\n        url: http://x/health\n", 7,
                     "plays[0].tasks[1].wait_for.url", "Ansible's wait_for has no url; for an HTTP answer use "
                     "`opsconsole.builtin.health`"),
    "wait_for timeout with unit": ("    - name: w\n      wait_for: {port: 80, timeout: 10s}\n", 6,
                                   "plays[0].tasks[1].wait_for.timeout", "'10s' is not a number of seconds"),
    # .nan passes every comparison a wait makes, .inf waits for ever: refused as written, with the module's name.
    "wait_for timeout nan": ("    - name: w\n      wait_for: {port: 80, timeout: .nan}\n", 6,
                             "plays[0].tasks[1].wait_for.timeout", "nan is not a number of seconds, 0 or more"),
    "pause inf": ("    - name: p\n      pause: {seconds: .inf}\n", 6,
                  "plays[0].tasks[1].pause.seconds", "inf is not a number of seconds, 0 or more"),
    "pause minutes past a float": ("    - name: p\n      pause: {minutes: 1.0e+308}\n", 6,
                                   "plays[0].tasks[1].pause.minutes", "is not a number of minutes, 0 or more"),
    "uri negative timeout": ("    - name: u\n      uri: {url: 'http://127.0.0.1:1/', timeout: -5}\n", 6,
                             "plays[0].tasks[1].uri.timeout", "-5 is not a number of seconds, 0 or more"),
    "unknown argument of an FQCN": ("    - name: c\n      ansible.builtin.copy:\n        content: x\n"
                                    "        dest: y\n        frce: true\n", 9,
                                    "plays[0].tasks[1].ansible.builtin.copy.frce", "unknown argument"),
    "unknown argument": ("    - name: d\n      debug:\n        msg: x\n        verbose: 2\n", 8,
                         "plays[0].tasks[1].debug.verbose", "unknown argument"),
    "bad when": ("    - name: w\n      shell: echo\n      when: result.rc ==\n", 7, "plays[0].tasks[1].when",
                 "syntax error"),
    "bad template syntax": ("    - name: b\n      shell: echo {{ oops\n", 6, "plays[0].tasks[1].shell.cmd",
                            "syntax error"),
    "unknown handler": ("    - name: n\n      shell: echo\n      notify: restart app\n", 7, "plays[0].tasks[1].notify",
                        "no handler named 'restart app'"),
    # Ansible's wait_for without port or path waits out its timeout; both at once is an error.
    "wait_for port and path": ("    - name: w\n      wait_for: {port: 80, path: /tmp/x}\n", 6,
                               "plays[0].tasks[1].wait_for.path", "give port or path, not both"),
    "bad block key": ("    - name: b\n      block: [{debug: {msg: x}}]\n      register: r\n", 7,
                      "plays[0].tasks[1].register", "not a block key"),
    "bad task in rescue": ("    - block: [{debug: {msg: x}}]\n      rescue:\n        - copy: {dest: x, frce: 1}\n", 7,
                           "plays[0].tasks[1].rescue[0].copy.frce", "unknown argument"),
    "missing include": ("    - include_tasks: tasks/nope.yml\n", 5, "plays[0].tasks[1].include_tasks",
                        "file not found: tasks/nope.yml"),
    "templated include": ("    - include_tasks: \"{{ which }}.yml\"\n", 5, "plays[0].tasks[1].include_tasks",
                          "not run natively"),
    "bad set_fact name": ("    - set_fact: {not-a-name: 1}\n", 5, "plays[0].tasks[1].set_fact.not-a-name",
                          "not a valid variable name"),
    "bad assert": ("    - assert: {that: [x ==]}\n", 5, "plays[0].tasks[1].assert.that[0]", "syntax error"),
    "loop and with_items": ("    - debug: {msg: x}\n      loop: [1]\n      with_items: [2]\n", 7,
                            "plays[0].tasks[1].with_items", "not both"),
    "bad tags": ("    - debug: {msg: x}\n      tags: {a: 1}\n", 6, "plays[0].tasks[1].tags", "a tag or a list"),
    "wrong type": ("    - name: l\n      lineinfile: {path: x, line: y, create: maybe}\n", 6,
                   "plays[0].tasks[1].lineinfile.create", "'maybe' is not a boolean"),
    "unknown argument of lineinfile": ("    - lineinfile: {path: x, line: y, backrefs: true}\n", 5,
                                       "plays[0].tasks[1].lineinfile.backrefs", "unknown argument"),
    "wrong type, a list for one value": ("    - name: c\n      ansible.builtin.copy: {content: x, dest: [a, b]}\n", 6,
                                          "plays[0].tasks[1].ansible.builtin.copy.dest",
                                          "wrong type: a list, where copy takes one value"),
    "wrong type, a mapping for one value": ("    - name: s\n      shell:\n        cmd: echo\n        chdir: {a: 1}\n", 8,
                                            "plays[0].tasks[1].shell.chdir",
                                            "wrong type: a mapping, where shell takes one value"),
    "wrong type, not a number": ("    - name: w\n      wait_for: {port: http}\n", 6,
                                 "plays[0].tasks[1].wait_for.port", "'http' is not a number"),
    "unknown argument in module_defaults": ("  module_defaults:\n    shell: {chdr: /tmp}\n", 6,
                                            "plays[0].module_defaults.shell.chdr", "unknown argument"),
    "bad mode": ("    - name: m\n      copy: {content: x, dest: y, mode: rw-r--r--}\n", 6,
                 "plays[0].tasks[1].copy.mode", "not an octal file mode"),
    "unknown play key": ("  hostz: web\n", 5, "plays[0].hostz", "unknown play key"),
    "bad serial": ("  serial: some\n", 5, "plays[0].serial", "not a host count"),
    "bad ignore_errors": ("    - name: i\n      shell: echo\n      ignore_errors: maybe\n", 7,
                          "plays[0].tasks[1].ignore_errors", "not true or false"),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_playbook_refused_at_load_naming_file_line_and_key(rig: Rig, case: str) -> None:
    tail, line, keypath, words = BAD[case]
    path = rig.playbook(GOOD_FIRST_TASK + tail, name=f"{case.replace(' ', '-')}.yml")
    with pytest.raises(SourceError) as info:
        load_playbook(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {keypath}: "), message
    assert words in message, message
    assert not rig.root("web-1").exists()  # nothing ran, nothing was even created


def test_missing_hosts_and_not_a_list(tmp_path: Path) -> None:
    p = tmp_path / "p.yml"
    p.write_text("- name: x\n  tasks: []\n")
    with pytest.raises(SourceError, match=r"p\.yml:1: plays\[0\]\.hosts: required"):
        load_playbook(p)
    p.write_text("hosts: all\n")
    with pytest.raises(SourceError, match=r"p\.yml:1: a playbook is a list of plays"):
        load_playbook(p)


def test_an_error_in_an_included_file_names_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "inner.yml").write_text("- name: ok\n  debug: {msg: x}\n- name: bad\n  file: {path: x}\n")
    (tmp_path / "outer.yml").write_text("- hosts: all\n  tasks:\n    - import_tasks: inner.yml\n")
    with pytest.raises(SourceError) as info:
        load_playbook(tmp_path / "outer.yml")
    assert str(info.value).startswith(f"{tmp_path / 'tasks' / 'inner.yml'}:4: tasks[1].file.state: required"), info.value
    (tmp_path / "tasks" / "inner.yml").write_text("- import_tasks: inner.yml\n")
    with pytest.raises(SourceError, match="inner.yml includes itself"):
        load_playbook(tmp_path / "outer.yml")
    (tmp_path / "outer.yml").write_text("- hosts: all\n  vars_files: [vars/none.yml]\n  tasks: []\n")
    with pytest.raises(SourceError, match=r"outer\.yml:2: plays\[0\]\.vars_files\[0\]: file not found: vars/none\.yml"):
        load_playbook(tmp_path / "outer.yml")


def test_every_shipped_playbook_loads() -> None:
    for path in sorted((Path(__file__).resolve().parent.parent / "playbooks").glob("*.yml")):
        assert load_playbook(path).plays, path


async def test_a_host_without_transport_fails_alone(rig: Rig) -> None:
    hosts = rig.hosts(2)

    def transport_for(host: Host) -> LocalTransport:
        if host.name == "web-2":
            raise RuntimeError("the ssh transport is not configured")
        return rig.transport_for(host)

    runner = PlaybookRunner(rig.bus, transport_for)
    result = await runner.run(load_playbook(rig.playbook("- hosts: web\n  tasks:\n    - {shell: touch marker}\n")),
                              hosts)
    assert result.host_status == {"web-1": "ok", "web-2": "failed"}
    assert "not configured" in result.failures["web-2"]
    assert (rig.root("web-1") / "marker").exists()


async def test_changed_when_and_failed_when_see_the_registered_result(rig: Rig) -> None:
    result = await rig.run("""
        - hosts: web
          tasks:
            - name: grep finds nothing
              shell: grep -c needle /dev/null
              register: found
              failed_when: found.rc > 1
              changed_when: false
            - name: output says error
              shell: 'echo "ERROR: disk"'
              register: out
              failed_when: "'ERROR' in out.stdout"
            - name: not reached
              shell: touch reached
        """, rig.hosts(1))
    statuses = rig.statuses("web-1")
    assert statuses["grep finds nothing"] == "ok"
    assert statuses["output says error"] == "failed" and "not reached" not in statuses
    assert "ERROR: disk" in result.failures["web-1"]
    assert not (rig.root("web-1") / "reached").exists()


async def test_module_defaults_fill_in_what_a_task_does_not_give(rig: Rig) -> None:
    # As Ansible: the play's module_defaults apply to the module under either name; the task's own value wins.
    (rig.root("web-1") / "sub").mkdir(parents=True)
    result = await rig.run("""
        - hosts: web
          module_defaults:
            ansible.builtin.shell: {chdir: sub}
            copy: {mode: "0600"}
          tasks:
            - shell: pwd > here.txt
            - shell: {cmd: pwd > here.txt, chdir: .}
            - ansible.builtin.copy: {content: "x\\n", dest: a.txt}
            - copy: {content: "y\\n", dest: b.txt, mode: "0640"}
        """, rig.hosts(1))
    assert result.ok, result.failures
    root = rig.root("web-1")
    assert (root / "sub" / "here.txt").read_text().strip() == str(root / "sub")
    assert (root / "here.txt").read_text().strip() == str(root)
    assert oct((root / "a.txt").stat().st_mode & 0o777) == "0o600"
    assert oct((root / "b.txt").stat().st_mode & 0o777) == "0o640"


async def test_a_block_tag_eats_its_newline_as_in_ansible(rig: Rig) -> None:
    # Ansible templates with trim_blocks: the list below has no blank lines (found by the proxy-host twin test).
    result = await rig.run("""
        - hosts: web
          vars: {backends: [a, b]}
          tasks:
            - copy:
                dest: list.txt
                content: |
                  # head
                  {% for b in backends %}
                  {{ b }}
                  {% endfor %}
        """, rig.hosts(1))
    assert result.ok, result.failures
    assert (rig.root("web-1") / "list.txt").read_text() == "# head\na\nb\n"


@pytest.mark.parametrize("wait, words", [
    ("pause: {seconds: \"{{ how_long }}\"}", "pause: seconds 'nan' is not a number of seconds, 0 or more"),
    ("wait_for: {path: /nowhere, timeout: \"{{ how_long }}\"}", "wait_for: timeout 'nan' is not a number of seconds"),
])
async def test_a_templated_wait_that_is_no_number_of_seconds_fails_its_task_naming_it(rig: Rig, wait: str,
                                                                                    words: str) -> None:
    """What the loader cannot see (the value comes from a variable) is checked as the task runs: `nan` once
    passed every comparison a wait makes."""
    result = await rig.run(f"""
        - hosts: web
          tasks:
            - name: wait a while
              {wait}
        """, rig.hosts(1), extra_vars={"how_long": "nan"})
    assert not result.ok
    assert words in result.failures["web-1"], result.failures
