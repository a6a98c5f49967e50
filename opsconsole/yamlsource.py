"""YAML loading that remembers where every value came from.

Config files and playbooks are both written by hand, so every error we report
must name the file, the line and the key path at fault. PyYAML's plain loaders
throw the positions away; here we compose the node tree ourselves and build
dict/list subclasses that keep the line of each key and item.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor


class SourceError(OperatorError):
    """Bad input in a file we read: names the file, the line and the key path."""

    def __init__(self, file: str | Path, line: int | None, path: str, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class YamlMap(dict):
    """A mapping that knows the line of itself and of each of its keys."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class YamlList(list):
    """A sequence that knows the line of itself and of each item."""

    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class _Constructor(yaml.constructor.SafeConstructor):
    pass


def _build(node: yaml.Node, constructor: _Constructor) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        result = YamlMap()
        result.line = line
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = _build(key_node, constructor)
            if isinstance(key, (dict, list)):
                raise SourceError(constructor.source, key_node.start_mark.line + 1, "", "a mapping key must be a plain value")
            if key in result:
                raise SourceError(constructor.source, key_node.start_mark.line + 1, str(key), "duplicate key")
            result[key] = _build(value_node, constructor)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        result_list = YamlList()
        result_list.line = line
        result_list.item_lines = []
        for item in node.value:
            result_list.append(_build(item, constructor))
            result_list.item_lines.append(item.start_mark.line + 1)
        return result_list
    return constructor.construct_object(node, deep=True)


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML text into YamlMap/YamlList/scalars; syntax errors become SourceError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SourceError(source, line, "", f"YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SourceError(source, None, "", f"YAML syntax error: {exc}") from None
    if node is None:
        return None
    constructor = _Constructor()
    constructor.source = str(source)  # type: ignore[attr-defined]
    try:
        return _build(node, constructor)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise SourceError(source, mark.line + 1 if mark else None, "", str(exc.problem)) from None


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a SourceError too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(p, None, "", "file not found") from None
    except OSError as exc:
        raise SourceError(p, None, "", f"cannot read: {exc.strerror}") from None
    return parse_yaml(text, p)


def plain(value: Any) -> Any:
    """YamlMap/YamlList (which remember their lines) as plain dicts and lists: for yaml.safe_dump, or a
    value handed on where line numbers mean nothing."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def line_of(container: Any, key: Any) -> int | None:
    """The line of `key` inside a YamlMap/YamlList, or None for plain containers."""
    if isinstance(container, YamlMap):
        return container.line_of(key)
    if isinstance(container, YamlList) and isinstance(key, int):
        return container.line_of(key)
    return getattr(container, "line", None)
