"""uri and get_url mean what Ansible's mean: tests/playbooks/web/site.yml, against a real HTTP server on
127.0.0.1, run natively and by real ansible-playbook (`-c local`) leaves the same files with the same modes
and the same number of changes; a second run downloads nothing. Failures say what Ansible says."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from opsconsole.playbook.loader import load_playbook
from opsconsole.yamlsource import SourceError
from local_twin import ansible_run, native_run, tree
from test_playbooks import Rig, rig  # noqa: F401  (rig is a fixture)

SITE = Path(__file__).resolve().parent / "playbooks" / "web" / "site.yml"
APP = b"the app, version 3\n"


class _Handler(SimpleHTTPRequestHandler):
    """Files under the served directory; POST /echo answers 201 with the JSON it got; every GET is counted."""

    gets: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).gets.append(self.path)
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        got = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"got": got, "type": self.headers["Content-Type"]}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served" / "files"
    served.mkdir(parents=True)
    (served / "app.txt").write_bytes(APP)
    (served / "notes.txt").write_text("notes\n")
    (served / "info.json").write_text('{"version": "3.1"}')
    _Handler.gets = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(served.parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _vars(base: str, root: Path) -> dict[str, str]:
    return {"host_root": str(root), "base": base, "app_sha256": hashlib.sha256(APP).hexdigest()}


async def native(rig: Rig, path: Path, extra: dict[str, str]) -> tuple[bool, int]:
    result, changed = await native_run(rig, path, extra)
    return result.ok, changed


def ansible(tmp_path: Path, extra: dict[str, str]) -> int:
    return ansible_run(tmp_path, SITE, extra)["changed"]


async def test_uri_and_get_url_leave_what_ansible_leaves_and_a_second_run_changes_nothing(
        rig: Rig, tmp_path: Path, server: str) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ok, changed_ours = await native(rig, SITE, _vars(server, ours))
    assert ok, rig.statuses("localhost")
    assert changed_ours == ansible(tmp_path, _vars(server, theirs))
    assert tree(ours) == tree(theirs)
    files = tree(ours)
    assert files["dl/app.txt"] == ("0o640", APP.decode())
    assert files["dl/notes.txt"][1] == "notes\n"  # dest a directory: the URL's file name
    assert files["dl/info"][1] == "3.1 200 application/json False\n"
    assert files["dl/echo"][1] == "201 demo 2\n"

    _Handler.gets = []
    assert (await native(rig, SITE, _vars(server, ours)))[1] == 0 == ansible(tmp_path, _vars(server, theirs))
    assert tree(ours) == tree(theirs)
    # As Ansible: a dest file that is there is not fetched again; into a directory, it is (and left alone).
    assert "/files/app.txt" not in _Handler.gets and _Handler.gets.count("/files/notes.txt") == 2, _Handler.gets


async def test_a_checksum_that_does_not_match_fails_and_writes_nothing(rig: Rig, tmp_path: Path, server: str) -> None:
    path = rig.playbook("""
        - hosts: all
          tasks:
            - name: fetch
              get_url: {url: "{{ base }}/files/app.txt", dest: "{{ host_root }}/app.txt", checksum: "sha256:00ff"}
        """)
    ok, _ = await native(rig, path, _vars(server, tmp_path / "root"))
    assert not ok
    [failed] = [e for e in rig.finished("localhost") if e.status == "failed"]
    assert f"The checksum for {tmp_path / 'root' / 'app.txt'} did not match 00ff; it was " \
           f"{hashlib.sha256(APP).hexdigest()}." in failed.message
    assert not (tmp_path / "root" / "app.txt").exists()


async def test_an_unexpected_status_or_no_answer_fails_the_task_saying_so(rig: Rig, tmp_path: Path,
                                                                         server: str) -> None:
    path = rig.playbook("""
        - hosts: all
          tasks:
            - name: missing
              uri: {url: "{{ base }}/files/nope"}
              ignore_errors: true
            - name: nobody
              uri: {url: "http://127.0.0.1:1/", timeout: 2}
        """)
    ok, _ = await native(rig, path, _vars(server, tmp_path / "root"))
    assert not ok
    messages = {e.task: e.message for e in rig.finished("localhost")}
    assert "Status code was 404 and not [200]" in messages["missing"]
    assert "Status code was -1 and not [200]: Request failed: ConnectError" in messages["nobody"]


@pytest.mark.parametrize("args, keypath, words", [
    ("{url: x, dest: y, checksum: 'crc:12'}", "get_url.checksum", "is not a checksum like sha256:HEX"),
    ("{url: x, status_code: [200, ok]}", "uri.status_code", "is not a status code or a list of them"),
    ("{url: x, return_content: maybe}", "uri.return_content", "is not a boolean"),
    ("{url: x, method: GET, validate: false}", "uri.validate", "unknown argument"),
])
def test_bad_arguments_are_refused_at_load(tmp_path: Path, args: str, keypath: str, words: str) -> None:
    module = keypath.split(".")[0]
    path = tmp_path / "p.yml"
    path.write_text(f"- hosts: all\n  tasks:\n    - name: t\n      {module}: {args}\n")
    with pytest.raises(SourceError) as info:
        load_playbook(path)
    assert str(info.value).startswith(f"{path}:4: plays[0].tasks[0].{keypath}: "), info.value
    assert words in str(info.value)
