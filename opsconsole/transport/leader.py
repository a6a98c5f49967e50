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
import shlex

# A list, pipeline, background job, subshell, group, redirection or command substitution: the shell has
# work of its own around the command, so it cannot be replaced.
_SHELL_WORK = re.compile(r"[;&|<>(){}\n`]|\$\(")
# The first word: a program's name or path, not an assignment (`A=1 cmd`), an option (`-x`), nor anything
# quoted or expanded.
_PROGRAM = re.compile(r"[A-Za-z0-9_./+][A-Za-z0-9_./+-]*")
# What the shell splits words on (Python's split() also takes NBSP, \x0b, \x0c, … which the shell does not).
_BLANKS = re.compile(r"[ \t]+")
# Keywords and builtins (dash's, and bash's where /bin/sh is bash): `exec` would look for a program of that
# name, or (exec itself) mean something else.
_SHELL_WORDS = frozenset((
    "!", ".", ":", "[", "alias", "bg", "break", "builtin", "case", "cd", "chdir", "command", "continue",
    "coproc", "declare", "disown", "do", "done", "echo", "elif", "else", "esac", "eval", "exec", "exit",
    "export", "false", "fg", "fi", "for", "function", "getopts", "hash", "if", "jobs", "kill", "let", "local",
    "popd", "printf", "pushd", "pwd", "read", "readonly", "return", "select", "set", "shift", "shopt",
    "source", "test", "then", "time", "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias",
    "unset", "until", "wait", "while",
))


def leader_command(command: str) -> str:
    """`command` for `sh -c`, with `exec` in front when it is one simple command, so the service replaces
    the shell and leads its own session and group."""
    if not command.isascii() or _SHELL_WORK.search(command):
        return command
    first = _BLANKS.split(command.lstrip(" \t"), maxsplit=1)[0]
    if not _PROGRAM.fullmatch(first) or first in _SHELL_WORDS:
        return command
    return f"exec {command}"  # as written: stripping would change a last word such as `\ `


def launch_lines(command: str, log_file: str) -> str:
    """Shell lines that start `command` leading a session of its own, its output appended to `log_file`, and
    leave its pid in `$_p`; with no pid (nothing started), they say why on stderr and exit 1.

    The service's own shell says its pid on fd 3 (the `$(…)` pipe), closes it and becomes the service. setsid(1)
    has made it a session leader before that shell runs, so the pid said is already what `service_pid` (a live
    session leader) recognises: no polling for `$!` to get there (in CI under load, a start asked at once had
    launched a second copy). `$(…)` ends as soon as fd 3 is closed: a service that dies at once is not waited
    for. The log is opened before setsid, by the child still in the caller's group: a log that blocks (a FIFO,
    a hung mount) is killed with the caller on its timeout, and one that cannot be opened starts nothing, so no
    pid is said and the shell's reason is on stderr. A command whose first line does not parse starts nothing
    either: the shell's words are in the log, whose end is shown. stop_service kills the session's group; it
    outlives the caller (an SSH channel, a launcher) closing."""
    q = shlex.quote
    inner = f"echo $$ >&3; exec 3>&-; {leader_command(command)}"
    return (f"_p=$(setsid /bin/sh -c {q(inner)} 3>&1 </dev/null >>{q(log_file)} 2>&1 &)\n"
            f'case $_p in ""|*[!0-9]*) echo "the service did not start; its log ends:" >&2; '
            f"tail -n 3 {q(log_file)} >&2 2>/dev/null; exit 1;; esac\n")


__all__ = ["launch_lines", "leader_command"]
