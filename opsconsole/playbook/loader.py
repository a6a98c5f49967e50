"""Reading a playbook file and refusing anything wrong in it before a single task runs.

Every refusal is a SourceError naming the file, the line and the key path
(`plays[0].tasks[3].copy.dest: required argument missing`), so the operator
can fix the file without guessing.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping

from opsconsole.playbook.fallback import EXTRA, ansible_playbook, builtin_module_exists
from opsconsole.playbook.model import Play, Playbook, Task
from opsconsole.playbook.modules import (ALIASES, MOVED_ARGUMENTS, MOVED_MODULES, SPECS, canonical, find_source,
                                         parse_mode, truthy)
from opsconsole.playbook.templating import check_expression, check_syntax, is_template
from opsconsole.playbook.web import expected_statuses, parse_checksum
from opsconsole.units import parse_duration, seconds_number
from opsconsole.yamlsource import SourceError, line_of, load_yaml

PLAY_KEYS = ("name", "hosts", "serial", "vars", "vars_files", "roles", "tasks", "handlers", "become", "gather_facts",
             "tags", "module_defaults")
# A `roles:` entry's keys run natively; any other plain name is a role parameter (a variable), as in Ansible.
ROLE_KEYS = ("role", "name", "vars", "tags", "when", "become")
TASK_KEYS = ("name", "when", "register", "notify", "ignore_errors", "become", "vars",
             "changed_when", "failed_when", "loop", "with_items", "timeout", "no_log", "tags", "check_mode", "diff")
BLOCK_KEYS = ("name", "block", "rescue", "always", "when", "tags", "become", "vars", "ignore_errors", "no_log")
INCLUDES = {f"{prefix}{name}": name for name in ("include_tasks", "import_tasks") for prefix in ("", "ansible.builtin.")}
ROLE_INCLUDES = {f"{prefix}{name}": name for name in ("include_role", "import_role") for prefix in ("", "ansible.builtin.")}
# include_role/import_role arguments run natively (`apply` sends the play to ansible-playbook).
ROLE_INCLUDE_ARGS = ("name", "tasks_from", "vars_from", "defaults_from", "handlers_from", "public", "allow_duplicates",
                     "rolespec_validate")
_INCLUDE_KEYS = ("name", "when", "tags", "vars", "become", "ignore_errors", "no_log")
_MAX_INCLUDE_DEPTH = 20
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PERCENT = re.compile(r"^(\d+)%$")


def load_playbook(path: str | Path) -> Playbook:
    """Load and validate a playbook file; SourceError on the first thing wrong with it."""
    return _Loader(Path(path)).load()


class _Loader:
    def __init__(self, path: Path, playbook_dir: Path | None = None, including: tuple[Path, ...] = (),
                 role_dir: Path | None = None) -> None:
        self.path = path
        # Sources (copy src, template src, included files) are found from the playbook's directory.
        self.dir = playbook_dir or path.absolute().parent
        self.including = including  # the files that included this one, to refuse an include loop
        self.role_dir = role_dir  # loading a role's file: its sources are looked up in the role first
        # The play's module_defaults: module -> arguments a task of that module gets unless it gives its own.
        self.defaults: dict[str, dict[str, Any]] = {}
        self.role_files: dict[Path, Any] = {}  # a role file's YAML, parsed once per load (see role_file)
        # include_role/import_role of the play, read before its tasks (their handlers must be known first),
        # by id of the task mapping; and the roles whose variables the play sees (import_role, public).
        self.included_roles: dict[int, _Role] = {}
        self.exposed: list[_Role] = []

    def sub_loader(self, path: Path, including: tuple[Path, ...] = (), role_dir: Path | None = None) -> "_Loader":
        """A loader for a file of this play (an included task file, a role's file): same play, same state."""
        sub = _Loader(path, self.dir, including, role_dir)
        sub.defaults, sub.included_roles, sub.exposed = self.defaults, self.included_roles, self.exposed
        sub.role_files = self.role_files
        return sub

    def error(self, container: Any, key: Any, keypath: str, message: str) -> SourceError:
        return SourceError(self.path, line_of(container, key), keypath, message)

    def load(self) -> Playbook:
        data = load_yaml(self.path)
        if not isinstance(data, list):
            raise SourceError(self.path, getattr(data, "line", 1), "", "a playbook is a list of plays (`- hosts: ...`)")
        plays = tuple(self.play(data, i) for i in range(len(data)))
        return Playbook(path=self.path, plays=plays)

    # -- plays -------------------------------------------------------------
    def play(self, plays: Any, index: int) -> Play:
        at = f"plays[{index}]"
        raw = plays[index]
        if not isinstance(raw, dict):
            raise self.error(plays, index, at, "a play is a mapping with hosts and tasks")
        for key in raw:  # Ansible's other play keywords (pre_tasks ...) send the play to ansible-playbook
            if key not in PLAY_KEYS and key not in ANSIBLE_PLAY_KEYS:
                raise self.error(raw, key, f"{at}.{key}", f"unknown play key (known: {', '.join(PLAY_KEYS)})")
        if "hosts" not in raw:
            raise self.error(plays, index, f"{at}.hosts", "required: the group, host, comma list or `all` to run on")
        hosts = raw["hosts"]
        if isinstance(hosts, list) and all(isinstance(h, str) for h in hosts):
            hosts = ",".join(hosts)
        if not isinstance(hosts, str) or not hosts.strip():
            raise self.error(raw, "hosts", f"{at}.hosts", "must be a group name, a host name, a comma list or `all`")
        name = raw.get("name", hosts)
        self.text(raw, "name", f"{at}.name", name)
        foreign = self.foreign(raw, at)
        if foreign is not None:
            container, key, where, what = foreign
            why = f"play {index + 1} uses {what}: runs with ansible-playbook"
            if ansible_playbook() is None:
                raise self.error(container, key, where, f"{what} is not run natively and ansible-playbook is not "
                                 f"installed: {EXTRA} to run this play with it")
            return Play(name=str(name), hosts=hosts.strip(), line=line_of(plays, index) or 1, path=at,
                        serial=self.serial(raw, at), runner="ansible", why=why, source=raw)
        self.defaults = self.module_defaults(raw, f"{at}.module_defaults")
        # vars_files win over vars, as in Ansible.
        vars_ = {**self.variables(raw, "vars", f"{at}.vars"), **self.vars_files(raw, f"{at}.vars_files")}
        roles = [self.role(entries, i, f"{at}.roles[{i}]") for entries, i in self.role_entries(raw, f"{at}.roles")]
        self.read_role_includes(raw.get("tasks"), f"{at}.tasks")
        # As Ansible: the roles' handlers, then the play's; the roles' tasks, then the play's; any task may
        # notify any handler of the play (a role's also as `ROLE : handler`).
        handlers = _last_of_each_name(tuple(h for role in roles for h in role.handlers) +
                                      tuple(h for role in self.included_roles.values() for h in role.handlers) +
                                      self.task_list(raw, "handlers", f"{at}.handlers", handler_names=None))
        names = _notifications(handlers)
        tasks = tuple(t for role in roles for t in role.tasks(names)) + \
            self.task_list(raw, "tasks", f"{at}.tasks", handler_names=names)
        play_tags = self.tags(raw, f"{at}.tags")
        if play_tags:
            tasks = tuple(_inherit(t, tags=play_tags) for t in tasks)
        exposed = roles + self.exposed  # import_role (and include_role with public) show theirs to the play
        return Play(name=str(name), hosts=hosts.strip(), line=line_of(plays, index) or 1, path=at,
                    serial=self.serial(raw, at), vars=vars_, tasks=tasks, handlers=handlers,
                    become=self.boolean(raw, "become", f"{at}.become", False),
                    role_defaults={k: v for role in exposed for k, v in role.defaults.items()},
                    role_exports={k: v for role in exposed for k, v in role.exports.items()})

    def foreign(self, play: dict, at: str) -> tuple[Any, Any, str, str] | None:
        """The first thing in the play the native runner does not have (a module or a keyword Ansible
        knows): (container, key, key path, what) — or None when the play runs natively."""
        for key in play:
            if key in ANSIBLE_PLAY_KEYS and key not in PLAY_KEYS:
                return play, key, f"{at}.{key}", f"the play keyword {key!r}"
        defaults = play.get("module_defaults")
        if isinstance(defaults, dict):
            for key in defaults:  # group/... or a module we do not have: Ansible resolves those
                if isinstance(key, str) and canonical(key) is None and \
                        (key.startswith("group/") or _looks_like_ansible_module(key)):
                    return defaults, key, f"{at}.module_defaults.{key}", f"module_defaults for {key}"
        for part in ("tasks", "handlers", "pre_tasks", "post_tasks"):
            if isinstance(play.get(part), list):
                found = self.foreign_tasks(play[part], f"{at}.{part}")
                if found:
                    return found
        return self.foreign_roles(play, at)

    def foreign_roles(self, play: dict, at: str) -> tuple[Any, Any, str, str] | None:
        """What in the play's roles the native runner does not have: an entry's keyword, a role's
        dependencies (meta/main.yml), a module or keyword in its tasks or handlers."""
        for entries, i in self.role_entries(play, f"{at}.roles"):
            entry, where = entries[i], f"{at}.roles[{i}]"
            for key in entry if isinstance(entry, dict) else ():
                if key not in ROLE_KEYS and key in ANSIBLE_TASK_KEYS + ANSIBLE_PLAY_KEYS:
                    return entry, key, f"{where}.{key}", f"the role keyword {key!r}"
            directory = self.role_directory(entry)
            if directory is None:
                continue  # loading it natively names what is missing
            meta = _role_file(directory, "meta")
            data = load_yaml(meta) if meta else None
            if isinstance(data, dict) and data.get("dependencies"):
                return entries, i, where, f"role dependencies ({meta})"
            for part in ("tasks", "handlers"):
                _, data = self.role_file(directory, part)
                if isinstance(data, list):
                    found = self.foreign_tasks(data, f"{where}.{part}")
                    if found:
                        return found
        return None

    # -- roles -------------------------------------------------------------
    def role_entries(self, raw: dict, at: str) -> list[tuple[list, int]]:
        """The play's `roles:` as (list, index) pairs; refuses a `roles:` that is not a list."""
        value = raw.get("roles")
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(raw, "roles", at, "must be a list of role names or {role: NAME, vars: ...} entries")
        return [(value, i) for i in range(len(value))]

    def role_name(self, entry: Any) -> str | None:
        name = entry.get("role", entry.get("name")) if isinstance(entry, dict) else entry
        return name if isinstance(name, str) and name.strip() else None

    def role_directory(self, entry: Any) -> Path | None:
        """roles/NAME next to the playbook, else NAME there (Ansible's search without a roles_path)."""
        name = self.role_name(entry)
        if name is None or is_template(name):
            return None
        return next((d for d in (self.dir / "roles" / name, self.dir / name) if d.is_dir()), None)

    def role(self, entries: Any, index: Any, at: str, files: Mapping[str, str] = {},
             entry: dict[str, Any] | None = None) -> "_Role":
        """A role of `roles:` (entries[index] is its entry), or of include_role/import_role (`entry`: its name
        and parameters; entries[index] the task's include_role, for messages); `files`: the tasks, vars,
        defaults and handlers file names (tasks_from ...), `main` when not given."""
        entry = entries[index] if entry is None else entry
        name = self.role_name(entry)
        if name is None:
            raise self.error(entries, index, at, "a role entry is a role name or a mapping with `role: NAME`")
        if is_template(name):
            raise self.error(entries, index, at, "a role named by a template is not run natively")
        directory = self.role_directory(entry)
        if directory is None:
            raise self.error(entries, index, at, f"role {name!r} not found (looked for {self.dir / 'roles' / name} "
                             f"and {self.dir / name})")
        for part, file in files.items():
            if _role_file(directory, part, file) is None:
                raise self.error(entries, index, f"{at}.{part}_from", f"role {name!r} has no {part}/{file} "
                                 f"(looked for {directory / part / file}.yml)")
        params: dict[str, Any] = {}
        inherited: dict[str, Any] = {}
        if isinstance(entry, dict):
            for key in entry:
                if key not in ROLE_KEYS and (not isinstance(key, str) or not _IDENTIFIER.match(key)):
                    raise self.error(entry, key, f"{at}.{key}", f"unknown key in a role entry (known: "
                                     f"{', '.join(ROLE_KEYS)}; a role parameter is a variable name)")
            params = {k: v for k, v in entry.items() if k not in ROLE_KEYS}
            self.templates(params, entries, index, at)
            inherited = dict(when=self.conditions(entry, "when", f"{at}.when"), tags=self.tags(entry, f"{at}.tags"),
                             become=self.boolean(entry, "become", f"{at}.become", None))
        defaults = self.role_variables(directory, "defaults", files.get("defaults", "main"))
        exports = self.role_variables(directory, "vars", files.get("vars", "main"))
        entry_vars = self.variables(entry, "vars", f"{at}.vars") if isinstance(entry, dict) else {}
        role_vars = {**exports, **entry_vars, "role_name": name, "role_path": str(directory)}
        handlers: tuple[Task, ...] = ()
        path, data = self.role_file(directory, "handlers", files.get("handlers", "main"))
        if path is not None and data is not None:
            if not isinstance(data, list):
                raise SourceError(path, getattr(data, "line", 1), "", "a handlers file is a list of handlers")
            loader = self.sub_loader(path, role_dir=directory)
            handlers = loader.task_list({"handlers": data}, "handlers", "handlers", handler_names=None)
        role = _Role(self, directory, defaults, exports, role_vars, params, inherited, (), name,
                     files.get("tasks", "main"))
        # The entry's when/become hold for the role's handlers too (tags do not select handlers).
        handler_inherited = {k: v for k, v in inherited.items() if k != "tags"}
        role.handlers = tuple(role.in_role(_inherit(h, **handler_inherited)) for h in handlers)
        return role

    def role_file(self, directory: Path, part: str, file: str = "main") -> tuple[Path | None, Any]:
        """A role's PART/FILE.yml and its YAML (None, None: the role has none). Parsed once per load: the
        check for what runs with Ansible reads a role's tasks and handlers before the loading does."""
        path = _role_file(directory, part, file)
        if path is None:
            return None, None
        if path not in self.role_files:
            self.role_files[path] = load_yaml(path)
        return path, self.role_files[path]

    def role_variables(self, directory: Path, part: str, file: str = "main") -> dict[str, Any]:
        path = _role_file(directory, part, file)
        data = load_yaml(path) if path else None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SourceError(path, getattr(data, "line", 1), "", f"a role's {part} file is a mapping of name: value")
        return _Loader(path, self.dir, role_dir=directory).variables({"vars": data}, "vars", part)

    def foreign_tasks(self, items: list, at: str) -> tuple[Any, Any, str, str] | None:
        for i, task in enumerate(items):
            if not isinstance(task, dict):
                continue
            if "block" in task:
                for part in ("block", "rescue", "always"):
                    if isinstance(task.get(part), list):
                        found = self.foreign_tasks(task[part], f"{at}[{i}].{part}")
                        if found:
                            return found
                continue
            role_include = next((k for k in task if k in ROLE_INCLUDES), None)
            if role_include is not None:
                found = self.foreign_role_include(task, role_include, f"{at}[{i}]")
                if found:
                    return found
                continue
            for key in task:
                if not isinstance(key, str) or key in TASK_KEYS or key in INCLUDES or _ours_renamed(key, task[key]):
                    continue
                where = f"{at}[{i}].{key}"
                if key in ANSIBLE_TASK_KEYS:
                    return task, key, where, f"the task keyword {key!r}"
                if key in SERVICE_MANAGERS:
                    return task, key, where, f"{key} (Ansible's service manager, which opsconsole does not run " \
                                             f"natively: it would drive the host's init system)"
                if canonical(key) is None and _looks_like_ansible_module(key):
                    return task, key, where, key
        return None

    def foreign_role_include(self, task: dict, key: str, at: str) -> tuple[Any, Any, str, str] | None:
        """What of an include_role/import_role the native runner does not have: a loop over it, `apply`, a
        role named by a template, role dependencies, a module or keyword in the role's tasks or handlers."""
        value = task[key]
        if not isinstance(value, dict):
            return None  # loading it natively says what is wrong
        for loop in ("loop", "with_items"):
            if loop in task:
                return task, loop, f"{at}.{loop}", f"{key} with a loop"
        if "apply" in value:
            return value, "apply", f"{at}.{key}.apply", f"{key} with apply"
        if is_template(value.get("name")):
            return value, "name", f"{at}.{key}.name", f"{key} of a role named by a template"
        directory = self.role_directory({"role": value.get("name")})
        if directory is None:
            return None
        meta = _role_file(directory, "meta")
        data = load_yaml(meta) if meta else None
        if isinstance(data, dict) and data.get("dependencies"):
            return task, key, f"{at}.{key}", f"role dependencies ({meta})"
        for part in ("tasks", "handlers"):
            file = value.get(f"{part}_from", "main")
            path, data = self.role_file(directory, part, file) if isinstance(file, str) else (None, None)
            if isinstance(data, list):
                found = self.foreign_tasks(data, f"{at}.{key}.{part}")
                if found:  # told at the include's line: the container found is in the role's file
                    return task, key, f"{at}.{key}", f"{found[3]} (in {path})"
        return None

    def serial(self, raw: dict, at: str) -> int | str | None:
        if "serial" not in raw or raw["serial"] is None:
            return None
        value = raw["serial"]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value or None
        if isinstance(value, str):
            m = _PERCENT.match(value.strip())
            if m and 1 <= int(m.group(1)) <= 100:
                return value.strip()
            if value.strip().isdigit():
                return int(value.strip()) or None
        raise self.error(raw, "serial", f"{at}.serial", f"{value!r} is not a host count or a percentage like 30%")

    # -- tasks -------------------------------------------------------------
    def task_list(self, raw: dict, key: str, at: str, handler_names: Mapping[str, str] | None) -> tuple[Task, ...]:
        if key not in raw or raw[key] is None:
            return ()
        items = raw[key]
        if not isinstance(items, list):
            raise self.error(raw, key, at, "must be a list of tasks")
        if handler_names is None:
            tasks = tuple(self.task(items, i, f"{at}[{i}]", handler_names) for i in range(len(items)))  # handlers are found by name: each needs a unique one
            seen: set[str] = set()
            for i, (item, task) in enumerate(zip(items, tasks)):
                if "name" not in item:
                    raise self.error(items, i, f"{at}[{i}].name", "a handler needs a name (tasks notify it by name)")
                if task.name in seen:
                    raise self.error(item, "name", f"{at}[{i}].name", f"duplicate handler name {task.name!r}")
                seen.add(task.name)
            return tasks
        return self.tasks_of(items, at, handler_names)

    def tasks_of(self, items: list, at: str, handler_names: Mapping[str, str]) -> tuple[Task, ...]:
        """The tasks of a list: blocks kept as blocks, includes replaced by the tasks they include."""
        tasks: list[Task] = []
        for i, raw in enumerate(items):
            where = f"{at}[{i}]"
            if isinstance(raw, dict) and "block" in raw:
                tasks.append(self.block(items, i, where, handler_names))
            elif isinstance(raw, dict) and any(k in INCLUDES for k in raw):
                tasks.extend(self.include(items, i, where, handler_names))
            elif isinstance(raw, dict) and any(k in ROLE_INCLUDES for k in raw):
                tasks.extend(self.role_include(items, i, where, handler_names))
            else:
                tasks.append(self.task(items, i, where, handler_names))
        return tuple(tasks)

    def block(self, items: list, index: int, at: str, handler_names: Mapping[str, str]) -> Task:
        raw = items[index]
        for key in raw:
            if key not in BLOCK_KEYS:
                raise self.error(raw, key, f"{at}.{key}", f"not a block key (a block has: {', '.join(BLOCK_KEYS)})")
        parts: dict[str, tuple[Task, ...]] = {}
        for part in ("block", "rescue", "always"):
            if raw.get(part) is None:
                parts[part] = ()
                continue
            if not isinstance(raw[part], list):
                raise self.error(raw, part, f"{at}.{part}", "must be a list of tasks")
            parts[part] = self.tasks_of(raw[part], f"{at}.{part}", handler_names)
        if not parts["block"]:
            raise self.error(raw, "block", f"{at}.block", "a block needs at least one task")
        # What is set on the block holds for each of its tasks (each evaluates the block's `when`).
        inherited = dict(when=self.conditions(raw, "when", f"{at}.when"), tags=self.tags(raw, f"{at}.tags"),
                         vars=self.variables(raw, "vars", f"{at}.vars"),
                         become=self.boolean(raw, "become", f"{at}.become", None),
                         ignore_errors=self.boolean(raw, "ignore_errors", f"{at}.ignore_errors", None),
                         no_log=self.boolean(raw, "no_log", f"{at}.no_log", None))
        name = raw.get("name", "block")
        self.text(raw, "name", f"{at}.name", name)
        return Task(name=str(name), module="block", args={}, line=line_of(items, index) or 1, path=at,
                    **{part: tuple(_inherit(t, **inherited) for t in tasks) for part, tasks in parts.items()})

    def include(self, items: list, index: int, at: str, handler_names: Mapping[str, str]) -> tuple[Task, ...]:
        """include_tasks/import_tasks of a file named as it is written: loaded now, checked like the rest."""
        raw = items[index]
        key = next(k for k in raw if k in INCLUDES)
        allowed = ("name", key, "when", "tags", "vars", "become", "ignore_errors", "no_log")
        for k in raw:
            if k not in allowed:
                raise self.error(raw, k, f"{at}.{k}", f"not a key of {key} (known: {', '.join(allowed)})")
        value = raw[key]
        if isinstance(value, dict):
            unknown = [k for k in value if k != "file"]
            if unknown:
                raise self.error(value, unknown[0], f"{at}.{key}.{unknown[0]}", "unknown argument (known: file)")
            value = value.get("file")
        if not isinstance(value, str) or not value.strip():
            raise self.error(raw, key, f"{at}.{key}", "must name a task file (`tasks/setup.yml`)")
        if is_template(value):
            raise self.error(raw, key, f"{at}.{key}",
                             "a task file named by a template is not run natively (name the file as it is)")
        path = next((p for p in (self.path.absolute().parent / value, self.dir / value, self.dir / "tasks" / value)
                     if p.is_file()), None)
        if path is None:
            raise self.error(raw, key, f"{at}.{key}", f"file not found: {value} (looked next to "
                             f"{self.path.name}, in {self.dir} and its tasks/)")
        if path.resolve() in self.including or len(self.including) > _MAX_INCLUDE_DEPTH:
            raise self.error(raw, key, f"{at}.{key}", f"{value} includes itself (through {self.path.name})")
        sub = self.sub_loader(path, (*self.including, self.path.resolve()), self.role_dir)
        data = load_yaml(path)
        if data is None:
            return ()
        if not isinstance(data, list):
            raise SourceError(path, getattr(data, "line", 1), "", "a task file is a list of tasks")
        tasks = sub.tasks_of(data, "tasks", handler_names)
        inherited = dict(when=self.conditions(raw, "when", f"{at}.when"), tags=self.tags(raw, f"{at}.tags"),
                         vars=self.variables(raw, "vars", f"{at}.vars"),
                         become=self.boolean(raw, "become", f"{at}.become", None),
                         ignore_errors=self.boolean(raw, "ignore_errors", f"{at}.ignore_errors", None),
                         no_log=self.boolean(raw, "no_log", f"{at}.no_log", None))
        return tuple(_inherit(t, **inherited) for t in tasks)

    def read_role_includes(self, items: Any, at: str) -> None:
        """Read the roles that include_role/import_role name in these tasks (and their blocks) before the
        tasks themselves: a task may notify an included role's handler, so its handlers must be known."""
        if not isinstance(items, list):
            return
        for i, raw in enumerate(items):
            if isinstance(raw, dict) and "block" in raw:
                for part in ("block", "rescue", "always"):
                    self.read_role_includes(raw.get(part), f"{at}[{i}].{part}")
            elif isinstance(raw, dict) and any(k in ROLE_INCLUDES for k in raw):
                self.read_role_include(raw, f"{at}[{i}]")

    def read_role_include(self, raw: dict, where: str) -> "_Role":
        key = next(k for k in raw if k in ROLE_INCLUDES)
        allowed = (key, *_INCLUDE_KEYS)
        for k in raw:
            if k not in allowed:
                raise self.error(raw, k, f"{where}.{k}", f"not a key of {key} (known: {', '.join(allowed)})")
        value = raw[key]
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"].strip():
            raise self.error(raw, key, f"{where}.{key}.name", "required: the role's name (`name: web`)")
        for arg in value:
            if arg not in ROLE_INCLUDE_ARGS:
                raise self.error(value, arg, f"{where}.{key}.{arg}",
                                 f"unknown argument (known: {', '.join(ROLE_INCLUDE_ARGS)})")
        files: dict[str, str] = {}
        for part in ("tasks", "vars", "defaults", "handlers"):
            file = value.get(f"{part}_from")
            if file is None:
                continue
            if not isinstance(file, str) or not file.strip() or is_template(file):
                raise self.error(value, f"{part}_from", f"{where}.{key}.{part}_from",
                                 f"must name a file of the role's {part}/ (`{part}_from: setup`)")
            files[part] = file.strip()
        public = self.boolean(value, "public", f"{where}.{key}.public", ROLE_INCLUDES[key] == "import_role")
        for flag in ("allow_duplicates", "rolespec_validate"):
            self.boolean(value, flag, f"{where}.{key}.{flag}", None)
        # The include's vars are Ansible's include params: above the role's and the task's own variables,
        # as a role entry's parameters are.
        params = self.variables(raw, "vars", f"{where}.vars")
        role = self.role(raw, key, f"{where}.{key}", files, entry={"role": value["name"], **params})
        self.included_roles[id(raw)] = role
        if public:
            self.exposed.append(role)
        return role

    def role_include(self, items: list, index: int, at: str, handler_names: Mapping[str, str]) -> tuple[Task, ...]:
        """include_role/import_role: the role's tasks here, with the task's when/tags/vars/become/... on each,
        as import_role does (include_role: its tags are its own, not its tasks'; see Ansible's docs)."""
        raw = items[index]
        # Read with the play's tasks, or now when in a file read after them (an included task file, a role's
        # tasks): then its handlers are not the play's, and a task notifying one is refused by name.
        role = self.included_roles.get(id(raw)) or self.read_role_include(raw, at)
        key = next(k for k in raw if k in ROLE_INCLUDES)
        inherited = dict(when=self.conditions(raw, "when", f"{at}.when"),
                         tags=self.tags(raw, f"{at}.tags") if ROLE_INCLUDES[key] == "import_role" else (),
                         become=self.boolean(raw, "become", f"{at}.become", None),
                         ignore_errors=self.boolean(raw, "ignore_errors", f"{at}.ignore_errors", None),
                         no_log=self.boolean(raw, "no_log", f"{at}.no_log", None))
        return tuple(_inherit(t, **inherited) for t in role.tasks(handler_names))

    def task(self, items: list, index: int, at: str, handler_names: Mapping[str, str] | None) -> Task:
        raw = items[index]
        if not isinstance(raw, dict):
            raise self.error(items, index, at, "a task is a mapping: a name, one module and its arguments")
        module_key: str | None = None
        for key in raw:
            if key in TASK_KEYS:
                continue
            if isinstance(key, str) and key in MOVED_MODULES:
                raise self.error(raw, key, f"{at}.{key}", MOVED_MODULES[key])
            if not isinstance(key, str) or canonical(key) is None:
                modules = ", ".join(sorted(SPECS) + sorted(k for k in ALIASES if "." not in k))
                more = "" if ansible_playbook() else \
                    f"; ansible-core's other modules run through ansible-playbook once installed: {EXTRA}"
                raise self.error(raw, key, f"{at}.{key}", f"unknown module or task key (native modules: {modules}; "
                                 f"task keys: {', '.join(TASK_KEYS)}{more})")
            if module_key is not None:
                raise self.error(raw, key, f"{at}.{key}",
                                 f"a task runs exactly one module; this one also has {module_key!r}")
            module_key = key
        if module_key is None:
            raise self.error(items, index, at, f"no module in this task (one of: {', '.join(sorted(SPECS))})")
        module = canonical(module_key)
        assert module is not None
        args = self.module_args(raw, module_key, module, f"{at}.{module_key}")
        name = raw.get("name")
        no_log = self.boolean(raw, "no_log", f"{at}.no_log", False)
        if name is None and no_log:
            name = f"{module_key} (no_log)"  # the default name would show the command
        if name is None:
            name = f"{module_key}: {args.get('cmd', args.get('msg', args.get('dest', args.get('name', ''))))}"[:60]
        self.text(raw, "name", f"{at}.name", name)
        notify = raw.get("notify", ())
        if isinstance(notify, str):
            notify = (notify,)
        if not isinstance(notify, (list, tuple)) or not all(isinstance(n, str) for n in notify):
            raise self.error(raw, "notify", f"{at}.notify", "must be a handler name or a list of them")
        if notify and handler_names is None:
            raise self.error(raw, "notify", f"{at}.notify", "a handler cannot notify another handler")
        for n in notify:
            if handler_names is not None and n not in handler_names:
                known = ", ".join(sorted(set(handler_names.values()))) or "none"
                raise self.error(raw, "notify", f"{at}.notify", f"no handler named {n!r} in this play (handlers: {known})")
        # As Ansible: `name` or `ROLE : name`, the last handler so named; kept as that handler's key.
        notify = [handler_names[n] for n in notify] if handler_names is not None else notify
        register = raw.get("register")
        if register is not None and (not isinstance(register, str) or not _IDENTIFIER.match(register)):
            raise self.error(raw, "register", f"{at}.register", "must be a variable name (letters, digits, _)")
        timeout = None
        if raw.get("timeout") is not None:
            try:
                timeout = parse_duration(raw["timeout"])
            except ValueError as exc:
                raise self.error(raw, "timeout", f"{at}.timeout", str(exc)) from None
        if "loop" in raw and "with_items" in raw:
            raise self.error(raw, "with_items", f"{at}.with_items", "give loop or with_items, not both")
        loop_key = "with_items" if "with_items" in raw else "loop"
        loop = raw.get(loop_key)
        if loop is not None and not isinstance(loop, list) and not is_template(loop):
            raise self.error(raw, loop_key, f"{at}.{loop_key}", "must be a list or a template giving one")
        if isinstance(loop, list):
            self.templates(loop, raw, loop_key, f"{at}.{loop_key}")
        return Task(
            name=str(name), module=module, args=args, line=line_of(items, index) or 1, path=at,
            when=self.conditions(raw, "when", f"{at}.when"), register=register, notify=tuple(notify),
            ignore_errors=self.boolean(raw, "ignore_errors", f"{at}.ignore_errors", False),
            become=self.boolean(raw, "become", f"{at}.become", None),
            vars=self.variables(raw, "vars", f"{at}.vars"),
            changed_when=self.condition_or_none(raw, "changed_when", f"{at}.changed_when"),
            failed_when=self.condition_or_none(raw, "failed_when", f"{at}.failed_when"),
            loop=loop, timeout=timeout, no_log=no_log, tags=self.tags(raw, f"{at}.tags"),
            flatten_loop=loop_key == "with_items",
            check_mode=self.boolean(raw, "check_mode", f"{at}.check_mode", None),
            diff=self.boolean(raw, "diff", f"{at}.diff", None),
        )

    def module_args(self, raw: dict, key: str, module: str, at: str) -> dict[str, Any]:
        spec = SPECS[module]
        value = raw[key]
        if spec.any_args and isinstance(value, dict):
            for arg in value:
                if not isinstance(arg, str) or not _IDENTIFIER.match(arg):
                    raise self.error(value, arg, f"{at}.{arg}", "not a valid variable name (letters, digits, _)")
        if isinstance(value, str) and spec.free_form:
            args: dict[str, Any] = {spec.free_form: value}
            container: Any = raw
            if module in ("shell", "command"):
                args = _free_form_options(value)
        elif isinstance(value, dict):
            args, container = dict(value), value
        elif value is None and (not spec.required or module in self.defaults):
            args, container = {}, raw
        else:
            form = f"a string or a mapping of {', '.join(spec.known)}" if spec.free_form else \
                f"a mapping of {', '.join(spec.known)}"
            raise self.error(raw, key, at, f"arguments must be {form}")
        # As Ansible: the play's module_defaults fill in what the task does not give.
        args = {**self.defaults.get(module, {}), **args}
        for arg in args:
            if spec.any_args:
                break
            if (module, arg) in MOVED_ARGUMENTS:
                raise self.error(container, arg, f"{at}.{arg}", MOVED_ARGUMENTS[module, arg])
            if arg not in spec.known:
                raise self.error(container, arg, f"{at}.{arg}", f"unknown argument (known: {', '.join(spec.known)})")
            if isinstance(args[arg], (dict, list)) and arg not in _STRUCTURED.get(module, ()):
                kind = "a mapping" if isinstance(args[arg], dict) else "a list"
                raise self.error(container, arg, f"{at}.{arg}",
                                 f"wrong type: {kind}, where {module} takes one value (text, a number or true/false)")
        for arg in spec.required:
            if arg not in args or args[arg] is None or args[arg] == "":
                where = container if arg in args else raw
                raise self.error(where, arg if arg in args else key, f"{at}.{arg}", "required argument missing")
        for arg in spec.booleans:
            v = args.get(arg)
            if v is not None and not is_template(v) and not isinstance(v, bool) and \
                    str(v).strip().lower() not in ("yes", "no", "true", "false", "on", "off", "1", "0", "y", "n"):
                raise self.error(container, arg, f"{at}.{arg}", f"{v!r} is not a boolean (true/false, yes/no)")
        for arg, allowed in spec.choices.items():
            v = args.get(arg)
            if v is not None and not is_template(v) and v not in allowed:
                raise self.error(container, arg, f"{at}.{arg}", f"{v!r} is not one of {', '.join(allowed)}")
        if container is raw:  # free form: the value is the module key's own
            self.templates(value, raw, key, f"{at}.{spec.free_form}" if spec.free_form else at)
        else:
            self.templates(args, container, None, at)
        # check_copy, check_opsconsole_builtin_service, ...
        getattr(self, f"check_{module.replace('.', '_')}", lambda *a: None)(args, container, raw, key, at)
        if "mode" in args and not is_template(args["mode"]):
            try:
                parse_mode(args["mode"])
            except ValueError as exc:
                raise self.error(container, "mode", f"{at}.mode", str(exc)) from None
        return args

    # Module-specific rules, beyond required/known/choices.
    def check_copy(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        has_src, has_content = args.get("src") not in (None, ""), "content" in args
        if has_src == has_content:
            raise self.error(raw, key, f"{at}.src", "give exactly one of src (a file) or content (text)")
        if has_src:
            self.source(args, container, at)

    def check_template(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        self.source(args, container, at)

    def check_file(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        if args.get("state") == "link" and not args.get("src"):
            raise self.error(container, "state", f"{at}.src", "required argument missing (state link needs src)")

    def check_opsconsole_builtin_service(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        if args.get("state") in ("started", "restarted") and not args.get("command"):
            raise self.error(container, "state", f"{at}.command",
                             f"required argument missing (state {args['state']} needs the command to run)")
        if "env" in args and not isinstance(args["env"], dict):
            raise self.error(container, "env", f"{at}.env", "must be a mapping of NAME: value")
        v = args.get("port")
        if v is not None and not is_template(v) and not (isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536):
            raise self.error(container, "port", f"{at}.port", f"{v!r} is not a TCP port (1-65535)")

    def check_wait_for(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        if "port" in args and "path" in args:
            raise self.error(container, "path", f"{at}.path", "give port or path, not both")
        self.number(args, container, at, "port")
        self.seconds(args, container, at, "timeout")

    def check_unarchive(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        remote = args.get("remote_src")
        if not is_template(remote) and not truthy(remote):
            self.source(args, container, at)  # on this machine: it must be there now

    def check_get_url(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        v = args.get("checksum")
        if v not in (None, "") and not is_template(v):
            try:
                parse_checksum(str(v))
            except ValueError as exc:
                raise self.error(container, "checksum", f"{at}.checksum", str(exc)) from None
        self.mapping(args, container, at, "headers")
        self.seconds(args, container, at, "timeout")

    def check_uri(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        v = args.get("status_code")
        if v is not None and not is_template(v):
            try:
                expected_statuses(v)
            except ValueError:
                raise self.error(container, "status_code", f"{at}.status_code",
                                 f"{v!r} is not a status code or a list of them") from None
        self.mapping(args, container, at, "headers")
        self.seconds(args, container, at, "timeout")

    def mapping(self, args: dict, container: Any, at: str, arg: str) -> None:
        if arg in args and not isinstance(args[arg], dict) and not is_template(args[arg]):
            raise self.error(container, arg, f"{at}.{arg}", "wrong type: must be a mapping of name: value")

    def check_opsconsole_builtin_health(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        if "timeout" in args and not is_template(args["timeout"]):
            try:
                parse_duration(args["timeout"])
            except ValueError as exc:
                raise self.error(container, "timeout", f"{at}.timeout", str(exc)) from None
        self.number(args, container, at, "status")

    def check_pause(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        for arg in ("seconds", "minutes"):
            self.seconds(args, container, at, arg)

    def seconds(self, args: dict, container: Any, at: str, arg: str) -> None:
        """A module's wait, in seconds as Ansible writes them (10, not 10s); pause's minutes too."""
        v = args.get(arg)
        unit = "minutes" if arg == "minutes" else "seconds"
        if v is not None and not is_template(v) and not _is_number(v, 60 if arg == "minutes" else 1):
            raise self.error(container, arg, f"{at}.{arg}",
                             f"{v!r} is not a number of {unit}, 0 or more (Ansible writes 10, not 10s)")

    # git, group, user, apt (system.py): Ansible's int arguments are whole numbers (written bare or quoted);
    # user's groups names groups.
    def check_git(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        self.whole_number(args, container, at, "depth")

    def check_group(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        self.whole_number(args, container, at, "gid")

    def check_apt(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        self.whole_number(args, container, at, "cache_valid_time")
        names = args.get("name")
        if isinstance(names, list) and not all(isinstance(n, str) for n in names):
            raise self.error(container, "name", f"{at}.name", "wrong type: name is a package name or a list of them")
        if names in (None, "", []) and not any(args.get(a) for a in ("deb", "update_cache", "cache_valid_time")):
            raise self.error(raw, key, at, "give name (packages), deb (a .deb file) or update_cache")

    def check_user(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        self.whole_number(args, container, at, "uid")
        groups = args.get("groups")
        if isinstance(groups, list) and not all(isinstance(g, (str, int)) and not isinstance(g, bool) for g in groups):
            raise self.error(container, "groups", f"{at}.groups", "wrong type: groups is a list of group names")

    def whole_number(self, args: dict, container: Any, at: str, arg: str) -> None:
        v = args.get(arg)
        if v is not None and not is_template(v) and not (isinstance(v, int) and not isinstance(v, bool)) and \
                not (isinstance(v, str) and v.strip().isdigit()):
            raise self.error(container, arg, f"{at}.{arg}", f"wrong type: {v!r} is not a whole number")

    def number(self, args: dict, container: Any, at: str, arg: str) -> None:
        v = args.get(arg)
        if v is not None and not is_template(v) and not (isinstance(v, int) and not isinstance(v, bool)):
            raise self.error(container, arg, f"{at}.{arg}", f"{v!r} is not a number")

    def check_assert(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        that = args["that"]
        conditions = that if isinstance(that, list) else [that]
        for i, condition in enumerate(conditions):
            where, holder = (f"{at}.that[{i}]", that) if isinstance(that, list) else (f"{at}.that", container)
            self.condition(holder, i if isinstance(that, list) else "that", where, condition)

    def check_debug(self, args: dict, container: Any, raw: dict, key: str, at: str) -> None:
        if "msg" in args and "var" in args:
            raise self.error(container, "var", f"{at}.var", "give msg or var, not both")
        if "var" in args:
            self.condition(container, "var", f"{at}.var", args["var"])

    def module_defaults(self, raw: dict, at: str) -> dict[str, dict[str, Any]]:
        """module_defaults as a mapping of module name (FQCN or short) to its default arguments; each
        default is checked as the module's argument when a task uses it."""
        value = raw.get("module_defaults")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(raw, "module_defaults", at, "must be a mapping of module name: {argument: value}")
        defaults: dict[str, dict[str, Any]] = {}
        for name, args in value.items():
            module = canonical(name) if isinstance(name, str) else None
            if module is None:
                raise self.error(value, name, f"{at}.{name}", "not a module name the native runner knows")
            if not isinstance(args, dict):
                raise self.error(value, name, f"{at}.{name}", "must be a mapping of argument: value")
            for arg in args:
                if arg not in SPECS[module].known:
                    raise self.error(args, arg, f"{at}.{name}.{arg}",
                                     f"unknown argument (known: {', '.join(SPECS[module].known)})")
            self.templates(args, value, name, f"{at}.{name}")
            defaults[module] = {**defaults.get(module, {}), **args}
        return defaults

    def vars_files(self, raw: dict, at: str) -> dict[str, Any]:
        value = raw.get("vars_files")
        if value is None:
            return {}
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self.error(raw, "vars_files", at, "must be a file name or a list of them")
        merged: dict[str, Any] = {}
        for i, name in enumerate(names):
            where, holder, key = (f"{at}[{i}]", names, i) if isinstance(value, list) else (at, raw, "vars_files")
            if is_template(name):
                raise self.error(holder, key, where, "a vars file named by a template is not read natively")
            path = self.dir / name
            if not path.is_file():
                raise self.error(holder, key, where, f"file not found: {name} (looked in {self.dir})")
            data = load_yaml(path)
            if data is None:
                continue
            if not isinstance(data, dict):
                raise SourceError(path, getattr(data, "line", 1), "", "a vars file is a mapping of name: value")
            merged.update(_Loader(path, self.dir).variables({"vars": data}, "vars", "vars"))
        return merged

    def tags(self, raw: dict, at: str) -> tuple[str, ...]:
        value = raw.get("tags")
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        if isinstance(value, list) and all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in value):
            return tuple(str(t) for t in value)
        raise self.error(raw, "tags", at, "must be a tag or a list of tags")

    def source(self, args: dict, container: Any, at: str) -> None:
        src = args["src"]
        if not isinstance(src, str):
            raise self.error(container, "src", f"{at}.src", "must be a file path")
        if is_template(src):
            return  # known only at run time (e.g. "{{ artifact }}"); the module checks it then
        kind = "templates" if at.endswith((".template", ".ansible.builtin.template")) else "files"
        if find_source(src, self.dir, self.role_dir, kind) is None:
            where = f"{self.role_dir / kind}, {self.role_dir}, " if self.role_dir else ""
            raise self.error(container, "src", f"{at}.src",
                             f"file not found: {src} (looked in {where}{self.dir}, its templates/ and files/)")

    # -- values ------------------------------------------------------------
    def templates(self, value: Any, container: Any, key: Any, at: str) -> None:
        """Refuse template syntax errors in every string inside `value` now, not on the third host."""
        if isinstance(value, str):
            problem = check_syntax(value)
            if problem:
                raise self.error(container, key, at, problem)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.templates(v, value, k, f"{at}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.templates(v, value, i, f"{at}[{i}]")

    def variables(self, raw: dict, key: str, at: str) -> dict[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(raw, key, at, "must be a mapping of name: value")
        for name in value:
            if not isinstance(name, str) or not _IDENTIFIER.match(name):
                raise self.error(value, name, f"{at}.{name}", "not a valid variable name (letters, digits, _)")
        self.templates(value, raw, key, at)
        return dict(value)

    def conditions(self, raw: dict, key: str, at: str) -> tuple[Any, ...]:
        if key not in raw or raw[key] is None:
            return ()
        value = raw[key]
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{at}[{i}]" if isinstance(value, list) else at
            self.condition(value if isinstance(value, list) else raw, i if isinstance(value, list) else key,
                           where, item)
        return tuple(items)

    def condition(self, container: Any, key: Any, at: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if not isinstance(value, str) or not value.strip():
            raise self.error(container, key, at, "must be a Jinja expression, e.g. `result.rc == 0`")
        problem = check_syntax(value) if is_template(value) else check_expression(value)
        if problem:
            raise self.error(container, key, at, problem)

    def condition_or_none(self, raw: dict, key: str, at: str) -> Any:
        if raw.get(key) is None:
            return None
        self.condition(raw, key, at, raw[key])
        return raw[key]

    def boolean(self, raw: dict, key: str, at: str, default: Any) -> Any:
        if key not in raw or raw[key] is None:
            return default
        if not isinstance(raw[key], bool):
            raise self.error(raw, key, at, f"{raw[key]!r} is not true or false")
        return raw[key]

    def text(self, raw: dict, key: str, at: str, value: Any) -> None:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.error(raw, key, at, "must be text")


# Ansible's keywords the native runner does not have: a play using one runs with ansible-playbook.
ANSIBLE_PLAY_KEYS = ("roles", "pre_tasks", "post_tasks", "strategy", "max_fail_percentage", "any_errors_fatal",
                     "force_handlers", "environment", "collections", "remote_user", "become_user",
                     "become_method", "connection", "order", "vars_prompt", "run_once", "throttle", "check_mode",
                     "diff", "ignore_unreachable", "port", "debugger", "fact_path", "gather_subset",
                     "gather_timeout", "no_log", "when", "ignore_errors")
ANSIBLE_TASK_KEYS = ("until", "retries", "delay", "delegate_to", "delegate_facts", "run_once", "environment",
                     "args", "async", "poll", "listen", "throttle", "any_errors_fatal",
                     "module_defaults", "collections", "debugger", "local_action", "connection", "remote_user",
                     "become_user", "become_method", "become_flags", "loop_control", "with_dict", "with_list",
                     "with_fileglob", "with_together", "with_nested", "with_sequence", "with_subelements",
                     "with_lines", "include_vars", "ansible.builtin.include_vars", "meta",
                     "ansible.builtin.meta", "ignore_unreachable", "action")


@dataclasses.dataclass
class _Role:
    """A role of a play, read: its tasks are loaded once the play's handler names are all known."""

    loader: _Loader
    directory: Path
    defaults: dict[str, Any]  # defaults/main.yml
    exports: dict[str, Any]  # vars/main.yml
    role_vars: dict[str, Any]  # vars/main.yml and the entry's `vars:`
    params: dict[str, Any]  # the entry's other keys
    inherited: dict[str, Any]  # the entry's when/tags/become, for each of its tasks
    handlers: tuple[Task, ...]
    name: str = ""
    tasks_file: str = "main"  # tasks/main.yml, or include_role's tasks_from

    def tasks(self, handler_names: Mapping[str, str]) -> tuple[Task, ...]:
        path, data = self.loader.role_file(self.directory, "tasks", self.tasks_file)
        if path is None or data is None:
            return ()
        if not isinstance(data, list):
            raise SourceError(path, getattr(data, "line", 1), "", "a task file is a list of tasks")
        loader = self.loader.sub_loader(path, role_dir=self.directory)
        return tuple(self.in_role(_inherit(t, **self.inherited)) for t in loader.tasks_of(data, "tasks", handler_names))

    def in_role(self, task: Task) -> Task:
        """`task` (and a block's tasks) with this role's variables, directory and name."""
        parts = {part: tuple(self.in_role(t) for t in getattr(task, part)) for part in ("block", "rescue", "always")}
        return dataclasses.replace(task, role_defaults=self.defaults, role_vars=self.role_vars, role_name=self.name,
                                   role_params=self.params, role_dir=str(self.directory), **parts)


def _role_file(directory: Path, part: str, file: str = "main") -> Path | None:
    """A role's PART/FILE.yml (or .yaml, or FILE as written), or None when the role has none."""
    return next((p for p in (directory / part / f"{file}.yml", directory / part / f"{file}.yaml", directory / part / file)
                 if p.is_file()), None)


def _last_of_each_name(handlers: tuple[Task, ...]) -> tuple[Task, ...]:
    """As Ansible: of handlers with the same name in the same role (a role listed twice), the last one loaded
    is notified."""
    last = {h.handler_key: i for i, h in enumerate(handlers)}
    return tuple(h for i, h in enumerate(handlers) if last[h.handler_key] == i)


def _notifications(handlers: tuple[Task, ...]) -> dict[str, str]:
    """What a task may notify -> the handler it means: a handler's name, and a role's handler also as
    `ROLE : name`; as Ansible, the last handler defined wins a name two have."""
    names: dict[str, str] = {}
    for h in handlers:
        names[h.name] = names[h.handler_key] = h.handler_key
    return names


# Ansible's service managers: valid Ansible, so a play using one runs with ansible-playbook.
SERVICE_MANAGERS = tuple(f"{prefix}{name}" for name in ("service", "systemd", "systemd_service", "sysvinit")
                         for prefix in ("", "ansible.builtin.", "ansible.legacy."))
# The arguments only opsconsole's own service had, when it was called `service`.
_OUR_SERVICE_ARGUMENTS = ("command", "chdir", "env", "port")


def _ours_renamed(key: str, value: Any) -> bool:
    """A task written for opsconsole's old `service`/`daemon` (refused at load, naming the new name),
    not one for Ansible's service manager."""
    return key in MOVED_MODULES and (key not in SERVICE_MANAGERS or
                                     (isinstance(value, dict) and any(a in value for a in _OUR_SERVICE_ARGUMENTS)))


def _looks_like_ansible_module(name: str) -> bool:
    """A collection's module (namespace.collection.module), or one of ansible-core's by its short name.
    Anything else is an unknown name (a typo), which the loader refuses as such."""
    parts = name.split(".")
    if len(parts) == 3 and all(_IDENTIFIER.match(p) for p in parts):
        if parts[0] == "opsconsole":
            return False  # ours are all native: a wrong one is a typo
        if parts[:2] in (["ansible", "builtin"], ["ansible", "legacy"]):
            return builtin_module_exists(parts[2])
        return True
    if len(parts) == 1 and _IDENTIFIER.match(name):
        return builtin_module_exists(name)
    return False


# The arguments that take a list or a mapping; every other argument is one value, as in Ansible's modules.
_STRUCTURED = {"copy": ("content",), "assert": ("that",), "debug": ("msg",), "opsconsole.builtin.service": ("env",),
               "uri": ("body", "status_code", "headers"), "get_url": ("headers",), "user": ("groups",),
               "apt": ("name",)}

_FREE_FORM_OPTIONS = ("creates", "removes", "chdir")


def _free_form_options(text: str) -> dict[str, Any]:
    """`shell: make creates=build/app chdir={{ src }}` as Ansible reads it: the options leave the command.
    Words are split on blanks outside quotes and `{{ }}`/`{% %}`, so a templated value stays whole."""
    options: dict[str, Any] = {}
    spans: list[tuple[int, int]] = []
    for start, end in _words(text):
        key, sep, value = text[start:end].partition("=")
        if sep and key in _FREE_FORM_OPTIONS and value:
            options[key] = value.strip("'\"")
            spans.append((start, end))
    if not options:
        return {"cmd": text}
    command = text
    for start, end in reversed(spans):
        command = command[:start] + command[end:]
    return {"cmd": " ".join(command.split(" ")).strip(), **options}


def _words(text: str) -> list[tuple[int, int]]:
    words, start, depth, quote, i = [], None, 0, "", 0
    while i < len(text):
        two = text[i:i + 2]
        if not quote and two in ("{{", "{%"):
            depth, i = depth + 1, i + 2
            start = i - 2 if start is None else start
            continue
        if not quote and depth and two in ("}}", "%}"):
            depth, i = depth - 1, i + 2
            continue
        c = text[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"" and not depth:
            quote = c
            start = i if start is None else start
        elif c.isspace() and not depth:
            if start is not None:
                words.append((start, i))
            start = None
        elif start is None:
            start = i
        i += 1
    if start is not None:
        words.append((start, len(text)))
    return words


def _inherit(task: Task, when: tuple[Any, ...] = (), tags: tuple[str, ...] = (), vars: dict[str, Any] | None = None,
             become: bool | None = None, ignore_errors: bool | None = None, no_log: bool | None = None) -> Task:
    """`task` with what its block, include or play sets (the task's own settings win)."""
    changes: dict[str, Any] = {"when": (*when, *task.when), "tags": (*tags, *[t for t in task.tags if t not in tags])}
    if vars:
        changes["vars"] = {**vars, **task.vars}
    if task.become is None and become is not None:
        changes["become"] = become
    if ignore_errors:
        changes["ignore_errors"] = True
    if no_log:
        changes["no_log"] = True
    if task.module == "block":  # a nested block hands it all down again
        for part in ("block", "rescue", "always"):
            changes[part] = tuple(_inherit(t, when, tags, vars, become, ignore_errors, no_log)
                                  for t in getattr(task, part))
        changes["when"], changes["tags"] = (), ()
    return dataclasses.replace(task, **changes)


def _is_number(value: Any, scale: float = 1) -> bool:
    try:
        seconds_number(value, scale)
    except ValueError:
        return False
    return True


__all__ = ["PLAY_KEYS", "TASK_KEYS", "load_playbook"]
