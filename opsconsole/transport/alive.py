"""The shell function `alive PID` the service scripts share (the ssh transport's, the service module's).

A zombie still answers `kill -0`, and a pid can be reused by an unrelated process, so "running" means:
/proc/PID/stat exists, its state (field 3) is not Z, and — for a pid read from a pid file — the process
still leads the session setsid made it (field 6, the session id, is its own pid). `group_alive PGID` asks
the same of a whole process group (opsconsole.pids.group_alive is its twin on this machine).
"""

from __future__ import annotations


def alive_function(session_leader: bool = True) -> str:
    """The shell line defining `alive PID`. `session_leader=False` leaves out the session check, for a pid
    the caller has just started: its setsid may not have run yet."""
    # The command name (field 2, in parentheses) may hold spaces or ") ": the fields are counted after its
    # last ") ", where the state is the first and the session id the fourth.
    leader = ' && [ "$4" = "$_alive_pid" ]' if session_leader else ""
    return ('alive() { [ -r "/proc/$1/stat" ] || return 1; _alive_pid=$1; read -r s < "/proc/$1/stat"; '
            f's=${{s##*") "}}; set -- $s; [ "$1" != Z ]{leader}; }}')


def group_alive_function() -> str:
    """The shell line defining `group_alive PGID`: some live (non-zombie) process is still in group PGID.

    A stop waits for this, not for the leader alone: a service's children (workers finishing their requests,
    or one that ignores TERM) can outlive the shell that started them, and would keep its port. Cheapest
    first: `kill -0 -PGID` fails at once for an empty group, and a live leader answers from its own stat.
    A group that still answers with its leader gone or a zombie holds either live members or just the
    zombie, not yet reaped by pid 1 (a container's or VM's pid 1 may take a second, or never reap: waiting
    for it would hold every stop). That is told by looking at every process: one cat and one awk, as the
    shell's `read` takes a byte per system call and a busy host has thousands of stat lines (~10 ms at 200
    processes, and only for a stop whose leader already went). Unlike its twin here (pids.group_alive), a
    group `kill -0` may not signal counts as gone: the stop runs as the user who started the service.
    """
    return ('group_alive() { kill -0 "-$1" 2>/dev/null || return 1; _group=$1; '
            'if read -r s 2>/dev/null < "/proc/$1/stat"; then s=${s##*") "}; set -- $s; '
            '[ "$1" != Z ] && [ "$3" = "$_group" ] && return 0; fi; '
            'cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$_group" '
            # (NF: a process name holding a newline and a fake ") S 1 PGID" cannot pass for a stat line of 50 fields)
            r"""'{ sub(/.*\) /, ""); if (NF >= 20 && $3 == g && $1 != "Z" && $1 != "X") live = 1 } END { exit !live }'; }""")


def clock_function() -> str:
    """The shell line defining `clock`: sets `$now` to the seconds since boot in hundredths (/proc/uptime), for
    deadlines in time rather than in loop turns, whose length a slow look stretches. Leading zeros go: the
    shell's arithmetic would read "012" as octal."""
    return ('clock() { read -r now _ < /proc/uptime; now=${now%.*}${now#*.}; '
            'while [ "${now#0}" != "$now" ] && [ ${#now} -gt 1 ]; do now=${now#0}; done; }')
