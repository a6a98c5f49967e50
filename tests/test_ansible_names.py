"""Names mean what Ansible means: our playbooks parse in real ansible-playbook, FQCNs are the same
modules, and opsconsole's own modules live in their own collection (playbooks/collections/...)."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from opsconsole.pids import stat_fields
from opsconsole.starter import starter_files
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SHIPPED = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))


def ansible_playbook(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Real ansible-playbook, on this machine only (`-c local`), its state kept under tmp_path."""
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"), "HOME": str(tmp_path),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)


def test_every_shipped_playbook_passes_ansible_syntax_check(tmp_path: Path) -> None:
    # One ansible-playbook for all of them (its start-up is most of the time); an error names its file.
    done = ansible_playbook(tmp_path, "--syntax-check", *(str(ROOT / "playbooks" / name) for name in SHIPPED))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("playbook: ") == len(SHIPPED), done.stdout  # each one was read


def test_what_init_writes_passes_ansible_syntax_check(tmp_path: Path) -> None:
    target = tmp_path / "ops"
    for f in starter_files("ops", "haproxy"):
        (target / f.path).parent.mkdir(parents=True, exist_ok=True)
        (target / f.path).write_text(f.text)
    written = sorted((target / "playbooks").glob("*.yml"))
    assert [p.name for p in written] == ["app-server.yml", "database.yml", "deploy.yml", "proxy-host.yml"]
    done = ansible_playbook(tmp_path, "--syntax-check", *map(str, written))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("playbook: ") == len(written), done.stdout


def test_syntax_check_can_fail_on_an_unresolvable_name(tmp_path: Path) -> None:
    # The check above proves something only if ansible-playbook refuses a name it cannot resolve.
    (tmp_path / "p.yml").write_text("- hosts: all\n  tasks:\n    - opsconsole.service: {name: x, state: stopped}\n")
    done = ansible_playbook(tmp_path, "--syntax-check", str(tmp_path / "p.yml"))
    assert done.returncode != 0 and "couldn't resolve module/action 'opsconsole.service'" in done.stdout + done.stderr


FILES_PLAY = """
    - hosts: web
      tasks:
        - {name: dir, MOD_FILE: {path: conf, state: directory, mode: "0750"}}
        - {name: text, MOD_COPY: {content: "hello {{ inventory_hostname }}\\n", dest: conf/a.txt, mode: "0640"}}
        - {name: read, MOD_COMMAND: cat conf/a.txt, register: out}
        - {name: say, MOD_DEBUG: {msg: "{{ out.stdout }}"}}
    """


@pytest.mark.parametrize("prefix", ["ansible.builtin.", "ansible.legacy."])
async def test_an_fqcn_is_the_same_module_as_its_short_name(rig: Rig, prefix: str) -> None:
    def play(p: str) -> str:
        return (FILES_PLAY.replace("MOD_FILE", f"{p}file").replace("MOD_COPY", f"{p}copy")
                .replace("MOD_COMMAND", f"{p}command").replace("MOD_DEBUG", f"{p}debug"))

    short, full = rig.hosts(1, group="web"), [h for h in rig.hosts(2, group="web")][1:]
    first = await rig.run(play(""), short)
    statuses_short = rig.statuses("web-1")
    second = await rig.run(play(prefix), full)
    assert first.ok and second.ok, (first.failures, second.failures)
    assert rig.statuses("web-2") == statuses_short == {"dir": "changed", "text": "changed", "read": "changed",
                                                       "say": "ok"}
    for name in ("web-1", "web-2"):
        conf = rig.root(name) / "conf"
        assert (conf.stat().st_mode & 0o777, (conf / "a.txt").stat().st_mode & 0o777) == (0o750, 0o640)
        assert (conf / "a.txt").read_text() == f"hello {name}\n"


@pytest.fixture
def health_server() -> Iterator[str]:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_our_collection_runs_under_ansible_playbook(tmp_path: Path, health_server: str) -> None:
    # opsconsole.builtin.health means the same under ansible-playbook: it waits for the status, or fails.
    (tmp_path / "collections").symlink_to(ROOT / "playbooks" / "collections")
    (tmp_path / "p.yml").write_text(f"""
- hosts: all
  gather_facts: false
  tasks:
    - opsconsole.builtin.health: {{url: "{health_server}/health", timeout: 5s}}
    - opsconsole.builtin.health: {{url: "{health_server}/other", timeout: 1}}
""")
    done = ansible_playbook(tmp_path, str(tmp_path / "p.yml"))
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert f"{health_server}/health answered 200" not in out  # not shown without -v; the counts say it
    assert "ok=1" in out and "failed=1" in out, out
    assert f"{health_server}/other: timed out after 1s (last: status 503)" in out, out

    # opsconsole.builtin.service runs under ansible-playbook as natively: pid file and log under host_root,
    # the process in its own session; started again changes nothing; stopped kills its group.
    root = tmp_path / "root"
    (tmp_path / "s.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                    "    - opsconsole.builtin.service: {name: web, state: '{{ want }}', command: "
                                    "'echo up; exec sleep 300', chdir: run}\n")
    (root / "run").mkdir(parents=True)
    counts = []
    for want in ("started", "started", "stopped", "stopped"):
        done = ansible_playbook(tmp_path, "-e", f"host_root={root}", "-e", f"want={want}", str(tmp_path / "s.yml"))
        assert done.returncode == 0, done.stdout + done.stderr
        counts.append("changed=1" in done.stdout)
        if want == "started":
            pid = int((root / "run" / "web.pid").read_text())
            assert Path(f"/proc/{pid}/cwd").resolve() == root / "run"  # chdir is relative to host_root
            assert os.getsid(pid) == pid  # its own session: stopping it kills its group
    assert counts == [True, False, True, False]
    assert not (root / "run" / "web.pid").exists() and not Path(f"/proc/{pid}").exists()
    assert (root / "log" / "web.log").read_text() == "up\n"


def test_the_collection_service_is_up_once_it_listens_and_a_quick_death_fails(tmp_path: Path) -> None:
    # As the native module: with `port`, a service that listens is up at once (not waited out for 0.2 s); one
    # that dies at once fails with its log; one alive but not listening yet is up after the 0.2 s.
    (tmp_path / "collections").symlink_to(ROOT / "playbooks" / "collections")
    root = tmp_path / "root"
    root.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # -I -S: the listener must be up within the module's 0.2 s, so it starts without site-packages (~10 ms).
    listen = (f"exec {sys.executable} -I -S -c 'import socket, time; s = socket.socket(); "
              f"s.bind((\"127.0.0.1\", {port})); s.listen(); time.sleep(300)'")
    cases = {"listens": listen, "dies": "echo no config; exit 3", "quiet": "exec sleep 300"}
    out = {}
    try:
        for name, command in cases.items():
            (tmp_path / f"{name}.yml").write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
                {"opsconsole.builtin.service": {"name": name, "state": "started", "command": command, "port": port}}]}]))
            done = ansible_playbook(tmp_path, "-v", "-e", f"host_root={root}", str(tmp_path / f"{name}.yml"))
            out[name] = (done.returncode, done.stdout + done.stderr)
            _end_sessions(root, "listens")  # the port free again for the next case
    finally:
        _end_sessions(root, *cases)
    assert out["listens"][0] == 0 and "running (pid " in out["listens"][1] \
        and f"listening on {port}" in out["listens"][1], out["listens"][1]
    assert out["dies"][0] != 0 and "exited right after starting" in out["dies"][1] \
        and "no config" in out["dies"][1], out["dies"][1]
    assert out["quiet"][0] == 0 and "quiet running (pid " in out["quiet"][1] \
        and "listening on" not in out["quiet"][1], out["quiet"][1]


def _end_sessions(root: Path, *names: str) -> None:
    """Kill the sessions the named services lead (those still alive and leading theirs) and wait until they are gone."""
    for name in names:
        pid_file = root / "run" / f"{name}.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else 0
        try:  # ours only: a live session leader working in the host root (a dead one's pid may be reused)
            if not pid or os.getsid(pid) != pid or Path(f"/proc/{pid}/cwd").resolve() != root.resolve():
                continue
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            continue
        deadline = time.monotonic() + 10
        while (fields := stat_fields(pid)) is not None and fields[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
