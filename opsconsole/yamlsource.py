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
    def __init__(self) -> None:
        super().__init__()
        self.built = 0  # values built, an alias's as many times as it is used
        self.distinct: set[int] = set()  # nodes built, each once


# Values that aliases may add beyond what the text writes. Each use of an alias builds its value again (the
# line numbers differ), so nested aliases grow exponentially: nine levels of ten ("billion laughs") would
# build 10^9 values and hang the console. A real file repeats a few blocks, if many times (a defaults block of
# 25 values merged into each of 20,000 hosts is 500,000; keys are not counted).
ALIAS_BUDGET = 1_000_000


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _build(node: yaml.Node, constructor: _Constructor, within: frozenset[int] = frozenset(),
           use_line: int | None = None) -> Any:
    """`use_line`: where the text uses this value, for an alias's (its node has its anchor's line instead)."""
    line = node.start_mark.line + 1
    reused = id(node) in constructor.distinct  # built before: reached through an alias
    constructor.distinct.add(id(node))
    written = use_line if reused and use_line is not None else line
    constructor.built += 1
    if constructor.built - len(constructor.distinct) > ALIAS_BUDGET:
        raise SourceError(constructor.source, written, "", f"aliases expand to over {ALIAS_BUDGET:,} values more "
                          "than the file writes (aliases nested in aliases?); write the repeated values out")
    if id(node) in within:  # an alias inside the collection it names (`a: &x {b: *x}`) would nest endlessly
        raise SourceError(constructor.source, line, "", "this mapping or list holds an alias to itself")
    if isinstance(node, yaml.MappingNode):
        within = within | {id(node)}
        result = YamlMap()
        result.line = line
        result.key_lines = {}
        merged: set[Any] = set()  # the keys a `<<:` merge gave: a key written here overrides them
        merge_seen = False
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if merge_seen:
                    raise SourceError(constructor.source, key_node.start_mark.line + 1, "<<", "duplicate key")
                merge_seen = True
                merged |= _merge(value_node, constructor, within, result,
                                 written if reused else key_node.start_mark.line + 1)
                continue
            if key_node.tag == "tag:yaml.org,2002:value":  # a plain `=` key, a string (as PyYAML reads it)
                key_node.tag = "tag:yaml.org,2002:str"
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError(constructor.source, key_node.start_mark.line + 1, "", "a mapping key must be a plain value")
            key = _scalar(key_node, constructor)  # not counted against ALIAS_BUDGET: the values are
            if key in result and key not in merged:
                raise SourceError(constructor.source, key_node.start_mark.line + 1, str(key), "duplicate key")
            merged.discard(key)
            result[key] = _build(value_node, constructor, within, written if reused else key_node.start_mark.line + 1)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        within = within | {id(node)}
        result_list = YamlList()
        result_list.line = line
        result_list.item_lines = []
        for item in node.value:
            result_list.append(_build(item, constructor, within, written))
            result_list.item_lines.append(item.start_mark.line + 1)
        return result_list
    return _scalar(node, constructor)


def _scalar(node: yaml.Node, constructor: _Constructor) -> Any:
    try:
        return constructor.construct_object(node, deep=True)
    except ValueError as exc:  # e.g. an integer of over 4300 digits, which Python will not convert
        raise SourceError(constructor.source, node.start_mark.line + 1, "", f"cannot read this value: {exc}") from None


def _merge(value_node: yaml.Node, constructor: _Constructor, within: frozenset[int], result: YamlMap,
           use_line: int) -> set[Any]:
    """Add to `result` the keys of a `<<:` merge (a mapping, or a list of them, the first of which wins), as
    YAML and PyYAML do: a key the mapping itself gives wins over them, wherever it is written. Returns the
    keys added; the line of each is where it is written, in the mapping merged."""
    added: set[Any] = set()
    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise SourceError(constructor.source, source.start_mark.line + 1, "<<",
                              "a merge takes a mapping or a list of mappings")
        mapping = _build(source, constructor, within, use_line)
        for key, value in mapping.items():
            if key not in result:  # an earlier source, or a key already written here, wins
                result[key] = value
                result.key_lines[key] = mapping.line_of(key)
                added.add(key)
    return added


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
        data = p.read_bytes()
    except FileNotFoundError:
        raise SourceError(p, None, "", "file not found") from None
    except OSError as exc:
        raise SourceError(p, None, "", f"cannot read: {exc.strerror}") from None
    return parse_yaml(decode_utf8(data, p), p)


def decode_utf8(data: bytes, source: str | Path) -> str:
    """A file's bytes as text: UTF-8 (a BOM is kept, YAML skips it); a byte that is not UTF-8 is a
    SourceError naming the line and offset where it is, not a UnicodeDecodeError traceback."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(source, line, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                                            "(save the file as UTF-8)") from None


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
