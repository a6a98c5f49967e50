"""Keeping secret values out of everything the console shows or writes.

One Redactor is shared by the event bus (so the TUI, the headless printer and
`--json` see events already cleaned), the journal and the files the console
writes (build logs, tracebacks): secrets are hidden at these few points, not
at every place that formats a message. Its values are the configured secrets
plus what a `no_log` task read from the environment.
This module imports nothing of ours, so the event bus may use it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import urllib.parse
from typing import Any, Iterable

MASK = "***"
NO_LOG = "(output hidden: no_log)"
# Shorter values would mask ordinary words and digits all over the output (a secret "1" would
# turn every exit code into ***); such a value is no secret worth the name anyway.
MIN_LENGTH = 4

_VALUE = r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s'\"]+)"
# Words that make a variable's name say it holds a secret. MYSQL_PWD and REDISCLI_AUTH are the mysql and
# redis-cli clients' password variables; `_PWD` needs its underscore, as the shell's PWD/OLDPWD are directories.
_SECRET_NAME = r"(?:PASSWORD|PASSWD|PASS|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|_PWD|REDISCLI_AUTH)"
_MYSQL = r"\b(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b"
_CURL = r"\b(?:curl|wget)\b"
# How a credential is typed on a command line, each with the part to keep (`name`) and the value to hide.
# Every alternative takes linear time on any line (a script line may be 200k characters; each is scanned
# several times), where backtracking made a 16k line take seconds: a match starts only where a name,
# program or scheme starts; a quantifier whose tail cannot use what it would give back is possessive
# (`*+`); the scan from `mysql` or `curl` to its flag stops at the next `mysql`/`curl`, whose own match
# finds the same flag and value.
_SECRET_ASSIGNMENT = re.compile(
    "|".join((
        # NAME=value where NAME says it holds a secret: PASSWORD=…, PGPASSWORD=…, AWS_SECRET_ACCESS_KEY=…
        r"(?P<name>\b(?=[A-Za-z0-9_]*?" + _SECRET_NAME + r")[A-Za-z0-9_]*+=)" + _VALUE,
        # --password=X, --password X, --token X, --secret=X …
        r"(?P<name2>--(?:password|passwd|pass|token|secret|api-key)[= ])" + _VALUE.replace("value", "value2"),
        # mysql's -pX (the value glued to the flag; elsewhere -p is an ordinary flag: tar -pxf, cp -pR)
        r"(?P<name3>" + _MYSQL + r"(?:(?!" + _MYSQL + r")[^|;&\n])*?\s-p)(?P<value3>[^\s'\"]+)",
        # curl -u user:X (curl's and wget's; `-u` means other things to other programs)
        r"(?P<name4>" + _CURL + r"(?:(?!" + _CURL + r")[^|;&\n])*?\s-u\s++['\"]?[^\s:'\"]++:)(?P<value4>[^\s'\"]+)",
        # Authorization: Bearer X / Basic X
        r"(?P<name5>Authorization:\s*+(?:Bearer|Basic|Token)\s++)(?P<value5>[^\s'\"]+)",
        # scheme://user:X@host, the scheme read from the start of its run of scheme characters (a letter
        # first, as `1https` holds the scheme `https`)
        r"(?P<name6>(?<![A-Za-z0-9+.-])[0-9+.-]*+[A-Za-z][A-Za-z0-9+.-]*+://[^\s:/@'\"]++:)(?P<value6>[^\s@/'\"]++)(?=@)",
    )),
    re.IGNORECASE,
)


def _assigned(m: re.Match[str]) -> tuple[str, str]:
    """(the part kept, the secret value) of one _SECRET_ASSIGNMENT match."""
    for i in ("", "2", "3", "4", "5", "6"):
        if m.group("name" + (i or "")) is not None:
            return m.group("name" + (i or "")), m.group("value" + i)
    raise AssertionError("no alternative matched")


def _forms(value: str) -> set[str]:
    """The ways a secret appears in what we show: as is, shell-quoted, URL-encoded, JSON- and repr-escaped,
    and each of its lines (output is masked line by line, so a multi-line key shows one line at a time)."""
    forms = {value, shlex.quote(value), urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
             json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    forms |= {line.strip() for line in value.splitlines()}
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Redactor:
    """Replaces every known secret value by `***` in text, events and JSON-like values."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.longest = 0  # the length of the longest form of a secret: how far a cut must look past itself
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Hide these values from now on (too short or empty ones are ignored, see MIN_LENGTH)."""
        new = {v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH} - self._values
        if not new:
            return
        self._values |= new
        forms = set().union(*(_forms(v) for v in self._values))
        self.longest = max(map(len, forms), default=0)
        # Longest first: a secret that contains another is masked whole.
        self._pattern = re.compile("|".join(re.escape(v) for v in sorted(forms, key=len, reverse=True)))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def safe_cut(self, text: str, at: int) -> int:
        """Where to cut `text` in two, at `at` or before it, so that no secret is cut in two (each half is
        masked on its own: a secret split across them would show). `text` must run on at least `longest`
        characters past `at`, or a secret starting before `at` cannot be seen whole."""
        if self._pattern is None:
            return at
        # From the start, as text() scans: the matches found are the ones the halves will be masked by.
        for m in self._pattern.finditer(text, 0, min(len(text), at + self.longest)):
            if m.end() > at:
                return m.start() if m.start() < at else at
        return at

    def value(self, value: Any) -> Any:
        """`value` with secrets masked in every string inside it (dicts, lists, tuples)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v) for v in value)
        return value

    def event(self, event: Any) -> Any:
        """A frozen dataclass event with secrets masked in its string fields (the same object if none)."""
        if self._pattern is None or not dataclasses.is_dataclass(event):
            return event
        changes = {}
        for f in dataclasses.fields(event):
            old = getattr(event, f.name)
            if isinstance(old, (str, tuple)):
                new = self.value(old)
                if new != old:
                    changes[f.name] = new
        return dataclasses.replace(event, **changes) if changes else event

    def learn(self, command: str) -> None:
        """Hide from now on the values a typed command assigns to secret-looking names (`PGPASSWORD=…`),
        so the command's own output and errors mask them too."""
        values = []
        for m in _SECRET_ASSIGNMENT.finditer(command):
            _, value = _assigned(m)
            values.append(value[1:-1] if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1 else value)
        self.add(values)

    def command(self, text: str) -> str:
        """A typed command as it may be kept or shown: secret values, and the values of assignments whose
        name says they hold one (`PGPASSWORD=hunter2`), masked."""
        return _SECRET_ASSIGNMENT.sub(lambda m: f"{_assigned(m)[0]}{MASK}", self.text(text))


__all__ = ["MASK", "NO_LOG", "Redactor"]
