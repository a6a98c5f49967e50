"""What the shell that leads a service's session runs: the service itself, wherever the shell allows it.

A service starts as `setsid /bin/sh -c COMMAND`. Debian's /bin/sh (dash) forks for the last command of a
`-c` string instead of replacing itself, so the leader of the service's group was a shell waiting on the
real service. A stop sends TERM to the group: the shell went at once, the service a moment later, and for
that moment `group_alive` could not answer from the leader's own /proc entry (a zombie) and read every
process's stat, again every 20 ms. At a hundred lab hosts on one machine that was most of a roll's `cat` and
`awk` time. With `exec`, the leader is the service: the pid file names the process that holds the port,
and a stop watches it directly.

Only a lone simple command gets `exec`: anything the shell must stay around for (a list, a pipeline, a
compound command, a redirection, a builtin, a leading assignment) runs as written, as before.
"""

from __future__ import annotations

import re

# A list, pipeline, background job, subshell, group, redirection or command substitution: the shell has
# work of its own around the command, so it cannot be replaced.
_SHELL_WORK = re.compile(r"[;&|<>(){}\n`]|\$\(")
# The first word: a program's name or path, not an assignment (`A=1 cmd`) nor anything quoted or expanded.
_PROGRAM = re.compile(r"[A-Za-z0-9_./+-]+")
# Keywords and builtins: `exec` would look for a program of that name, or (exec itself) mean something else.
_SHELL_WORDS = frozenset((
    "!", ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "echo",
    "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fg", "fi", "for", "getopts", "hash",
    "if", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set", "shift", "source",
    "test", "then", "time", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "until",
    "wait", "while",
))


def leader_command(command: str) -> str:
    """`command` for `sh -c`, with `exec` in front when it is one simple command, so the service replaces
    the shell and leads its own session and group."""
    words = command.split()
    if not words or _SHELL_WORK.search(command):
        return command
    first = words[0]
    if not _PROGRAM.fullmatch(first) or first in _SHELL_WORDS:
        return command
    return f"exec {command.strip()}"


__all__ = ["leader_command"]
