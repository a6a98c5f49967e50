"""The command language: every front end parses lines into the same command objects."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opsconsole.engine.commands import (
    CommandError,
    Deploy,
    Names,
    Run,
    Sleep,
    Status,
    WaitHealthy,
    command_classes,
    parse_command,
)

NAMES = Names(apps=("itrust", "checkbox"), groups=("itrust", "db"), hosts=("itrust-1", "itrust-2", "db1"))


@pytest.mark.parametrize("line, expected", [
    ("status", Status()),
    ("status itrust", Status(app="itrust")),
    ("deploy itrust", Deploy(app="itrust")),
    ("deploy itrust --hosts itrust-1,itrust-2 --version abc123", Deploy(app="itrust", hosts=("itrust-1", "itrust-2"), version="abc123")),
    ("run itrust -- echo 'hi there' | wc -c", Run(target="itrust", command="echo 'hi there' | wc -c")),
    # A tab beside `--` (a script indented with tabs) once ran only `echo`, the rest dropped.
    ("run itrust --\techo hi there", Run(target="itrust", command="echo hi there")),
    ("run\titrust\t--\techo hi there", Run(target="itrust", command="echo hi there")),
    ("deploy itrust --version '--'", Deploy(app="itrust", version="--")),  # its text() must parse back
    ("run itrust -- echo 'a -- b' # kept", Run(target="itrust", command="echo 'a -- b' # kept")),
    ("wait healthy itrust 30s", WaitHealthy(app="itrust", timeout=30.0)),
    ("wait healthy itrust 1m30s", WaitHealthy(app="itrust", timeout=90.0)),
    ("sleep 250ms", Sleep(seconds=0.25)),
    ("sleep 2   # a comment", Sleep(seconds=2.0)),
])
def test_parse(line: str, expected: object) -> None:
    command = parse_command(line, NAMES)
    assert command == expected
    # the canonical text parses back to the same command: journals replay as scripts
    assert parse_command(command.text(), NAMES) == command


@pytest.mark.parametrize("line, words", [
    ("", "empty command"),
    ("deploi itrust", "unknown command 'deploi' (did you mean deploy?); valid commands: abort, apply, build"),
    ("deploy", "an app name is required; apps: itrust, checkbox"),
    ("deploy nosuch", "unknown app 'nosuch'; apps: itrust, checkbox"),
    ("deploy itrust --hosts nosuch", "unknown host 'nosuch'"),
    ("deploy itrust --fast", "unknown option '--fast'; options: --hosts, --version"),
    ("deploy itrust --version", "--version needs a value"),
    ("wait healthy itrust", "a timeout is required"),
    ("wait healthy itrust soon", "'soon' is not a duration"),
    ("wait sick itrust 3s", "wait healthy APP TIMEOUT"),
    ("run nosuch -- ls", "unknown group or host 'nosuch'; groups: itrust, db"),
    ("run itrust ls", "the command goes after ' -- '"),
    ("run itrust ls -- x", "the command goes after ' -- '"),
    # A `--` in a comment is no marker: the commented-out tail once ran.
    ("run itrust # a note -- rm -rf /tmp/x", "the command goes after ' -- '"),
    # An empty $HOSTS in a templated script once deployed to the whole group.
    ("deploy itrust --hosts ''", "--hosts needs host names"),
    # Digits str.isdigit() takes and int() does not (a traceback), or reads as another number.
    ("roll itrust --batch ²", "--batch"),
    ("roll itrust --max-fail ²", "--max-fail"),
    ("canary itrust weight ٣", "weight"),
    ("roll itrust --max-fail " + "9" * 5000, "--max-fail"),
    ("deploy itrust --hosts ,", "--hosts needs host names"),
    ("status itrust extra", "unexpected 'extra'"),
    ("sleep 'unclosed", "cannot split the line"),
])
def test_bad_lines_say_what_is_valid(line: str, words: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(line, NAMES)
    assert words in str(info.value)


def test_every_verb_has_usage_and_summary() -> None:
    for cls in command_classes():
        assert cls.usage.startswith(cls.verb) and cls.summary


def test_engine_never_imports_textual() -> None:
    # Only Textual is checked: httpx itself imports rich for its CLI whenever click is installed.
    code = "import sys, opsconsole.engine, opsconsole.headless; print(sorted(m for m in sys.modules if m.startswith('textual')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("batch", ["0", "x", "101%", "12.5%", "-1"])
def test_batch_is_refused_by_one_rule_in_the_command_and_the_plan(batch: str) -> None:
    from opsconsole.rollouts.plan import PlanError, make_plan

    with pytest.raises(CommandError) as by_command:
        parse_command(f"roll itrust --batch {batch}", NAMES)
    with pytest.raises(PlanError) as by_plan:
        make_plan("itrust", ["itrust-1", "itrust-2"], version="v", commit="c", artifact="", batch=batch)
    assert str(by_plan.value) in str(by_command.value)


def test_batch_sizes() -> None:
    from opsconsole.rollouts.batch import batch_size

    assert [batch_size(b, 10) for b in (None, "3", "25%", "1%", "100%")] == [1, 3, 2, 1, 10]
