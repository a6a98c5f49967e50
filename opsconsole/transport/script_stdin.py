"""Handing a shell script to `/bin/sh` on its stdin, so the script's text is in no process's arguments.

Every local user can read any process's arguments (/proc/PID/cmdline, `ps`), on the console machine and
on the target host, and sudo logs them; a rendered command holding a secret therefore must not travel as
`sh -c SCRIPT`. The shell gets a command line that holds nothing of the script, and reads the script:

- No input for the command (nearly always): `sh -s` reads `{ eval 'QUOTED' </dev/null; }`, where QUOTED is
  the script inside a `{ … }` group, single-quoted (nothing in the script can end the quote). The shell
  parses the outer group whole before running it, so a payload cut anywhere short of its end is a syntax
  error and runs nothing; eval parses the inner group whole too, so a script with a syntax error runs
  nothing of itself; and a command reading stdin gets /dev/null, not the rest of the script. No extra
  process: as fast as `sh -c`.
- Input for the command: BOOTSTRAP reads the script's length in bytes on the first line, then exactly
  that many bytes with dd (bs=1: a pipe gives no other way to stop at a byte count; dash reads its own
  input in blocks and would swallow the command's), checks the END line that closes every script (a
  payload cut short, or a dd that is missing, runs nothing: exit 126) and evals it; what follows on stdin
  is the input.
"""

from __future__ import annotations

import shlex

END = "#opsconsole-script-end"
# `read` of dash, bash and busybox sh takes one byte at a time from a pipe, so it stops at the newline.
BOOTSTRAP = ('IFS= read -r n || exit 126; s=$(dd bs=1 count="$n" 2>/dev/null); unset n; '
             f'case $s in *"\n{END}") ;; *) echo "opsconsole: the script arrived cut short; nothing ran" >&2; '
             'exit 126;; esac; eval "$s"')


def shell_for(script: str, stdin: bytes | None = None) -> tuple[list[str], bytes]:
    """The argv that runs `script` (nothing of it in there) and what to write on its stdin."""
    if stdin is None:
        text = f"{{ eval {shlex.quote('{' + chr(10) + script + chr(10) + '}')} </dev/null; }}\n"
        return ["/bin/sh", "-s"], text.encode("utf-8", errors="surrogateescape")
    body = f"unset s\n{script}\n{END}".encode("utf-8", errors="surrogateescape")
    return ["/bin/sh", "-c", BOOTSTRAP], f"{len(body)}\n".encode() + body + stdin


__all__ = ["BOOTSTRAP", "END", "shell_for"]
