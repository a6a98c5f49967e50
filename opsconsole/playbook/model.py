"""What a loaded, validated playbook is: plays of tasks, and what running one produced.

Values are kept as written (templates unrendered): they are rendered per host
at run time, when the host's variables are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Task:
    name: str
    module: str  # canonical module name (shell, copy, opsconsole.builtin.service, ...), or "block"
    args: Mapping[str, Any]  # normalised: free-form strings become {"cmd": ...}
    line: int  # where the task starts, for messages
    path: str  # key path, e.g. "plays[0].tasks[3]"
    when: tuple[Any, ...] = ()  # expressions (or bools), all must hold
    register: str | None = None
    notify: tuple[str, ...] = ()
    ignore_errors: bool = False
    become: bool | None = None  # None: the play's setting
    vars: Mapping[str, Any] = field(default_factory=dict)
    changed_when: Any = None
    failed_when: Any = None
    loop: Any = None  # a list, or a template yielding one
    timeout: float | None = None  # seconds; for commands
    no_log: bool = False  # as Ansible: command, arguments and output shown as "(output hidden: no_log)"
    tags: tuple[str, ...] = ()  # its own and those inherited from its play, block or include
    flatten_loop: bool = False  # `with_items`: the list is flattened one level, as Ansible does
    check_mode: bool | None = None  # Ansible's task keyword: False runs it for real under --check; None: the run's
    diff: bool | None = None  # Ansible's task keyword: show (or not) this task's before/after; None: the run's
    # A block (module "block"): its tasks, then `rescue` if one of them failed, then `always`.
    # Its when/tags/vars/become/ignore_errors were handed down to these tasks when it was loaded.
    block: tuple["Task", ...] = ()
    rescue: tuple["Task", ...] = ()
    always: tuple["Task", ...] = ()
    # A task from a role, as in Ansible: the role's defaults (below every other variable), its vars/main.yml
    # and entry `vars:` (above the play's), its parameters (above registered results) and its directory
    # (where template/copy `src` is looked up first).
    role_defaults: Mapping[str, Any] = field(default_factory=dict)
    role_vars: Mapping[str, Any] = field(default_factory=dict)
    role_params: Mapping[str, Any] = field(default_factory=dict)
    role_dir: str | None = None
    role_name: str = ""  # a role's task or handler: the role's name

    @property
    def handler_key(self) -> str:
        """Which handler this is, as a notification names it: `ROLE : name` for a role's, else the name."""
        return f"{self.role_name} : {self.name}" if self.role_name else self.name


@dataclass(frozen=True)
class Play:
    name: str
    hosts: str
    line: int
    path: str
    serial: int | str | None = None  # int, or "N%"; None = all hosts at once
    vars: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[Task, ...] = ()
    handlers: tuple[Task, ...] = ()
    become: bool = False
    # "native", or "ansible" for a play that uses what the native runner does not have; `why` says what.
    runner: str = "native"
    why: str = ""
    source: Any = None  # an ansible play as written, handed to ansible-playbook
    # Every role's defaults (lowest of all) and vars/main.yml (above the play's vars): Ansible shows them
    # to every task of the play, not only the role's own.
    role_defaults: Mapping[str, Any] = field(default_factory=dict)
    role_exports: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Playbook:
    path: Path
    plays: tuple[Play, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def directory(self) -> Path:
        return self.path.parent


@dataclass
class PlaybookResult:
    """`host_status`: host → ok | failed | skipped, for every host a play selected.
    `failures`: failed host → why (task, command, exit code, last output)."""

    ok: bool
    host_status: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    # host -> titles of the tasks that changed something (under --check: that would), in order
    changed_tasks: dict[str, list[str]] = field(default_factory=dict)
    # host -> titles of the tasks --check could not tell about (command/shell without creates/removes, raw, uri)
    check_skipped: dict[str, list[str]] = field(default_factory=dict)

    def failure_text(self) -> str:
        """Why it failed, for the operator: `host: why` for each failed host, `; ` between them."""
        return "; ".join(f"{host}: {why}" for host, why in self.failures.items())


__all__ = ["Play", "Playbook", "PlaybookResult", "Task"]
