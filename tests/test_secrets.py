"""Secrets stay secret: configured secrets and a no_log task's environment lookups are masked in the
journal, every file under the state dir, headless and --json output, `history`, and the console's screen.

Real processes throughout: the console runs headless as a subprocess on a local fleet, the playbook's
commands and `run` really run and print the secrets, and the console is driven through Textual's Pilot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, kill_services, write_config
from opsconsole.config.loader import load_config
from opsconsole.config.secrets import fill_secrets
from opsconsole.engine.engine import Engine
from opsconsole.redact import MASK, NO_LOG, Redactor
from opsconsole.yamlsource import SourceError
from opsconsole.ui.app import OpsConsoleApp
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.host_detail import HostDetailScreen
from opsconsole.ui.result_view import ResultScreen
from opsconsole.ui.testing import screen_text

ENV_SECRET = "env-pw-Zq81xv"  # DB password, in the console's environment (secrets: {env: …})
FILE_SECRET = "file-token-Kp55dw"  # an API token, in a 0600 file (secrets: {file: …})
LOOKUP_SECRET = "lookup-pw-Hh27ru"  # read by a no_log task with lookup('env', …), configured nowhere
TYPED_SECRET = "hunter2-Mm93tb"  # typed by the operator as PGPASSWORD=… and configured nowhere
CURL_SECRET = "curlpw-Tt61qa"  # typed as `curl -u user:…`, configured nowhere
EVERY_SECRET = (ENV_SECRET, FILE_SECRET, LOOKUP_SECRET, TYPED_SECRET, CURL_SECRET)

PLAYBOOK = """\
- hosts: vault
  tasks:
    - name: the app's env file, from a template using a configured secret
      template:
        src: app.env.j2
        dest: "{{ out_dir }}/app.env"
    - name: the same file on the host's own disk (a local host's root is its disk, under the state dir)
      template:
        src: app.env.j2
        dest: conf/app.env
    - name: a task that reads a password from the environment
      no_log: true
      shell: "echo {{ lookup('env', 'LOOKUP_PW') | quote }}"
      register: read
    - name: what it read, shown by a task without no_log
      debug:
        msg: "it read {{ read.stdout }}"
    - name: a task that runs with a password and fails
      no_log: true
      shell: >
        echo "connecting with {{ lookup('env', 'LOOKUP_PW') }}";
        echo "refused for {{ lookup('env', 'LOOKUP_PW') }}" >&2; exit 3
"""


def setup(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A local one-host group provisioned by a playbook that uses secrets, and the environment to run it."""
    out = tmp / "out"
    out.mkdir()
    (tmp / "app.env.j2").write_text("DB_PASSWORD={{ secrets.db_password }}\nAPI_TOKEN={{ secrets.api_token }}\n")
    (tmp / "vault.yml").write_text(PLAYBOOK)
    token = tmp / "api_token"
    token.write_text(FILE_SECRET + "\n")
    token.chmod(0o600)
    cfg = tmp / "opsconsole.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: secrets
        state_dir: {tmp / 'state'}
        secrets:
          db_password: {{env: TEST_DB_PASSWORD}}
          api_token: {{file: {token}}}
        groups:
          vault:
            provider: local
            count: 1
            provision: {tmp / 'vault.yml'}
            vars:
              out_dir: {out}
        """))
    env = {**os.environ, "TEST_DB_PASSWORD": ENV_SECRET, "LOOKUP_PW": LOOKUP_SECRET}
    return cfg, env


SCRIPT = (
    "provision vault\n"
    f"run vault -- echo {{{{ secrets.db_password | quote }}}} > {{out}}/run.txt; echo db is {{{{ secrets.db_password }}}}; exit 5\n"
    f"run vault -- echo typed {FILE_SECRET}\n"
    f"run vault -- PGPASSWORD={TYPED_SECRET} true\n"
    f"run vault -- echo would run: curl -u admin:{CURL_SECRET} http://127.0.0.1:9/\n"
)


def opsconsole(cfg: Path, env: dict[str, str], *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), *args], input=script,
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def leaks(text: str, secrets: tuple[str, ...] = EVERY_SECRET) -> list[str]:
    return [s for s in secrets if s in text]


def files_with_secrets(state_dir: Path) -> list[str]:
    found = []
    for path in state_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in EVERY_SECRET if s.encode() in data]
    return found


def host_file_secrets(state_dir: Path) -> list[str]:
    """What files_with_secrets finds in the one file the playbook writes on the local host's own disk (README:
    a local host's root is its disk, not the console's record): the configured secrets its template uses."""
    return [f"{state_dir / 'hosts' / 'vault-1' / 'conf' / 'app.env'}: {s}" for s in (ENV_SECRET, FILE_SECRET)]


def test_secrets_never_shown_nor_written(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path)
    out = tmp_path / "out"
    script = SCRIPT.replace("{out}", str(out))
    try:
        plain = opsconsole(cfg, env, "--script", "-", "--keep-going", script=script)
        as_json = opsconsole(cfg, env, "--script", "-", "--keep-going", "--json", script=script)
    finally:
        kill_services(tmp_path / "state")
    # The secrets were really used: by the template, by `run`, by the no_log task (which failed).
    assert (out / "app.env").read_text() == f"DB_PASSWORD={ENV_SECRET}\nAPI_TOKEN={FILE_SECRET}\n"
    assert (out / "run.txt").read_text() == ENV_SECRET + "\n"
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert "a task that runs with a password and fails" in plain.stdout
    assert f"exit code 3 {NO_LOG}" in plain.stdout
    assert f"db is {MASK}" in plain.stdout and f"typed {MASK}" in plain.stdout
    assert f"it read {MASK}" in plain.stdout  # a no_log task's lookup('env', …) value is masked from then on
    assert not leaks(plain.stdout + plain.stderr), plain.stdout

    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    finished = [e for e in events if e["event"] == "TaskFinished" and e["status"] == "failed"]
    assert finished and finished[0]["message"].endswith(NO_LOG)
    assert not [e for e in events if e["event"] == "OutputLine" and "connecting" in e["line"]]
    assert not leaks(as_json.stdout + as_json.stderr), as_json.stdout

    state = tmp_path / "state"
    journal = (state / "journal.jsonl").read_text()
    assert f"PGPASSWORD={MASK} true" in journal
    assert not leaks(journal), journal
    # Nothing the console writes holds a secret. A local host's root is that host's disk, not the console's
    # record: the file the playbook put there holds the secrets, as it would on a real server (README).
    host_file = state / "hosts" / "vault-1" / "conf" / "app.env"
    assert host_file.read_text() == f"DB_PASSWORD={ENV_SECRET}\nAPI_TOKEN={FILE_SECRET}\n"
    assert files_with_secrets(state) == host_file_secrets(state)

    for args in (("history",), ("history", "--as-script"), ("history", "--json")):
        shown = opsconsole(cfg, env, *args)
        assert shown.returncode == 0 and "provision vault" in shown.stdout, shown.stderr
        assert not leaks(shown.stdout + shown.stderr), (args, shown.stdout)
    script_lines = opsconsole(cfg, env, "history", "--as-script").stdout.splitlines()
    assert f"run vault -- PGPASSWORD={MASK} true" in script_lines
    assert f"run vault -- echo typed {MASK}" in script_lines
    assert f"run vault -- echo would run: curl -u admin:{MASK} http://127.0.0.1:9/" in script_lines


async def test_console_screen_shows_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, env = setup(tmp_path)
    monkeypatch.setenv("TEST_DB_PASSWORD", ENV_SECRET)
    monkeypatch.setenv("LOOKUP_PW", LOOKUP_SECRET)
    engine = Engine(load_config(cfg))
    engine.prepare()
    app = OpsConsoleApp(engine)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            seen: list[str] = []

            async def typed(line: str) -> None:
                await pilot.press("colon", *line, "enter")
                for _ in range(500):
                    if isinstance(app.screen, ConfirmScreen):
                        seen.append(screen_text(app))
                        await pilot.click("#confirm")
                        return
                    await pilot.pause(0.02)
                raise AssertionError(f"no confirm dialog for {line!r}")

            await typed(f"run vault -- echo db is {{{{ secrets.db_password }}}} and {{{{ secrets.api_token }}}}")
            # `run` shows its output in a result view until Esc: that screen must mask the secrets too.
            for _ in range(500):
                if isinstance(app.screen, ResultScreen) and f"db is {MASK} and {MASK}" in screen_text(app):
                    break
                await pilot.pause(0.02)
            seen.append(screen_text(app))
            assert f"db is {MASK} and {MASK}" in seen[-1], seen[-1]
            await pilot.press("escape")
            await typed("provision vault")

            async def shows(words: str) -> bool:
                for _ in range(500):
                    text = screen_text(app)
                    seen.append(text)
                    if words in text:
                        return True
                    await pilot.pause(0.02)
                return False

            assert await shows("✘ provision vault"), seen[-1]
            status_line = seen[-1]
            await pilot.press("enter")  # the fleet's one host: its detail, with its output and task results
            assert isinstance(app.screen, HostDetailScreen)
            assert await shows(f"| db is {MASK} and {MASK}"), seen[-1]
            assert await shows(NO_LOG), seen[-1]
            screenshot = app.export_screenshot()
        assert "exit code 3" in status_line
        assert not [leak for text in seen for leak in leaks(text)]
        assert not leaks(screenshot)
        assert files_with_secrets(tmp_path / "state") == host_file_secrets(tmp_path / "state")
    finally:
        kill_services(tmp_path / "state")


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path)
    (tmp_path / "api_token").chmod(0o644)
    proc = opsconsole(cfg, env, "--check")
    assert proc.returncode == 2
    assert f"{cfg}:5: secrets.api_token.file:" in proc.stderr and "open to others (mode 0644)" in proc.stderr
    assert not (tmp_path / "state").exists()
    missing = opsconsole(cfg, {k: v for k, v in env.items() if k != "TEST_DB_PASSWORD"}, "--check")
    assert missing.returncode == 2 and "environment variable TEST_DB_PASSWORD is not set" in missing.stderr


def test_an_admin_token_file_open_to_others_fails_the_check(tmp_path: Path) -> None:
    """The proxy's token steers the traffic: refused by `--check` as a secret file is, not first by the
    traffic command that reads it."""
    cfg = write_config(tmp_path, extra="proxy:\n  admin: {listen: 127.0.0.1:0, token_file: token}\n"
                                        "  apps:\n    itrust:\n      listen: 127.0.0.1:0\n"
                                        "      pools: {stable: {group: itrust, weight: 100}}\n")
    (tmp_path / "token").write_text("t" * 32 + "\n")
    (tmp_path / "token").chmod(0o644)
    proc = opsconsole(cfg, dict(os.environ), "--check")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "proxy.admin.token_file:" in proc.stderr and "open to others (mode 0644)" in proc.stderr, proc.stderr
    assert f"chmod 600 {tmp_path / 'token'}" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "token").chmod(0o600)
    assert opsconsole(cfg, dict(os.environ), "--check").returncode == 0


def test_redactor_masks_values_quoted_forms_and_secret_assignments() -> None:
    r = Redactor(["s3cret pass", "abc"])  # "abc" is too short to mask without masking ordinary text
    assert r.text("x 's3cret pass' y s3cret pass abc") == f"x {MASK} y {MASK} abc"
    assert r.command("run db -- PGPASSWORD=hunter2 AWS_SECRET_ACCESS_KEY='a b' HOME=/x psql") == \
        f"run db -- PGPASSWORD={MASK} AWS_SECRET_ACCESS_KEY={MASK} HOME=/x psql"


def test_run_fills_in_secrets_only() -> None:
    secrets = {"db": "a b'c"}
    line = "docker inspect -f '{{ .State.Status }}' x; echo {{ secrets.db | quote }} {{secrets.db}}"
    assert fill_secrets(line, secrets) == "docker inspect -f '{{ .State.Status }}' x; echo 'a b'\"'\"'c' a b'c"
    with pytest.raises(ValueError, match="no secret named 'nosuch' \\(secrets: db\\)"):
        fill_secrets("echo {{ secrets.nosuch }}", secrets)


@pytest.mark.parametrize("typed, shown, secret", [
    ("PASSWORD=typedA-1111 true", f"PASSWORD={MASK} true", "typedA-1111"),
    ("TOKEN=typedD-4444 SECRET=typedE-5555 x", f"TOKEN={MASK} SECRET={MASK} x", "typedE-5555"),
    ("mysql --password=pw-12345 -e x", f"mysql --password={MASK} -e x", "pw-12345"),
    ("mysql --password pw-23456", f"mysql --password {MASK}", "pw-23456"),
    ("mysql -uapp -ppw-34567 db", f"mysql -uapp -p{MASK} db", "pw-34567"),
    ("curl -s -u admin:pw-45678 http://x", f"curl -s -u admin:{MASK} http://x", "pw-45678"),
    ("curl -H 'Authorization: Bearer tok-56789' x", f"curl -H 'Authorization: Bearer {MASK}' x", "tok-56789"),
    ("psql postgres://app:pw-67890@db/app", f"psql postgres://app:{MASK}@db/app", "pw-67890"),
    ("tar -pxf a.tgz && cp -pR a b && sort -u a:b", "tar -pxf a.tgz && cp -pR a b && sort -u a:b", None),
])
def test_typed_credentials_are_masked_and_learned_but_ordinary_flags_are_not(typed: str, shown: str,
                                                                            secret: str | None) -> None:
    """The review's probes: bare PASSWORD=, --password, mysql -pX, curl -u, Authorization, URL userinfo."""
    r = Redactor()
    r.learn(typed)
    assert r.command(typed) == shown
    if secret is not None:
        assert r.text(f"error from {secret}") == f"error from {MASK}"  # learned: its output is masked too
    else:
        assert not r  # nothing was taken for a secret


def test_a_secret_is_masked_in_its_encoded_forms_and_line_by_line() -> None:
    key = "line-one-AAAA1111\nline-two-BBBB2222"
    r = Redactor(["p@ss w/rd+Xy9", key, 'jsön"Sec\\9'])
    assert r.text("postgres://app:p%40ss%20w%2Frd%2BXy9@db") == f"postgres://app:{MASK}@db"
    assert r.text("form=p%40ss+w%2Frd%2BXy9") == f"form={MASK}"
    assert r.text('{"pw": "js\\u00f6n\\"Sec\\\\9"}') == f'{{"pw": "{MASK}"}}'
    assert r.text("vault-1 | line-two-BBBB2222") == f"vault-1 | {MASK}"  # one line of a multi-line key


def test_a_file_read_by_a_no_log_task_is_learned(tmp_path: Path) -> None:
    from opsconsole.playbook.templating import LOOKED_UP, render_string

    f = tmp_path / "pw"
    f.write_text("file-secret-8080\n")
    seen: list[str] = []
    token = LOOKED_UP.set(seen)
    try:
        assert render_string(f"{{{{ lookup('file', '{f}') }}}}", {}) == "file-secret-8080"
    finally:
        LOOKED_UP.reset(token)
    assert seen == ["file-secret-8080"]


def test_a_secret_too_short_to_mask_is_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_PW", "k9Z")
    cfg = tmp_path / "opsconsole.yaml"
    cfg.write_text(f"project: p\nstate_dir: {tmp_path / 'state'}\nsecrets:\n  pin: {{env: SHORT_PW}}\n"
                   "groups:\n  g: {provider: local, count: 1}\n")
    with pytest.raises(SourceError, match="shorter than 4 characters") as info:
        load_config(cfg)
    assert "k9Z" not in str(info.value) and ":4" in str(info.value)


async def test_a_confirm_dialog_never_shows_a_typed_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsconsole.engine.commands import parse_command

    cfg, _ = setup(tmp_path)
    monkeypatch.setenv("TEST_DB_PASSWORD", ENV_SECRET)
    engine = Engine(load_config(cfg))
    text = await engine.preview(parse_command("run vault -- PGPASSWORD=typed-Pw-4242 psql", engine.names))
    assert "typed-Pw-4242" not in text and f"PGPASSWORD={MASK}" in text


async def test_a_typed_credential_is_never_on_screen_nor_in_history_when_cancelled_or_mistyped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsconsole.ui.command_line import CommandLine
    from opsconsole.ui.status_line import StatusLine

    cfg, _ = setup(tmp_path)
    monkeypatch.setenv("TEST_DB_PASSWORD", ENV_SECRET)
    engine = Engine(load_config(cfg))
    engine.prepare()
    app = OpsConsoleApp(engine)
    typed = "hunter2"  # configured nowhere: only the way it is typed says it is a credential
    seen: list[str] = []

    def look() -> str:
        notices = " ".join(f"{n.title} {n.message}" for n in app._notifications)
        text = f"{screen_text(app)}\n{notices}\n{app.query_one(StatusLine).render()}"
        seen.append(text)
        return text

    async def until(what: str) -> None:
        for _ in range(500):
            if what in look():
                return
            await pilot.pause(0.02)
        raise AssertionError(f"never shown: {what!r}\n{seen[-1]}")

    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.press("colon", *f"run vault -- curl -u admin:{typed} http://127.0.0.1:9/", "enter")
            for _ in range(500):
                if isinstance(app.screen, ConfirmScreen):
                    break
                await pilot.pause(0.02)
            look()
            await pilot.click("#cancel")
            await until("cancelled: run vault")
            await pilot.press("colon", *f"rnu vault -- curl -u admin:{typed} http://127.0.0.1:9/", "enter")
            await until("cannot run")
            await pilot.press("colon", *f"run vaulf -- curl -u admin:{typed} http://127.0.0.1:9/", "enter")
            await until("✘ run vaulf")
            await pilot.press("colon", "up")
            line = app.query_one(CommandLine)
            history = list(line.history)
            look()
            recalled = line.value
    finally:
        kill_services(tmp_path / "state")
    assert "curl -u admin:***" in recalled and len(history) == 3
    assert not [text for text in seen + history if typed in text], [t for t in seen + history if typed in t][:1]


def test_a_secret_whose_env_holds_a_value_not_a_name_is_refused_unechoed(tmp_path: Path) -> None:
    """`env: hunter2-pasted-value` once came back as "environment variable hunter2-pasted-value is not set"."""
    cfg = tmp_path / "opsconsole.yaml"
    cfg.write_text(f"project: p\nstate_dir: {tmp_path / 'state'}\nsecrets:\n  pw: {{env: hunter2-pasted-value}}\n"
                   "groups:\n  g: {provider: local, count: 1}\n")
    with pytest.raises(SourceError, match="must name an environment variable") as info:
        load_config(cfg)
    assert "hunter2" not in str(info.value) and ":4" in str(info.value)

