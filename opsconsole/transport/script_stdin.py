"""Handing a shell script to `/bin/sh` on its stdin, so the script's text is in no process's arguments.

Every local user can read any process's arguments (/proc/PID/cmdline, `ps`), on the console machine and
on the target host, and sudo logs them; a rendered command holding a secret therefore must not travel as
`sh -c SCRIPT`. The shell gets a command line that holds nothing of the script, and reads the script:

- No input for the command (nearly always): `sh -s` reads the script as one `{ …\n} </dev/null` block. The
  shell parses a whole compound command before running any of it, so a command reading stdin gets
  nothing, as under `sh -c`, not the rest of the script. No extra process: as fast as `sh -c`.
- Input for the command: BOOTSTRAP reads the script's length in bytes on the first line, then exactly
  that many bytes with dd (bs=1: a pipe gives no other way to stop at a byte count; dash reads its own
  input in blocks and would swallow the command's), and evals it; what follows on stdin is the input.
"""

from __future__ import annotations

# `read` of dash, bash and busybox sh takes one byte at a time from a pipe, so it stops at the newline.
BOOTSTRAP = 'IFS= read -r n || exit 126; s=$(dd bs=1 count="$n" 2>/dev/null); unset n; eval "$s"'


def shell_for(script: str, stdin: bytes | None = None) -> tuple[list[str], bytes]:
    """The argv that runs `script` (nothing of it in there) and what to write on its stdin."""
    if stdin is None:
        return ["/bin/sh", "-s"], f"{{\n{script}\n}} </dev/null\n".encode("utf-8", errors="surrogateescape")
    body = f"unset s\n{script}".encode("utf-8", errors="surrogateescape")
    return ["/bin/sh", "-c", BOOTSTRAP], f"{len(body)}\n".encode() + body + stdin


__all__ = ["BOOTSTRAP", "shell_for"]
