"""Typed reading of one YAML mapping, with errors that name file, line and key path.

Each config section is read through a `MappingReader`: it hands out typed
values, remembers which keys were asked for, and `done()` refuses any key
nobody asked for — so a typo such as `helth:` is an error, not silently ignored.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

from opsconsole.units import parse_duration
from opsconsole.yamlsource import SourceError, YamlList, YamlMap, plain

T = TypeVar("T")

_TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", float: "a number"}
# A key whose name has one of these in it may hold a credential (`db_password`, `apiKey`, `token_file`);
# so may every key under `secrets:` (caught by "secret"). An error never quotes such a key's value.
_SECRET_PARTS = ("password", "passwd", "secret", "token", "credential", "apikey")
# ... nor of a key with one of these as a whole word of its name (`key`, `ssh_key`; not `keymap`, `passive`).
_SECRET_WORDS = {"key", "pass", "pwd", "auth"}


class MappingReader:
    def __init__(self, data: Any, file: str | Path, path: str, line: int | None = None) -> None:
        self.file = str(file)
        self.path = path
        if data is None:
            data = YamlMap()
            data.line = line or 0
            data.key_lines = {}
        if not isinstance(data, dict):
            raise SourceError(self.file, getattr(data, "line", line), path,
                              f"must be a mapping, got {_describe(data, path)}")
        self.data = data
        # The line of the key that names this section reads best in an error ("apps.itrust: …").
        self.line = line if line is not None else getattr(data, "line", None)
        self._seen: set[str] = set()

    # -- positions ---------------------------------------------------------
    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        if isinstance(self.data, YamlMap):
            return self.data.line_of(key)
        return self.line

    def error(self, key: str | None, message: str) -> SourceError:
        if key is None:
            return SourceError(self.file, self.line, self.path, message)
        return SourceError(self.file, self.line_of(key), self.key_path(key), message)

    # -- typed getters -----------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.data.get(key, default)

    def _get(self, key: str, typ: type, required: bool, default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise SourceError(self.file, self.line, self.key_path(key), "required key is missing")
            return default
        value = self.data[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if typ is int and isinstance(value, bool):
            raise self.error(key, f"must be {_TYPE_NAMES[int]}, got {_describe(value, self.key_path(key))}")
        if not isinstance(value, typ):
            raise self.error(key, f"must be {_TYPE_NAMES.get(typ, typ.__name__)}, "
                                 f"got {_describe(value, self.key_path(key))}")
        return value

    def str(self, key: str, *, required: bool = False, default: str | None = None, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key, str, required, default)
        if value is not None and choices and value not in choices:
            got = "another value" if looks_secret(self.key_path(key)) else repr(value)
            raise self.error(key, f"must be one of {', '.join(choices)}; got {got}")
        return value

    def int(self, key: str, *, required: bool = False, default: int | None = None,
            minimum: int | None = None, maximum: int | None = None) -> Any:
        value = self._get(key, int, required, default)
        if value is not None and key in self.data:
            if minimum is not None and value < minimum:
                raise self.error(key, f"must be at least {minimum}; got {value}")
            if maximum is not None and value > maximum:
                raise self.error(key, f"must be at most {maximum}; got {value}")
        return value

    def float(self, key: str, *, default: float | None = None, minimum: float | None = None,
              maximum: float | None = None) -> Any:
        value = self._get(key, float, False, default)
        if value is not None and key in self.data:
            if not math.isfinite(value):  # .nan passes every comparison below, .inf any minimum
                raise self.error(key, f"must be a finite number; got {value}")
            if minimum is not None and value < minimum:
                raise self.error(key, f"must be at least {minimum:g}; got {value:g}")
            if maximum is not None and value > maximum:
                raise self.error(key, f"must be at most {maximum:g}; got {value:g}")
        return value

    def port(self, key: str, *, required: bool = False, default: int | None = None) -> Any:
        value = self._get(key, int, required, default)
        if value is not None and key in self.data and not 1 <= value <= 65535:
            raise self.error(key, f"port {value} is out of range (1-65535)")
        return value

    def bool(self, key: str, *, default: bool = False) -> bool:
        return self._get(key, bool, False, default)

    def duration(self, key: str, *, default: float | None = None, required: bool = False, minimum: float = 0.0) -> Any:
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise SourceError(self.file, self.line, self.key_path(key), "required key is missing")
            return default
        try:
            value = parse_duration(self.data[key])
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}s; got {value}s")
        return value

    def str_list(self, key: str, *, required: bool = False) -> list[str]:
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                raise SourceError(self.file, self.line, self.key_path(key), "required key is missing")
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of strings, got {_describe(value, self.key_path(key))}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                line = value.line_of(i) if isinstance(value, YamlList) else self.line_of(key)
                at = f"{self.key_path(key)}[{i}]"
                raise SourceError(self.file, line, at, f"must be a string, got {_describe(item, at)}")
        return list(value)

    def mapping(self, key: str) -> "MappingReader":
        self._seen.add(key)
        return MappingReader(self.data.get(key), self.file, self.key_path(key), self.line_of(key))

    def plain_mapping(self, key: str) -> dict[str, Any]:
        """A free-form mapping (e.g. `vars:`) whose keys we do not check."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, got {_describe(value, self.key_path(key))}")
        return plain(value)

    def each(self, key: str, build: Callable[["MappingReader", str], T]) -> list[T]:
        """Build one item per entry of a mapping of named sections (e.g. `apps:`)."""
        section = self.mapping(key)
        items = []
        for name in section.data:
            if not isinstance(name, str):
                raise section.error(None, f"names must be strings, got {name!r}")
            section._seen.add(name)
            items.append(build(section.mapping(name), name))
        return items

    def done(self) -> None:
        for key in self.data:
            if key not in self._seen:
                allowed = ", ".join(sorted(self._seen))
                raise self.error(key, f"unknown key (allowed here: {allowed})")


def looks_secret(path: str) -> bool:
    """Whether a key path (`secrets.db_password`, `apps.x.vars.api_token`) may lead to a credential."""
    for part in path.lower().split("."):
        if any(s in part for s in _SECRET_PARTS) or _SECRET_WORDS & set(re.split(r"[^a-z0-9]+", part)):
            return True
    return False


def _describe(value: Any, path: str) -> str:
    """`value` in an error about the key at `path`: its type, and itself unless the key may hold a secret."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if looks_secret(path):
        return f"{type(value).__name__} (value not shown: the key may hold a secret)"
    return f"{type(value).__name__} {value!r}"
