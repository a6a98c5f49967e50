"""The one base of every error the engine reports to an operator.

An `OperatorError` is something the operator can act on: a bad config line, a host that does not
answer, a lock someone else holds, a failed build. Its message says what went wrong and where; its
`hint`, when there is one, says what to do. The engine reports these as a failed command. Anything
else that escapes a command is a bug of ours and is reported as an internal error, with a traceback
file (engine/engine.py).

Each part keeps its own error class (SourceError, TransportError, LockError, PlanError, GitError,
BuildFailed, TrafficError, Ec2Error, …) and derives it from `OperatorError`; this module imports
nothing of the package, so any part may import it.
"""

from __future__ import annotations


class OperatorError(Exception):
    """An error the operator can act on; `str()` says what and where, `hint` what to do ('' if the message says)."""

    hint: str = ""

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint

    def report(self) -> str:
        """The one line a front end shows: the message, then the hint unless the message says it already."""
        text = str(self)
        return f"{text} ({self.hint})" if self.hint and self.hint not in text else text


class CommandFailed(OperatorError):
    """A command ran and did not succeed; the message says where and why."""
