"""The shell function `alive PID` the service scripts share (the ssh transport's, the service module's).

A zombie still answers `kill -0`, and a pid can be reused by an unrelated process, so "running" means:
/proc/PID/stat exists, its state (field 3) is not Z, and — for a pid read from a pid file — the process
still leads the session setsid made it (field 6, the session id, is its own pid). `group_alive PGID` asks
the same of a whole process group (opsconsole.pids.group_alive is its twin on this machine).
"""

from __future__ import annotations


def alive_function(session_leader: bool = True) -> str:
    """The shell line defining `alive PID`. `session_leader=False` leaves out the session check, for a pid
    the caller has just started: its setsid may not have run yet (the ssh transport does not wait for it)."""
    # The command name (field 2, in parentheses) may hold spaces or ") ": the fields are counted after its
    # last ") ", where the state is the first and the session id the fourth.
    leader = ' && [ "$4" = "$_alive_pid" ]' if session_leader else ""
    return ('alive() { [ -r "/proc/$1/stat" ] || return 1; _alive_pid=$1; read -r s < "/proc/$1/stat"; '
            f's=${{s##*") "}}; set -- $s; [ "$1" != Z ]{leader}; }}')


def group_alive_function() -> str:
    """The shell line defining `group_alive PGID`: some live (non-zombie) process is still in group PGID.

    A stop waits for this, not for the leader alone: a service's children (workers finishing their requests,
    or one that ignores TERM) can outlive the shell that started them, and would keep its port. `kill -0 -PGID`
    answers at once when the group is empty; it also counts zombies, which pid 1 may never reap in some
    containers, so a group that still answers is looked for in /proc (leader first, then every process).
    """
    return ('group_alive() { kill -0 "-$1" 2>/dev/null || return 1; _group=$1; '
            'for _f in "/proc/$_group/stat" /proc/[0-9]*/stat; do read -r s < "$_f" 2>/dev/null || continue; '
            's=${s##*") "}; set -- $s; [ "$1" != Z ] && [ "$3" = "$_group" ] && return 0; done; return 1; }')
