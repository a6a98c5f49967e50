"""Jinja2 templating for playbooks, with Ansible's habits.

- StrictUndefined: a misspelt variable fails the task, naming the variable,
  instead of writing an empty string into a config file.
- Variables are templated lazily, when a template uses them, so a variable may
  hold a template that refers to another (`mariadb_dir: "{{ host_root }}/db"`)
  and an unused variable that refers to something undefined does no harm.
- A string that is one `{{ expression }}` and nothing else yields the native
  value (a list stays a list, a port stays an int), as in Ansible.
"""

from __future__ import annotations

import base64
import contextvars
import json
import os
import posixpath
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import jinja2.meta

from opsconsole.errors import OperatorError

# One expression, as Ansible reads it natively: `"{{ 5 }}"` and `"{{ 5 }}\n"` are 5; `" {{ 5 }} "` is text.
_SINGLE_EXPR = re.compile(r"^\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}(?P<newlines>\n*)$", re.S)


class TemplateFailure(OperatorError):
    """A template could not be rendered: an undefined variable, a bad filter, a recursive variable."""


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "true", "1", "y")
    return bool(value)


# While a `no_log` task renders, the values its lookup('env'|'file', …) calls return are collected here,
# so the console can mask them everywhere afterwards (a password read from the environment).
LOOKED_UP: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("looked_up", default=None)


def _lookup_env(kind: str, *names: str) -> str:
    if kind == "env":
        values = [os.environ.get(n, "") for n in names]
        seen = LOOKED_UP.get()
        if seen is not None:
            seen.extend(values)
        return ",".join(values)
    if kind == "file":
        try:
            values = [Path(n).read_text().rstrip("\n") for n in names]
        except OSError as exc:
            raise TemplateFailure(f"lookup('file', ...): {exc.filename}: {exc.strerror}") from None
        seen = LOOKED_UP.get()
        if seen is not None:
            seen.extend(values)  # a key file read by a no_log task is as secret as an env value
        return ",".join(values)
    raise TemplateFailure(f"lookup({kind!r}) is not supported (only 'env' and 'file')")


def _configure(env: jinja2.Environment) -> jinja2.Environment:
    env.filters.update(
        bool=_bool,
        to_json=lambda v: json.dumps(v),
        to_nice_json=lambda v: json.dumps(v, indent=2, sort_keys=True),
        basename=posixpath.basename,
        dirname=posixpath.dirname,
        quote=lambda v: shlex.quote(str(v)),
        regex_replace=lambda v, pattern, repl="": re.sub(pattern, repl, str(v)),
        # As Ansible's: text in, text out (UTF-8); b64decode of slurp's `content` gives the file's text.
        b64encode=lambda v: base64.b64encode(str(v).encode()).decode(),
        b64decode=lambda v: base64.b64decode(str(v)).decode(errors="surrogateescape"),
    )
    env.globals["lookup"] = _lookup_env
    return env


# keep_trailing_newline: a template file's last newline belongs to the file we write. trim_blocks: as
# Ansible (in task arguments and in the template module): the newline after a block tag is dropped.
ENV = _configure(jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True))



@lru_cache(maxsize=4096)
def _compiled(text: str) -> tuple[jinja2.Template, frozenset[str]]:
    return ENV.from_string(text), frozenset(jinja2.meta.find_undeclared_variables(ENV.parse(text)))


@lru_cache(maxsize=4096)
def _compiled_expr(expr: str) -> tuple[Any, frozenset[str]]:
    names = jinja2.meta.find_undeclared_variables(ENV.parse("{{ " + expr + " }}"))
    return ENV.compile_expression(expr, undefined_to_none=False), frozenset(names)


def is_template(value: Any) -> bool:
    """Whether a string would change when templated (holds `{{`, `{%` or `{#`)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def check_syntax(text: str) -> str | None:
    """The syntax error in a template, or None; for load-time validation."""
    try:
        ENV.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    return None


@lru_cache(maxsize=4096)  # asked again for every `{{ x }}` rendered: parsing it each time was most of a render
def check_expression(expr: str) -> str | None:
    """The syntax error in a bare expression (`when:`), or None."""
    try:
        ENV.parse("{{ " + expr + " }}")
    except jinja2.TemplateSyntaxError as exc:
        return f"expression syntax error: {exc.message}"
    return None


class Templar:
    """Renders values against layered variables; later layers win.

    Each layer is (mapping, templated): values of a templated layer may hold
    templates themselves (play vars, extra vars); values of a raw layer are used
    as they are (registered results, whose stdout may contain `{{` by chance).
    """

    def __init__(self, layers: Iterable[tuple[Mapping[str, Any], bool]]) -> None:
        self._vars: dict[str, tuple[Any, bool]] = {}
        for mapping, templated in layers:
            for key, value in mapping.items():
                self._vars[key] = (value, templated)
        self._resolved: dict[str, Any] = {}
        self._resolving: list[str] = []

    def names(self) -> set[str]:
        return set(self._vars)

    def with_layer(self, mapping: Mapping[str, Any], templated: bool = False) -> "Templar":
        """A new Templar with one more layer on top."""
        child = Templar([])
        child._vars = {**self._vars, **{k: (v, templated) for k, v in mapping.items()}}
        return child

    def variable(self, name: str) -> Any:
        """The value of variable `name`, templated if its layer allows; KeyError if not defined."""
        if name in self._resolved:
            return self._resolved[name]
        value, templated = self._vars[name]
        if templated:
            if name in self._resolving:
                chain = " -> ".join([*self._resolving[self._resolving.index(name):], name])
                raise TemplateFailure(f"variable {name!r} refers to itself ({chain})")
            self._resolving.append(name)
            try:
                value = self.render(value)
            except TemplateFailure as exc:
                raise TemplateFailure(f"{exc} (in variable {name!r})") from None
            finally:
                self._resolving.pop()
        self._resolved[name] = value
        return value

    def _context(self, names: frozenset[str]) -> dict[str, Any]:
        return {n: self.variable(n) for n in names if n in self._vars}

    def render(self, value: Any) -> Any:
        """Template every string inside `value` (recursing into lists and mappings)."""
        if isinstance(value, str):
            return self._render_str(value)
        if isinstance(value, Mapping):
            return {k: self.render(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.render(v) for v in value]
        return value

    def render_text(self, text: str) -> str:
        """Template `text` as a whole and always return a string (template files, messages)."""
        if not is_template(text):
            return text
        template, names = self._compile(text)
        return self._guard(text, lambda: template.render(self._context(names)))

    def evaluate(self, expr: str) -> Any:
        """Evaluate a bare Jinja expression (`when:`, `changed_when:`) to its native value."""
        if is_template(expr):  # `when: "{{ x }}"` is accepted, as Ansible does (with a warning there)
            value = self._render_str(expr)
            return _bool(value) if isinstance(value, str) else value
        try:
            compiled, names = _compiled_expr(expr)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(f"expression syntax error in {expr!r}: {exc.message}") from None
        return self._guard(expr, lambda: _defined(compiled(**self._context(names))))

    def _render_str(self, text: str) -> Any:
        if not is_template(text):
            return text
        match = _SINGLE_EXPR.match(text)
        if match:
            expr = match.group("expr").strip()
            if expr and check_expression(expr) is None:
                compiled, names = _compiled_expr(expr)
                value = self._guard(text, lambda: _defined(compiled(**self._context(names))))
                # As Ansible: a text result keeps the template's trailing newlines (`content: "{{ x }}\n"`).
                return value + match.group("newlines") if isinstance(value, str) else value
        return self.render_text(text)

    def _compile(self, text: str) -> tuple[jinja2.Template, frozenset[str]]:
        try:
            return _compiled(text)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(f"template syntax error in {_short(text)}: {exc.message}") from None

    def _guard(self, text: str, work: Any) -> Any:
        try:
            return work()
        except TemplateFailure:
            raise
        except jinja2.UndefinedError as exc:
            raise TemplateFailure(f"undefined variable: {exc.message} (in {_short(text)})") from None
        except jinja2.TemplateError as exc:
            raise TemplateFailure(f"template error in {_short(text)}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise TemplateFailure(f"template error in {_short(text)}: {type(exc).__name__}: {exc}") from None


def _defined(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the variable
    return value


def _short(text: str, limit: int = 120) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(text)


def render_string(text: str, variables: Mapping[str, Any]) -> str:
    """Template one string with plain variables (which may themselves hold templates)."""
    return Templar([(variables, True)]).render_text(text)


__all__ = ["ENV", "Templar", "TemplateFailure", "check_expression", "check_syntax", "is_template", "render_string"]
