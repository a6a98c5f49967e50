"""The shell function `alive PID` the service scripts share (the ssh transport's, the service module's).

A zombie still answers `kill -0`, and a pid can be reused by an unrelated process, so "running" means:
/proc/PID/stat exists, its state (field 3) is not Z, and — for a pid read from a pid file — the process
still leads the session setsid made it (field 6, the session id, is its own pid).
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
