"""Bad or hostile input met at the edges: a huge script line, credentials typed in a command, secret values
in a config error, NaN and infinite durations, files that are not UTF-8 (or start with a BOM), YAML merges."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.config.reader import MappingReader
from opsconsole.engine.commands import CommandError, Names, parse_command
from opsconsole.redact import MASK, Redactor
from opsconsole.units import parse_duration
from opsconsole.yamlsource import SourceError, load_yaml, parse_yaml
from tests.conftest import ROOT, write_config

NAMES = Names(apps=("itrust",), groups=("itrust",), hosts=("itrust-1",))


def opsconsole(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "opsconsole", *args], input=stdin, capture_output=True,
                          timeout=timeout, cwd=ROOT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


# -- credentials typed in a command ----------------------------------------------------------------------


@pytest.mark.parametrize("head, unit", [
    ("status ", "a"),      # the operator's: one long word (the scheme://user: pattern tried at every letter)
    ("", "a1"),            # letters and digits: a scheme may start at any letter
    ("", "x://"),          # many schemes, no user
    ("", "PASS"),          # a name with a secret word at every position, no `=`
    ("", "mysql "),        # many programs, no -p
    ("", "curl "),         # many programs, no -u
    ("curl -u ", "u"),     # a user with no `:`
])
def test_a_huge_line_is_scanned_for_credentials_in_linear_time(head: str, unit: str) -> None:
    # Doubling the line up to 200k characters, each size within a generous budget; the old patterns
    # took seconds by 16k characters and did not finish 100k in 20 s.
    for size in (12_500, 25_000, 50_000, 100_000, 200_000):
        line = head + unit * ((size - len(head)) // len(unit))
        redactor = Redactor()
        start = time.process_time()
        redactor.learn(line)  # as Engine.masked() does for every script line, twice
        shown = redactor.command(line)
        took = time.process_time() - start
        assert took < 1.0, f"{head!r} + {unit!r} × {len(line)} characters: {took:.2f} s"
        assert shown == line  # nothing in it looked like a credential


def test_a_huge_script_line_is_refused_quickly(demo_config: Path) -> None:
    line = "status " + "a" * 200_000
    proc = opsconsole("--config", str(demo_config), "--check", "--script", "-", stdin=line.encode(), timeout=30)
    assert proc.returncode == 2, proc.stderr[-500:]
    assert proc.stderr.startswith("opsconsole: <stdin>:1: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("typed, secret", [
    ("run itrust -- git clone https://deploy:gh-t0ken-abc@github.com/acme/app", "gh-t0ken-abc"),
    ("run itrust -- psql postgres://app:pg-pass-123@db:5432/app", "pg-pass-123"),
    ("run itrust -- curl http://x/ -o f; wget ftp://me:ftp-secret9@files/x", "ftp-secret9"),
    ("run itrust -- echo 1https://bob:bob-secret1@h", "bob-secret1"),   # the scheme begins at its first letter
    ("run itrust -- X=s3://k:s3-secret-key@bucket/p", "s3-secret-key"),
    ("run itrust -- curl -u admin:curl-pw-99 http://x/", "curl-pw-99"),
    ("run itrust -- mysql -h db -pmy-pw-123 app", "my-pw-123"),
    ("run itrust -- mysql mysql -u mysql -pmy-pw-456", "my-pw-456"),    # the program's name again on the line
    ("run itrust -- PGPASSWORD=pg-pw-789 psql -h db", "pg-pw-789"),
    ("run itrust -- curl -H 'Authorization: Bearer bearer-tok-1' http://x/", "bearer-tok-1"),
    ("run itrust -- app --password='two words' --verbose", "two words"),
    # password variables of database clients and tools
    ("run db -- MYSQL_PWD=my-sql-pw1 mysql -u root app", "my-sql-pw1"),
    ("run db -- export MYSQL_PWD='quoted pw'; mysqldump app", "quoted pw"),
    ("run db -- DB_PWD=db-pw-1234 ./migrate", "db-pw-1234"),
    ("run cache -- REDISCLI_AUTH=redis-pw-1 redis-cli ping", "redis-pw-1"),
    ("run cache -- REDIS_PASSWORD=redis-pw-2 ./start", "redis-pw-2"),
    ("run itrust -- AWS_SECRET_ACCESS_KEY=aws-key-123 aws s3 ls", "aws-key-123"),
    ("run itrust -- GITHUB_TOKEN=ghp-abc-123 gh release list", "ghp-abc-123"),
])
def test_credentials_in_a_command_are_still_masked(typed: str, secret: str) -> None:
    redactor = Redactor()
    redactor.learn(typed)
    shown = redactor.command(typed)
    assert secret not in shown and MASK in shown
    assert secret not in redactor.text(f"error: {secret} refused")  # learned: its output masks it too


def test_directory_variables_are_not_taken_for_passwords() -> None:
    typed = "run itrust -- PWD=/srv/app OLDPWD=/tmp ls"
    redactor = Redactor()
    redactor.learn(typed)
    assert redactor.command(typed) == typed


# -- secret values in config errors ----------------------------------------------------------------------


def test_a_secret_given_inline_is_not_echoed_in_the_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra="secrets:\n  db_password: hunter2-inline-secret\n")
    with pytest.raises(SourceError) as caught:
        load_config(cfg, check_files=False)
    message = str(caught.value)
    assert "hunter2" not in message
    line = cfg.read_text().splitlines().index("  db_password: hunter2-inline-secret") + 1
    assert message.startswith(f"{cfg}:{line}: secrets.db_password: must be a mapping, got str")


@pytest.mark.parametrize("yaml_text, read", [
    ("admin:\n  token_file: 12345678\n", lambda r: r.mapping("admin").str("token_file")),
    ("db:\n  password: [hunter2-in-a-list]\n", lambda r: r.mapping("db").str("password")),
    ("db:\n  passwords: [ok-one, 87654321]\n", lambda r: r.mapping("db").str_list("passwords")),
    ("ssh:\n  key: hunter2-a-key\n", lambda r: r.mapping("ssh").mapping("key")),
    ("app:\n  apiKey: hunter2-api-key\n", lambda r: r.mapping("app").plain_mapping("apiKey")),
    ("app:\n  auth: hunter2-auth\n", lambda r: r.mapping("app").str("auth", choices=("basic", "none"))),
])
def test_a_secret_looking_key_never_has_its_value_echoed(yaml_text: str, read) -> None:
    reader = MappingReader(parse_yaml(yaml_text, "c.yaml"), "c.yaml", "")
    with pytest.raises(SourceError) as caught:
        read(reader)
    message = str(caught.value)
    assert message.startswith("c.yaml:2: ") and "hunter2" not in message and "12345678" not in message
    assert "87654321" not in message


def test_an_ordinary_key_still_shows_the_value_at_fault() -> None:
    reader = MappingReader(parse_yaml("health:\n  status: ok\nkeymap:\n  roll: 42\n", "c.yaml"), "c.yaml", "")
    with pytest.raises(SourceError, match=r"c.yaml:2: health.status: must be a whole number, got str 'ok'"):
        reader.mapping("health").int("status")
    with pytest.raises(SourceError, match=r"c.yaml:4: keymap.roll: must be a string, got int 42"):
        reader.mapping("keymap").str("roll")


# -- durations and numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "nan", "NaN", "inf", "-inf", "infinity", ".inf", math.nan, math.inf, "1e300", 1e300, "8761h", "1000000000",
    pytest.param(10**400, id="10**400"), pytest.param("9" * 400, id="'9'*400"),
    pytest.param("9" * 400 + "s", id="'9'*400+'s'"),
])
def test_non_finite_and_absurd_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration|at most a year|negative"):
        parse_duration(text)  # type: ignore[arg-type]


def test_ordinary_durations_still_read() -> None:
    assert [parse_duration(t) for t in ("2.5", "30s", "250ms", "1m30s", "1h", 0, 3, 2.5, "8760h")] == \
        [2.5, 30.0, 0.25, 90.0, 3600.0, 0.0, 3.0, 2.5, 365 * 24 * 3600.0]


@pytest.mark.parametrize("value, words", [
    (".nan", "nan is not a duration"),
    ("nan", "'nan' is not a duration"),
    (".inf", "inf is not a duration"),
    ("1e300", "'1e300' is too long"),
])
def test_a_config_duration_that_is_not_finite_names_its_line(tmp_path: Path, value: str, words: str) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("  interval: 0.5s", f"  interval: {value}"))
    with pytest.raises(SourceError) as caught:
        load_config(cfg, check_files=False)
    assert str(caught.value).startswith(f"{cfg}:4: heartbeat.interval: {words}")


@pytest.mark.parametrize("line", ["sleep nan", "sleep inf", "sleep 1e300", "wait healthy itrust nan",
                                  "wait healthy itrust 1e300"])
def test_a_script_duration_that_is_not_finite_is_refused(line: str) -> None:
    with pytest.raises(CommandError, match="not a duration|at most a year"):
        parse_command(line, NAMES)


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_a_config_number_must_be_finite(value: str) -> None:
    reader = MappingReader(parse_yaml(f"canary:\n  max_error_rate: {value}\n", "c.yaml"), "c.yaml", "")
    with pytest.raises(SourceError, match=r"c.yaml:2: canary.max_error_rate: must be a finite number"):
        reader.mapping("canary").float("max_error_rate", minimum=0.0, maximum=1.0)


# -- files that are not UTF-8, or start with a BOM ---------------------------------------------------------


def test_a_config_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    text = cfg.read_text().replace("project: test", "project: test  # café")
    cfg.write_bytes(text.encode("latin-1"))
    offset = text.index("é")
    with pytest.raises(SourceError, match=rf":1: not UTF-8 text: byte 0xe9 at offset {offset}"):
        load_yaml(cfg)
    proc = opsconsole("--config", str(cfg), "--check")
    assert proc.returncode == 2
    assert proc.stderr == f"opsconsole: {cfg}:1: not UTF-8 text: byte 0xe9 at offset {offset} (save the file as UTF-8)\n"


def test_a_script_that_is_not_utf8_is_a_one_line_error(demo_config: Path, tmp_path: Path) -> None:
    script = tmp_path / "latin1.script"
    script.write_bytes("status\n# café\n".encode("latin-1"))  # é is byte 12, on line 2
    proc = opsconsole("--config", str(demo_config), "--check", "--script", str(script))
    assert proc.returncode == 2
    assert proc.stderr == f"opsconsole: {script}:2: not UTF-8 text: byte 0xe9 at offset 12 (save the file as UTF-8)\n"
    piped = opsconsole("--config", str(demo_config), "--check", "--script", "-", stdin=b"status\n\xff\n")
    assert piped.returncode == 2 and piped.stderr.startswith("opsconsole: <stdin>:2: not UTF-8 text: byte 0xff")


def test_a_script_starting_with_a_bom_runs(demo_config: Path, tmp_path: Path) -> None:
    script = tmp_path / "bom.script"
    script.write_bytes(b"\xef\xbb\xbfstatus\n")
    proc = opsconsole("--config", str(demo_config), "--check", "--script", str(script))
    assert proc.returncode == 0, proc.stderr
    piped = opsconsole("--config", str(demo_config), "--check", "--script", "-", stdin=b"\xef\xbb\xbfstatus\n")
    assert piped.returncode == 0, piped.stderr


# -- YAML --------------------------------------------------------------------------------------------------


def test_a_key_written_beside_a_merge_overrides_the_merged_one() -> None:
    data = parse_yaml("a: &r\n  health: 60s\n  drain: 30s\n"
                      "b:\n  <<: *r\n  drain: 5s\n"
                      "c:\n  drain: 1s\n  <<: *r\n", "c.yaml")
    assert data["b"] == {"health": "60s", "drain": "5s"} and data["b"].line_of("drain") == 6
    assert data["b"].line_of("health") == 2  # a merged key's line is where it is written
    assert data["c"] == {"drain": "1s", "health": "60s"}
    # As PyYAML reads it
    import yaml
    assert yaml.safe_load("a: &r {x: 1, y: 1}\nb: &s {x: 2, z: 2}\nc: {<<: [*r, *s], y: 3}\n")["c"] == \
        parse_yaml("a: &r {x: 1, y: 1}\nb: &s {x: 2, z: 2}\nc: {<<: [*r, *s], y: 3}\n", "c.yaml")["c"] == \
        {"x": 1, "y": 3, "z": 2}


@pytest.mark.parametrize("text, line, words", [
    ("a: 1\na: 2\n", 2, "a: duplicate key"),
    ("r: &r {x: 1}\nb:\n  <<: *r\n  x: 2\n  x: 3\n", 5, "x: duplicate key"),   # overriding once is not twice
    ("r: &r {x: 1}\nb:\n  <<: *r\n  <<: *r\n", 4, "<<: duplicate key"),
    ("b:\n  <<: 5\n", 2, "<<: a merge takes a mapping or a list of mappings"),
    ("b:\n  <<: [{x: 1}, 3]\n", 2, "<<: a merge takes a mapping or a list of mappings"),
    ("a: &x\n  b: *x\n", 1, "this mapping or list holds an alias to itself"),  # the line of its anchor
    ("a: &x [1, *x]\n", 1, "this mapping or list holds an alias to itself"),
    pytest.param("a: " + "9" * 5000 + "\n", 1, "cannot read this value", id="an int of 5000 digits"),
])
def test_bad_yaml_is_refused_with_its_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_yaml(text, "c.yaml")
    assert str(caught.value).startswith(f"c.yaml:{line}: {words}")


def _laughs(levels: int, fan: int = 10) -> str:
    """Nested aliases, each level `fan` uses of the one before: fan**levels values from a few lines."""
    lines = ['l0: &l0 "lol"']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_nested_aliases_that_expand_past_the_budget_are_refused_fast() -> None:
    """Billion laughs: nine levels of ten would build 10^9 values (the console hung); refused in well under a
    second, naming the line where the budget ran out."""
    started = time.process_time()
    with pytest.raises(SourceError) as caught:
        parse_yaml(_laughs(9), "c.yaml")
    assert time.process_time() - started < 5  # a budget of 1,000,000 values: about 0.7 s here
    message = str(caught.value)
    assert "aliases expand to over 1,000,000 values" in message, message
    # the line named is one that uses the aliases (`lN: &lN [*lM, ...]`), not the anchor of the value they name
    line = int(message.split(":")[1])
    assert "*l" in _laughs(9).splitlines()[line - 1], message
    # what real files do with aliases stays as it was: a block shared by many hosts, a few levels deep
    data = parse_yaml(_laughs(4), "c.yaml")  # 10,000 values
    assert len(data["l4"]) == 10 and data["l4"][9][9][9] == ["lol"] * 10


def test_a_defaults_block_merged_into_twenty_thousand_hosts_is_read() -> None:
    """The budget counts values, not keys: 25 defaults merged into each of 20,000 hosts is 500,000 of them."""
    defaults = "defaults: &d {" + ", ".join(f"k{i}: {i}" for i in range(25)) + "}\n"
    hosts = "hosts:\n" + "".join(f"  - {{<<: *d, name: h{i}}}\n" for i in range(20_000))
    data = parse_yaml(defaults + hosts, "hosts.yaml")
    assert len(data["hosts"]) == 20_000 and data["hosts"][-1] == {**{f"k{i}": i for i in range(25)}, "name": "h19999"}
