"""The `secrets:` section: each secret read from an environment variable or a file, never from the config.

    secrets:
      db_password: {env: DB_PASSWORD}
      api_token: {file: ~/.config/opsconsole/api_token}   # must not be readable by group or others

Playbooks and `run` commands use them as `{{ secrets.db_password }}`; wherever a value
would be shown or written, the console's Redactor puts `***` instead.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Iterator, Mapping

from opsconsole.config.reader import MappingReader
from opsconsole.fsio import read_private
from opsconsole.login_env import ENV_NAME, NOT_AN_ENV_NAME
from opsconsole.redact import MIN_LENGTH

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\{\{\s*secrets\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<quote>\|\s*quote\s*)?\}\}")


class Secrets(Mapping[str, str]):
    """Secret name → value. Its repr names the secrets only, so a Config printed in a traceback leaks nothing."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(self._values)})"

    __str__ = __repr__


def read_secrets(r: MappingReader, base: Path) -> Secrets:
    """Read every secret now, so a missing variable or an open file is reported at load, naming its line."""
    values: dict[str, str] = {}
    for name in r.data:
        key = str(name)
        if not _NAME.match(key):
            raise r.error(key, f"{key!r} is not a valid secret name (letters, digits, _): templates use secrets.{key}")
        s = r.mapping(key)
        env, file = s.str("env"), s.str("file")
        if (env is None) == (file is None):
            raise r.error(key, "give exactly one of `env: VARIABLE` or `file: PATH`")
        if env is not None:
            if env and not ENV_NAME.match(env):
                raise s.error("env", NOT_AN_ENV_NAME)
            value = os.environ.get(env)
            if value is None:
                raise s.error("env", f"environment variable {env} is not set (secret {key!r})")
        else:
            value = _read_file(s, base, str(file))
        if len(value) < MIN_LENGTH:
            # The redactor cannot mask so short a value without masking ordinary words and digits: refuse it
            # rather than show it everywhere.
            raise s.error("env" if env is not None else "file",
                          f"secret {key!r} is shorter than {MIN_LENGTH} characters: it could not be kept out of "
                          "the output; use a longer one")
        s.done()
        values[key] = value
    return Secrets(values)


def _read_file(s: MappingReader, base: Path, text: str) -> str:
    path = Path(os.path.expanduser(text))
    path = path if path.is_absolute() else base / path
    try:
        return read_private(path).rstrip("\r\n")
    except ValueError as exc:
        raise s.error("file", str(exc)) from None
    except OSError as exc:
        raise s.error("file", f"cannot read secret file {path}: {exc.strerror}") from None


def fill_secrets(command: str, secrets: Mapping[str, str]) -> str:
    """A `run` line with each `{{ secrets.NAME }}` (or `{{ secrets.NAME | quote }}`) filled in.

    Nothing else in the line is templated: it is the operator's own shell, where `{{ .State }}`
    (docker, kubectl) means something else. ValueError names an unknown secret."""
    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in secrets:
            known = ", ".join(secrets) or "none configured"
            raise ValueError(f"no secret named {name!r} (secrets: {known})")
        return shlex.quote(secrets[name]) if m.group("quote") else secrets[name]

    return _REFERENCE.sub(fill, command)


__all__ = ["Secrets", "fill_secrets", "read_secrets"]
