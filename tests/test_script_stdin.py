"""A script sent on /bin/sh's stdin runs whole or not at all (opsconsole/transport/script_stdin.py).

Before, a payload cut short (a dropped channel) ran the part that arrived — `rm -rf /srv/app/releases/old-12`
cut to `rm -rf /srv/app/releases/` — and exited 0.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsconsole.transport.script_stdin import shell_for


def run(script: str, stdin: bytes | None = None, keep: int | None = None) -> subprocess.CompletedProcess[bytes]:
    argv, payload = shell_for(script, stdin)
    if keep is not None:
        payload = payload[:keep]
    return subprocess.run(argv, input=payload, capture_output=True, timeout=30)


@pytest.mark.parametrize("with_input", [False, True])
def test_a_script_cut_short_runs_nothing(tmp_path: Path, with_input: bool) -> None:
    victim = tmp_path / "releases" / "old-12"
    victim.mkdir(parents=True)
    keep_me = tmp_path / "releases" / "keep"
    keep_me.mkdir()
    script = f"touch {tmp_path}/ran; rm -rf {tmp_path}/releases/old-12"
    stdin = b"" if with_input else None
    _, payload = shell_for(script, stdin)
    for cut in range(1, len(payload)):
        done = run(script, stdin, keep=cut)
        ran = (tmp_path / "ran").exists()
        if ran:  # whole or not at all: only a cut of what follows the script's end (its last newline) may run it
            assert done.returncode == 0 and not victim.exists() and cut == len(payload) - 1, (cut, done)
            (tmp_path / "ran").unlink()
            victim.mkdir()
        else:
            assert done.returncode != 0, f"a payload cut to {cut} bytes ran nothing and said it succeeded: {done}"
        assert keep_me.exists()
    assert run(script, stdin).returncode == 0 and not victim.exists() and (tmp_path / "ran").exists()


def test_the_input_after_the_script_is_the_commands_and_exit_codes_come_back() -> None:
    done = run("cat; exit 7", b"line one\n\xff raw bytes\n")
    assert done.returncode == 7 and done.stdout == b"line one\n\xff raw bytes\n"


def test_a_stray_brace_does_not_feed_the_rest_of_the_script_to_a_command() -> None:
    done = run("echo first\n}\ncat")
    assert done.stdout == b"first\n", done  # `cat` reads /dev/null, never the rest of the script


def test_quotes_dollars_and_newlines_survive() -> None:
    script = "x='it'\"'\"'s'; echo \"$x\" $((2+3)) 'a\nb'"
    assert run(script).stdout == b"it's 5 a\nb\n"
