"""Handing a shell script to `/bin/sh` on its stdin, so the script's text is in no process's arguments.

Every local user can read any process's arguments (/proc/PID/cmdline, `ps`), on the console machine and
on the target host, and sudo logs them; a rendered command holding a secret therefore must not travel as
`sh -c SCRIPT`. The shell is started with BOOTSTRAP instead, which holds nothing of the script, and reads
the script from stdin: its length in bytes on the first line, then the script. dd reads exactly that
many bytes (bs=1: a pipe gives no other way to stop at a byte count), so what follows on stdin is the
command's own input, as before. The script runs in that same shell (eval), as `sh -c` would run it.
"""

from __future__ import annotations

# `read` of dash, bash and busybox sh takes one byte at a time from a pipe, so it stops at the newline.
BOOTSTRAP = 'IFS= read -r n || exit 126; s=$(dd bs=1 count="$n" 2>/dev/null); unset n; eval "$s"'


def script_payload(script: str, stdin: bytes | None = None) -> bytes:
    """What to write on the bootstrap shell's stdin: the length line, the script, then the command's input."""
    body = f"unset s\n{script}".encode("utf-8", errors="surrogateescape")
    return f"{len(body)}\n".encode() + body + (stdin or b"")


__all__ = ["BOOTSTRAP", "script_payload"]
