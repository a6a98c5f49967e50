"""The modules a task may use: their arguments (checked at load time) and what they do (at run time).

Everything a module does on a host goes through the Transport interface, so a
play behaves the same on a local directory and over SSH.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import os
import re
import shlex
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import httpx

from opsconsole.hosts import Host
from opsconsole.playbook import system, web
from opsconsole.playbook.templating import Templar
from opsconsole.transport.alive import alive_function
from opsconsole.transport.base import CommandResult, LineHandler, PathInTheWay, Transport, TransportError, shell_exact
from opsconsole.transport.ports import listening_test
from opsconsole.units import parse_duration, seconds_number


@dataclass(frozen=True)
class ModuleSpec:
    """The arguments of a module. `free_form`: the argument a plain string value stands for."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    free_form: str | None = None
    any_args: bool = False  # set_fact: every argument is a variable name
    booleans: tuple[str, ...] = ()  # arguments that are true/false (yes/no, as Ansible reads them)

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional


# opsconsole's own behaviours live under their own FQCN, so no name means two things: Ansible's
# `service` drives the host's service manager, ours starts a command detached with a pid file.
SERVICE = "opsconsole.builtin.service"
HEALTH = "opsconsole.builtin.health"

SPECS: dict[str, ModuleSpec] = {
    "shell": ModuleSpec(required=("cmd",), optional=("chdir", "creates", "removes"), free_form="cmd"),
    "command": ModuleSpec(required=("cmd",), optional=("chdir", "creates", "removes"), free_form="cmd"),
    "raw": ModuleSpec(required=("cmd",), free_form="cmd"),
    "copy": ModuleSpec(required=("dest",), optional=("src", "content", "mode", "force", "backup", "owner", "group"),
                       booleans=("force", "backup")),
    "stat": ModuleSpec(required=("path",), optional=("follow",), booleans=("follow",)),
    "slurp": ModuleSpec(required=("src",)),
    "lineinfile": ModuleSpec(required=("path",), optional=("line", "regexp", "state", "insertafter", "insertbefore",
                                                           "create", "mode"),
                             choices={"state": ("present", "absent")}, booleans=("create",)),
    "blockinfile": ModuleSpec(required=("path",), optional=("block", "marker", "state", "insertafter",
                                                            "insertbefore", "create", "mode"),
                              choices={"state": ("present", "absent")}, booleans=("create",)),
    "template": ModuleSpec(required=("src", "dest"), optional=("mode", "backup", "owner", "group"),
                           booleans=("backup",)),
    # As Ansible's: wait `seconds` or `minutes` (no prompt: a console has no one to answer it mid-play).
    "pause": ModuleSpec(optional=("seconds", "minutes")),
    "file": ModuleSpec(required=("path", "state"), optional=("src", "mode"),
                       choices={"state": ("directory", "absent", "touch", "link")}),
    # As Ansible's: a TCP port to accept connections, `timeout` in seconds (a number).
    "wait_for": ModuleSpec(optional=("port", "host", "path", "state", "timeout"),
                           choices={"state": ("started", "stopped", "present", "absent")}),
    "debug": ModuleSpec(optional=("msg", "var", "verbosity"), free_form="msg"),
    "set_fact": ModuleSpec(optional=("cacheable",), any_args=True),
    "assert": ModuleSpec(required=("that",), optional=("fail_msg", "msg", "success_msg", "quiet")),
    "fail": ModuleSpec(optional=("msg",), free_form="msg"),
    # As Ansible's: uri asks and reports (never changed); get_url downloads unless dest is there (or force).
    "uri": ModuleSpec(required=("url",), optional=("method", "body", "body_format", "status_code", "return_content",
                                                   "validate_certs", "headers", "timeout"),
                      choices={"body_format": ("raw", "json", "form-urlencoded")},
                      booleans=("return_content", "validate_certs")),
    "get_url": ModuleSpec(required=("url", "dest"), optional=("mode", "checksum", "force", "timeout", "validate_certs",
                                                              "headers", "owner", "group"),
                          booleans=("force", "validate_certs")),
    # As Ansible's: a tar archive (gz, bz2, xz: tar tells) from this machine, or on the host with remote_src.
    "unarchive": ModuleSpec(required=("src", "dest"), optional=("remote_src", "creates"), booleans=("remote_src",)),
    # As Ansible's (opsconsole/playbook/system.py): git, group, user, apt with their commands and semantics.
    "git": ModuleSpec(required=("repo", "dest"), optional=("version", "force", "depth", "update", "clone", "remote",
                                                           "accept_hostkey", "accept_newhostkey"),
                      booleans=("force", "update", "clone", "accept_hostkey", "accept_newhostkey")),
    "group": ModuleSpec(required=("name",), optional=("gid", "state", "system"),
                        choices={"state": ("present", "absent")}, booleans=("system",)),
    "user": ModuleSpec(required=("name",), optional=("uid", "group", "groups", "append", "comment", "shell", "home",
                                                     "create_home", "move_home", "system", "state", "remove", "force",
                                                     "password", "update_password"),
                       choices={"state": ("present", "absent"), "update_password": ("always", "on_create")},
                       booleans=("append", "create_home", "move_home", "system", "remove", "force")),
    "apt": ModuleSpec(optional=("name", "state", "update_cache", "cache_valid_time", "install_recommends", "deb",
                                "purge", "autoremove"),
                      choices={"state": ("present", "absent", "latest")},
                      booleans=("update_cache", "install_recommends", "purge", "autoremove")),
    SERVICE: ModuleSpec(required=("name", "state"), optional=("command", "chdir", "env", "port"),
                        choices={"state": ("started", "stopped", "restarted")}),
    HEALTH: ModuleSpec(required=("url",), optional=("status", "timeout")),
}
# The names an Ansible user may write for the same module: `ansible.builtin.copy` is `copy`.
ALIASES = {f"{prefix}.{name}": name for name in SPECS if "." not in name
           for prefix in ("ansible.builtin", "ansible.legacy")}

# Names that meant opsconsole's own behaviour before they meant Ansible's: a task written the old way
# (with our arguments: command, chdir, env, port) is refused, naming the new name. Ansible's own use
# of `service`/`systemd` is valid and runs with ansible-playbook (see the loader).
MOVED_MODULES = {
    name: f"`{name}` with opsconsole's arguments (command, chdir, env, port) is no longer ours: "
          f"opsconsole's service started by its command is `{SERVICE}` (same arguments); Ansible's "
          f"`{name}` (name, state, enabled) runs with ansible-playbook"
    for name in ("service", "ansible.builtin.service", "ansible.builtin.systemd", "systemd")
}
MOVED_MODULES["daemon"] = f"`daemon` is not a module; opsconsole's service started by its command is `{SERVICE}` " \
                          "(same arguments)"
# Arguments of ours that Ansible's module of that name does not have.
MOVED_ARGUMENTS = {
    ("wait_for", "url"): f"Ansible's wait_for has no url; for an HTTP answer use `{HEALTH}` (url, status, timeout)",
    ("wait_for", "status"): f"Ansible's wait_for has no status; for an HTTP answer use `{HEALTH}` (url, status, timeout)",
}


def canonical(name: str) -> str | None:
    """Our module name for `name`, or None if it is not a module."""
    if name in SPECS:
        return name
    return ALIASES.get(name)


def find_source(src: str, playbook_dir: Path, role_dir: Path | None = None,
                kind: str | None = None) -> Path | None:
    """Where a copy/template `src` is on this machine: as given if absolute; else, for a role's task, in
    the role's `kind` directory (templates/, files/) or the role itself; else next to the playbook or in
    its templates/ or files/ directory (like Ansible)."""
    path = Path(src).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    role_bases = () if role_dir is None else ((role_dir / kind,) if kind else ()) + (role_dir, role_dir / "tasks")
    for base in (*role_bases, playbook_dir, playbook_dir / "templates", playbook_dir / "files"):
        if (base / path).is_file():
            return base / path
    return None


def parse_mode(value: Any) -> int | None:
    """`"0644"`/`"644"` (octal text) or an int (YAML reads a bare 0644 as octal already). ValueError if bad."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a file mode")
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        if not text or any(c not in "01234567" for c in text.removeprefix("0o")):
            raise ValueError(f"{value!r} is not an octal file mode like \"0644\"")
        mode = int(text.removeprefix("0o"), 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"{value!r} is not a file mode (0000-7777 octal)")
    return mode


@dataclass
class ModuleContext:
    host: Host
    transport: Transport
    templar: Templar
    playbook_dir: Path
    on_line: LineHandler
    become: bool = False
    timeout: float | None = None
    role_dir: Path | None = None  # a role's task: its sources are looked up in the role first
    # Ansible's --check (tell what would change, change nothing: see checking.py) and --diff (before/after).
    check: bool = False
    diff: bool = False


@dataclass
class Outcome:
    changed: bool = False
    failed: bool = False
    rc: int | None = None
    stdout: str = ""
    command: str = ""  # what ran, for the failure message
    tail: tuple[str, ...] = ()
    message: str = ""
    facts: dict[str, Any] = field(default_factory=dict)  # set_fact: variables for the host's next tasks
    result: dict[str, Any] = field(default_factory=dict)  # more return values for `register` (stat: {...})
    started: str = ""  # service: the service this started or restarted, now running


class ModuleFailure(Exception):
    """The module could not do its work; the message says why."""


async def run_module(module: str, args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """Run `module` with rendered `args` on the context's host."""
    return await _RUNNERS[module](args, ctx)


def _from_result(command: str, result: CommandResult, changed: bool = True) -> Outcome:
    return Outcome(changed=changed, failed=not result.ok, rc=result.rc, stdout=result.stdout, command=command,
                   tail=result.tail, message="" if result.ok else result.describe())


async def _skip_for(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome | None:
    """Ansible's creates/removes: the command does not run when `creates` exists or `removes` does not.
    Relative paths are relative to chdir, as in Ansible."""
    for arg, skip_if_there in (("creates", True), ("removes", False)):
        path = _opt_str(args.get(arg))
        if path is None:
            continue
        chdir = _opt_str(args.get("chdir"))
        full = path if path.startswith("/") or chdir is None else f"{chdir.rstrip('/')}/{path}"
        if await ctx.transport.exists(full) == skip_if_there:
            why = f"skipped, since {path} {'exists' if skip_if_there else 'does not exist'}"
            return Outcome(rc=0, stdout=why, command=f"{args['cmd']}", message=why)
    return None


async def _raw(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    cmd = str(args["cmd"])
    result = await ctx.transport.run(cmd, on_line=ctx.on_line, become=ctx.become, timeout=ctx.timeout)
    return _from_result(cmd, result)


async def _shell(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    skipped = await _skip_for(args, ctx)
    if skipped is not None:
        return skipped
    cmd = str(args["cmd"])
    result = await ctx.transport.run(cmd, on_line=ctx.on_line, cwd=_opt_str(args.get("chdir")),
                                     become=ctx.become, timeout=ctx.timeout)
    return _from_result(cmd, result)


async def _command(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    # Split like Ansible's `command`, then quote every word: pipes, globs and $VARS stay literal.
    try:
        argv = shlex.split(str(args["cmd"]))
    except ValueError as exc:
        raise ModuleFailure(f"cannot split command {args['cmd']!r}: {exc}") from None
    if not argv:
        raise ModuleFailure("empty command")
    skipped = await _skip_for(args, ctx)
    if skipped is not None:
        return skipped
    cmd = shlex.join(argv)
    result = await ctx.transport.run(f"exec {cmd}", on_line=ctx.on_line, cwd=_opt_str(args.get("chdir")),
                                     become=ctx.become, timeout=ctx.timeout)
    return _from_result(cmd, result)


async def _copy(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    dest, mode = str(args["dest"]), _mode(args)
    if not truthy(args.get("force", True)) and await ctx.transport.exists(dest):
        return Outcome(command=f"copy -> {dest}", message=f"{dest} exists and force is false")
    if args.get("src") not in (None, ""):
        src = find_source(str(args["src"]), ctx.playbook_dir, ctx.role_dir, "files")
        if src is None:
            raise ModuleFailure(f"copy: source file {args['src']} not found (looked next to the playbook, "
                                f"in templates/ and files/ of {ctx.playbook_dir})")
        if not truthy(args.get("backup", False)):
            changed = await ctx.transport.put_file(str(src), dest, mode)
            return await _owned(Outcome(changed=changed, command=f"copy {src} -> {dest}"), dest, args, ctx)
        return await _put(ctx, dest, src.read_bytes(), mode, args, f"copy {src} -> {dest}")
    content = args.get("content", "")
    text = json.dumps(content, indent=2) if isinstance(content, (dict, list)) else str(content)
    return await _put(ctx, dest, text.encode(), mode, args, f"copy content -> {dest}")


async def _put(ctx: ModuleContext, dest: str, content: bytes, mode: int | None, args: Mapping[str, Any],
               what: str) -> Outcome:
    """Write `dest` (copy, template) with Ansible's `backup` (the old file kept as DEST.PID.TIME~ when the
    content changes) and `owner`/`group`."""
    backup = None
    if truthy(args.get("backup", False)) and await ctx.transport.exists(dest) and \
            await ctx.transport.read_file(dest) != content:
        backup = f"{dest}.{os.getpid()}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"
        q = shlex.quote
        result = await ctx.transport.run(f"cp -p -- {q(dest)} {q(backup)}", become=ctx.become, timeout=ctx.timeout)
        if not result.ok:
            raise ModuleFailure(f"backup of {dest}: {result.describe()}")
    changed = await ctx.transport.write_file(dest, content, mode)
    outcome = Outcome(changed=changed, command=what, result={"backup_file": backup} if backup else {})
    return await _owned(outcome, dest, args, ctx)


async def _owned(outcome: Outcome, path: str, args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """Ansible's owner/group on a file just written: changed when they were not already so."""
    owner, group = _opt_str(args.get("owner")), _opt_str(args.get("group"))
    if owner is None and group is None:
        return outcome
    q = shlex.quote(path)
    want = f"{owner or ''}:{group or ''}"
    have = "%U:%G" if owner and group else ("%U:" if owner else ":%G")
    script = f'[ "$(stat -c {shlex.quote(have)} -- {q})" = {shlex.quote(want)} ] || {{ chown {shlex.quote(want)} -- {q} && echo CHANGED; }}'
    result = await ctx.transport.run(script, become=ctx.become, timeout=ctx.timeout)
    if not result.ok:
        raise ModuleFailure(f"chown {want} {path}: {result.describe()}")
    outcome.changed = outcome.changed or "CHANGED" in result.stdout.split()
    return outcome


async def _pause(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    minutes = args.get("minutes") or 0
    seconds = _seconds(args.get("seconds") or 0, "pause", "seconds") + _seconds(minutes, "pause", "minutes", 60)
    if not math.isfinite(seconds):  # each finite, their sum need not be
        raise ModuleFailure(f"pause: minutes {minutes!r} is not a number of minutes a pause can last")
    await asyncio.sleep(seconds)
    return Outcome(command=f"pause {seconds:g}s", message=f"paused {seconds:g}s")


async def _template(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    src = find_source(str(args["src"]), ctx.playbook_dir, ctx.role_dir, "templates")
    if src is None:
        raise ModuleFailure(f"template: {args['src']} not found (looked next to the playbook, "
                            f"in templates/ and files/ of {ctx.playbook_dir})")
    text = ctx.templar.render_text(src.read_text(encoding="utf-8"))
    dest = str(args["dest"])
    return await _put(ctx, dest, text.encode(), _mode(args), args, f"template {src} -> {dest}")


# Each `file` state is a small shell script that prints CHANGED when it changed something,
# so the module works the same through any transport.
def _file_script(state: str, path: str, src: str | None, mode: int | None) -> str:
    q = shlex.quote(path)
    chmod = (f'[ "$(stat -c %a {q})" = "{mode:o}" ] || {{ chmod {mode:o} {q} && echo CHANGED; }}'
             if mode is not None else "true")
    if state == "directory":
        return (f"if [ -e {q} ] && [ ! -d {q} ]; then echo {shlex.quote(path + ' exists and is not a directory')} >&2; exit 1; fi\n"
                + (f"[ -d {q} ] || {{ mkdir -p -- {q} && echo CHANGED; }} || exit 1\n" if mode is None else
                   # As Ansible: every directory it creates on the way gets the mode, not just the last one.
                   f'set --; p={q}; while [ ! -e "$p" ] && [ ! -L "$p" ]; do set -- "$p" "$@"; p=$(dirname -- "$p"); done\n'
                   f'for d in "$@"; do mkdir -- "$d" && chmod {mode:o} -- "$d" || exit 1; done\n'
                   '[ $# -eq 0 ] || echo CHANGED\n')
                + chmod)
    if state == "touch":
        return f"[ -e {q} ] || echo CHANGED\ntouch -- {q} || exit 1\n{chmod}"
    if state == "absent":
        return f"if [ -e {q} ] || [ -L {q} ]; then rm -rf -- {q} && echo CHANGED; fi"
    assert state == "link" and src is not None
    s = shlex.quote(src)
    # Build the link aside and rename it over: `current` never points nowhere, even for a moment.
    return (f"if [ -d {q} ] && [ ! -L {q} ]; then echo {shlex.quote(path + ' is a directory, not a link')} >&2; exit 1; fi\n"
            f'[ -L {q} ] && [ "$(readlink {q})" = {s} ] && exit 0\n'
            f"ln -sfn -- {s} {q}.opsconsole-tmp && mv -Tf -- {q}.opsconsole-tmp {q} && echo CHANGED")


async def _file(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    state, path = str(args["state"]), str(args["path"])
    if state not in SPECS["file"].choices["state"]:
        raise ModuleFailure(f"file: state {state!r} is not one of {', '.join(SPECS['file'].choices['state'])}")
    if path.strip() in ("", "/", ".") and state == "absent":
        raise ModuleFailure(f"file: refusing to remove {path!r}")
    src = _opt_str(args.get("src"))
    if state == "link" and not src:
        raise ModuleFailure("file: state link needs src")
    mode = _mode(args) if state != "link" else None
    if state in ("directory", "link") and mode is None and not ctx.become:
        # Without a command where the transport can (over SSH: its SFTP session, no fork of sshd and a shell
        # on the host); the script below is the same step for every other case.
        what = f"file {state} {path}"
        try:
            async with asyncio.timeout(ctx.timeout):
                made = await (ctx.transport.ensure_directory(path) if state == "directory"
                              else ctx.transport.ensure_link(path, str(src)))
        except PathInTheWay as exc:
            return Outcome(failed=True, rc=1, command=what, message=str(exc))
        except TransportError as exc:  # an SFTP refusal: the task fails as the script's would (rc 1, its words)
            return Outcome(failed=True, rc=1, command=what, message=str(exc))
        except TimeoutError:
            return Outcome(failed=True, rc=1, command=what, message=f"timed out after {ctx.timeout:g}s")
        if made is not None:
            return Outcome(changed=made, rc=0, command=what)
    script = _file_script(state, path, src, mode)
    result = await ctx.transport.run(script, become=ctx.become, timeout=ctx.timeout)
    outcome = _from_result(f"file {state} {path}", result, changed="CHANGED" in result.stdout.split())
    return outcome


async def _service(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    name, state = str(args["name"]), str(args["state"])
    if state not in SPECS[SERVICE].choices["state"]:
        raise ModuleFailure(f"service: state {state!r} is not one of started, stopped, restarted")
    t = ctx.transport
    if state == "stopped":
        was = await t.stop_service(name)
        return Outcome(changed=was, command=f"stop service {name}", message="stopped" if was else "was not running")
    command = _opt_str(args.get("command"))
    if not command:
        raise ModuleFailure(f"service {name}: state {state} needs a command (it rendered empty)")
    env = {str(k): str(v) for k, v in (args.get("env") or {}).items()}
    port = _service_port(name, args.get("port"))
    cwd = _opt_str(args.get("chdir"))
    # With `port`, a port another program holds is refused here by name (PortInUse), before the start.
    if state == "restarted":  # nothing to stop is no error: one command, not a look first
        pid = await t.restart_service(name, command, cwd=cwd, env=env, port=port)
    else:
        running = await t.service_pid(name)
        if running is not None:
            return Outcome(changed=False, command=command, message=f"{name} already running (pid {running})")
        pid = await t.start_service(name, command, cwd=cwd, env=env, port=port)
    # A service that dies at once (bad command, port taken) fails here, with its log, not at a later health check.
    # One that listens on its port is up: no need to wait out the 0.2 s that tell a quick death.
    if port is not None and await _listens_soon(t, pid, port):
        return Outcome(changed=True, command=command, message=f"{name} running (pid {pid}), listening on {port}",
                       started=name)
    await asyncio.sleep(0 if port is not None else 0.2)  # with a port, the check above already gave it 0.2 s
    if await t.service_pid(name) is None:
        try:
            log = (await t.read_file(f"log/{name}.log")).decode(errors="replace").splitlines()[-10:]
        except TransportError:
            log = []
        return Outcome(changed=True, failed=True, command=command, tail=tuple(log),
                       message=f"service {name} (pid {pid}) exited right after starting")
    return Outcome(changed=True, command=command, message=f"{name} running (pid {pid})", started=name)


async def _listens_soon(t: Transport, pid: int, port: int) -> bool:
    """True as soon as something listens on `port` (looked at every 20 ms for ~0.2 s); False when not by then.

    Asked through the transport's own connection where it can (no process forked on the host per look:
    at a hundred hosts those forks were most of the hosts' CPU in a rollout); else by a command there."""
    for _ in range(10):
        answer = await t.port_open(port)
        if answer is None:
            return (await t.run(_listening_or_dead(pid, port), timeout=10)).rc == 0
        if answer:
            return True
        await asyncio.sleep(0.02)
    return False


def _listening_or_dead(pid: int, port: int) -> str:
    """Shell lines: exit 0 as soon as something listens on TCP `port`, 1 once `pid` died, 2 if neither in ~0.2 s.
    `pid` was started just now: no session check (its setsid may not have run yet)."""
    return (f'{alive_function(session_leader=False)}\n'
            'i=0; while [ $i -lt 10 ]; do\n'
            f'  alive {int(pid)} || exit 1\n'
            f"  {listening_test(port)} && exit 0\n"
            '  sleep 0.02; i=$((i+1))\n'
            'done\n'
            'exit 2\n')


def _service_port(name: str, value: Any) -> int | None:
    """The service's `port` argument: a TCP port, or None when not given (or rendered empty)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ModuleFailure(f"service {name}: port {text!r} is not a TCP port (1-65535)")
    return int(text)


async def _wait_for(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    # Ansible's default is 300 s; its timeout is a number of seconds.
    return await _wait(args, ctx, _seconds(args.get("timeout", 300), "wait_for"))


async def _health(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    return await _wait(args, ctx, parse_duration(args.get("timeout", 30)))


def _seconds(value: Any, module: str, arg: str = "timeout", scale: float = 1) -> float:
    """A module's number of seconds, as its value came after templating (the loader checks the written ones)."""
    try:
        return seconds_number(value, scale)
    except ValueError:
        unit = "minutes" if scale == 60 else "seconds"
        raise ModuleFailure(f"{module}: {arg} {value!r} is not a number of {unit}, 0 or more") from None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once: loading the CA bundle costs ~40 ms of CPU per client,
    which a rollout of 100 hosts would otherwise pay 100 times."""
    return httpx.create_ssl_context()


@functools.cache
def _plain_http_context() -> ssl.SSLContext:
    """For an http:// URL: no TLS is spoken (redirects are not followed), so no CA bundle is worth loading
    (~40 ms of CPU, on the first host's path in a rollout). It still verifies and trusts no one, so were it
    ever used it would fail closed."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def _wait(args: Mapping[str, Any], ctx: ModuleContext, timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout
    last = "not tried"
    if args.get("url"):
        url = await _reachable_url(str(args["url"]), ctx.transport)
        want = int(args.get("status", 200))
        what = f"{args['url']} to answer {want}"
        tls = _tls_context() if url.lower().startswith("https:") else _plain_http_context()
        async with httpx.AsyncClient(timeout=2.0, trust_env=False, verify=tls) as client:
            while True:
                try:
                    response = await client.get(url)
                    if response.status_code == want:
                        return Outcome(command=f"wait for {what}", message=f"{args['url']} answered {want}")
                    last = f"status {response.status_code}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.2)
    elif args.get("path") not in (None, ""):
        path, gone = str(args["path"]), args.get("state") in ("absent", "stopped")
        what = f"{path} to {'go away' if gone else 'exist'}"
        while True:
            if await ctx.transport.exists(path) != gone:
                return Outcome(command=f"wait for {what}", message=f"{path} {'is gone' if gone else 'exists'}")
            last = f"{path} {'still exists' if gone else 'does not exist'}"
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
    elif args.get("port") in (None, ""):
        await asyncio.sleep(timeout)  # Ansible: neither port nor path waits out the timeout
        return Outcome(command=f"sleep {timeout:g}", message=f"waited {timeout:g}s")
    else:
        host, port = str(args.get("host") or ctx.host.address), int(args["port"])
        closed = args.get("state") in ("stopped", "absent")
        if closed:
            what = f"{host}:{port} to stop accepting connections"
            target = await _reachable(host, port, ctx.transport)
            while True:
                try:
                    async with asyncio.timeout(2.0):
                        _, writer = await asyncio.open_connection(*target)
                    writer.close()
                    last = f"{host}:{port} still open"
                except (OSError, TimeoutError):
                    return Outcome(command=f"wait for {what}", message=f"{host}:{port} is closed")
                if time.monotonic() >= deadline:
                    return Outcome(failed=True, command=f"wait for {what}",
                                   message=f"timed out after {timeout:g}s (last: {last})")
                await asyncio.sleep(0.2)
        what = f"{host}:{port} to accept connections"
        target = await _reachable(host, port, ctx.transport)
        while True:
            try:
                async with asyncio.timeout(2.0):
                    _, writer = await asyncio.open_connection(*target)
                writer.close()
                return Outcome(command=f"wait for {what}", message=f"{host}:{port} is open")
            except (OSError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
    return Outcome(failed=True, command=f"wait for {what}", message=f"timed out after {timeout:g}s (last: {last})")


async def _reachable(host: str, port: int, transport: Transport) -> tuple[str, int]:
    """Where this machine reaches host:port: through the transport's tunnel when it has one (ssh)."""
    forward: Callable[..., Any] | None = getattr(transport, "local_endpoint", None)
    if forward is None:
        return host, port
    return tuple(await forward(port, host))  # type: ignore[return-value]


async def _reachable_url(url: str, transport: Transport) -> str:
    parts = urllib.parse.urlsplit(url)
    if getattr(transport, "local_endpoint", None) is None or not parts.hostname:
        return url
    host, port = await _reachable(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), transport)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{port}"))


async def _uri(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    url, method = str(args["url"]), str(args.get("method") or "GET").upper()
    try:
        want = web.expected_statuses(args.get("status_code"))
    except ValueError:
        raise ModuleFailure(f"uri: status_code {args.get('status_code')!r} is not a status code or a list of them") \
            from None
    try:
        response = await web.request(await _reachable_url(url, ctx.transport), method=method, body=args.get("body"),
                                     body_format=str(args.get("body_format") or "raw"), headers=args.get("headers"),
                                     timeout=_seconds(args.get("timeout", 30), "uri"), verify=_verify(args))
    except web.WebFailure as exc:  # Ansible's words: the status is -1 when nothing answered
        return Outcome(failed=True, command=f"{method} {url}", message=f"Status code was -1 and not {want}: {exc}",
                       result={"status": -1, "url": url})
    result = web.result_of(response, truthy(args.get("return_content", False)))
    if not response.redirected:
        result["url"] = url  # as asked, not the tunnel's address
    failed = response.status not in want
    if failed:
        result["msg"] = f"Status code was {response.status} and not {want}"
    return Outcome(failed=failed, command=f"{method} {url}", message=result["msg"], result=result)


async def _get_url(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    url, dest, mode = str(args["url"]), str(args["dest"]), _mode(args)
    checksum = None
    if args.get("checksum") not in (None, ""):
        try:
            checksum = web.parse_checksum(str(args["checksum"]))
        except ValueError as exc:
            raise ModuleFailure(f"get_url: checksum {exc}") from None
    into_directory = dest.endswith("/") or \
        (await ctx.transport.run(f"[ -d {shlex.quote(dest)} ]", timeout=ctx.timeout)).rc == 0
    if into_directory:  # as Ansible: the URL's file name, always downloaded, replaced only if it differs
        dest = f"{dest.rstrip('/')}/{web.file_name(url)}"
    result: dict[str, Any] = {"dest": dest, "url": url}
    if not into_directory and await ctx.transport.exists(dest) and not truthy(args.get("force", False)):
        have = await ctx.transport.read_file(dest)
        # As Ansible: an existing dest is kept unless force, or a checksum it does not match.
        if checksum is None or web.digest(checksum[0], have) == checksum[1]:
            changed = await ctx.transport.write_file(dest, have, mode) if mode is not None else False
            outcome = Outcome(changed=changed, command=f"get_url {url}", message="file already exists",
                              result={**result, "msg": "file already exists", "status_code": None})
            return await _owned(outcome, dest, args, ctx)
    try:
        response = await web.request(await _reachable_url(url, ctx.transport), headers=args.get("headers"),
                                     timeout=_seconds(args.get("timeout", 10), "get_url"), verify=_verify(args))
    except web.WebFailure as exc:
        return Outcome(failed=True, command=f"get_url {url}", message=str(exc), result={**result, "status_code": -1})
    result["status_code"] = response.status
    if response.status != 200:
        return Outcome(failed=True, command=f"get_url {url}", message=f"Request failed: HTTP Error {response.status}",
                       result=result)
    result["checksum_src"] = web.digest("sha1", response.content)
    if checksum is not None and web.digest(checksum[0], response.content) != checksum[1]:
        actual = web.digest(checksum[0], response.content)
        why = f"The checksum for {dest} did not match {checksum[1]}; it was {actual}."
        return Outcome(failed=True, command=f"get_url {url}", message=why, result=result)
    changed = await ctx.transport.write_file(dest, response.content, mode)
    result.update(checksum_dest=result["checksum_src"], size=len(response.content),
                  msg=f"OK ({len(response.content)} bytes)")
    return await _owned(Outcome(changed=changed, command=f"get_url {url} -> {dest}", message=result["msg"],
                                result=result), dest, args, ctx)


async def _unarchive(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    src, dest, q = str(args["src"]), str(args["dest"]), shlex.quote
    result: dict[str, Any] = {"dest": dest, "src": src, "handler": "TgzArchive"}
    creates = _opt_str(args.get("creates"))
    if creates is not None and await ctx.transport.exists(creates):
        return Outcome(command=f"unarchive {src}", message=f"skipped, since {creates} exists", result=result)
    if (await ctx.transport.run(f"[ -d {q(dest)} ]", become=ctx.become, timeout=ctx.timeout)).rc != 0:
        return Outcome(failed=True, command=f"unarchive {src}", message=f"dest '{dest}' must be an existing dir",
                       result=result)
    remote_src = truthy(args.get("remote_src", False))
    archive, scratch = src, None
    if not remote_src:  # copied to the host first, as Ansible does, and removed after
        local = find_source(src, ctx.playbook_dir, ctx.role_dir, "files")
        if local is None:
            raise ModuleFailure(f"unarchive: source file {src} not found (looked next to the playbook, "
                                f"in templates/ and files/ of {ctx.playbook_dir})")
        made = await ctx.transport.run("mktemp", become=ctx.become, timeout=ctx.timeout)
        if not made.ok:
            raise ModuleFailure(f"unarchive: no temporary file on the host: {made.describe()}")
        archive = scratch = made.stdout.strip()
        await ctx.transport.put_file(str(local), archive)
    try:
        # As Ansible's TgzArchive: unchanged when `tar --diff` finds the archive already there.
        same = await ctx.transport.run(f"tar --diff -C {q(dest)} -f {q(archive)}", become=ctx.become,
                                       timeout=ctx.timeout)
        if same.rc == 0:
            return Outcome(command=f"unarchive {src}", message=f"{src} already unpacked in {dest}", result=result)
        cmd = f"tar --extract -C {q(dest)} -f {q(archive)}"
        done = await ctx.transport.run(cmd, on_line=ctx.on_line, become=ctx.become, timeout=ctx.timeout)
        return _from_result(cmd, done) if not done.ok else \
            Outcome(changed=True, rc=0, command=cmd, message=f"{src} unpacked in {dest}", result=result)
    finally:
        if scratch is not None:
            await ctx.transport.run(f"rm -f -- {q(scratch)}", become=ctx.become, timeout=ctx.timeout)


def _system_module(run: Callable[[Mapping[str, Any], system.HostShell], Any], name: str) -> Callable[..., Any]:
    """A system.py module (git, group, user, apt) as a module: its booleans read as Ansible reads them."""
    async def module(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
        read = {k: truthy(v) if k in SPECS[name].booleans else v for k, v in args.items()}
        try:
            done = await run(read, system.HostShell(ctx.transport, ctx.become, ctx.timeout))
        except system.SystemFailure as exc:
            raise ModuleFailure(f"{name}: {exc}") from None
        return Outcome(changed=done.changed, failed=done.failed, command=done.command, message=done.message,
                       result=done.values)
    return module


def _verify(args: Mapping[str, Any]) -> Any:
    """validate_certs (default true) as httpx's verify: the shared verifying context, or False."""
    return _tls_context() if truthy(args.get("validate_certs", True)) else False


async def _debug(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    if _verbosity(args.get("verbosity")) > 0:  # shown from `-v` on in Ansible; opsconsole runs at 0
        return Outcome(message=f"verbosity {args['verbosity']}: not shown")
    if args.get("var") not in (None, ""):
        # As Ansible: `var` names a variable (or an expression) and shows its value.
        name = str(args["var"])
        msg: Any = {name: ctx.templar.evaluate(name)}
    else:
        msg = args.get("msg", "Hello world!")
    text = msg if isinstance(msg, str) else json.dumps(msg, default=str)
    for line in text.splitlines() or [""]:
        ctx.on_line(line, "stdout")
    return Outcome(stdout=text + "\n", message=text)


async def _set_fact(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    facts = {k: v for k, v in args.items() if k != "cacheable"}
    return Outcome(facts=facts, message=", ".join(sorted(facts)))


async def _assert(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    that = args["that"]
    for condition in that if isinstance(that, list) else [that]:
        value = ctx.templar.evaluate(condition) if isinstance(condition, str) else condition
        if not truthy(value):
            why = args.get("fail_msg") or args.get("msg") or f"Assertion failed: {condition}"
            return Outcome(failed=True, command=f"assert {condition}", message=str(why))
    return Outcome(message=str(args.get("success_msg") or "All assertions passed"))


async def _fail(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    return Outcome(failed=True, command="fail", message=str(args.get("msg") or "Failed as requested from task"))


def _verbosity(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise ModuleFailure(f"debug: verbosity {value!r} is not a number") from None


def truthy(value: Any) -> bool:
    """Ansible's truth of a condition's value: the strings yes/true/on/1/y are true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1", "y")
    return bool(value)


# Followed, a dangling link is missing, as under Ansible (os.stat raises ENOENT: exists false); not followed,
# it is the link.
_STAT = ("if [ -e {q} ]{or_link}; then stat {follow}-c '%F|%a|%s|%U|%G|%Y|%u|%g' -- {q}; "
         "else echo MISSING; fi")


async def _stat(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    path = str(args["path"])
    follow = truthy(args.get("follow", False))
    # Missing (a release's marker before its first unpack): the transport's own look says so without a
    # command on the host, followed or not (nothing there either way). What exists gets the full answer, owner
    # names included, from the shell; so does a path the look cannot mean exactly, or cannot see as root.
    if not ctx.become and shell_exact(path):
        try:
            if not await ctx.transport.exists(path):
                return Outcome(command=f"stat {path}", result={"stat": {"exists": False}})
        except TransportError:
            pass  # the shell below answers, and says why it cannot
    q = shlex.quote(path)
    result = await ctx.transport.run(_STAT.format(q=q, follow="-L " if follow else "",
                                                  or_link="" if follow else f" || [ -L {q} ]"),
                                     become=ctx.become, timeout=ctx.timeout)
    if not result.ok:
        return _from_result(f"stat {path}", result, changed=False)
    out = result.stdout.strip()
    if out == "MISSING":
        return Outcome(command=f"stat {path}", result={"stat": {"exists": False}})
    kind, mode, size, owner, group, mtime, uid, gid = out.split("|")
    stat = {"exists": True, "path": path, "isdir": kind == "directory", "isreg": kind.startswith("regular"),
            "islnk": kind == "symbolic link", "mode": f"{int(mode, 8):04o}", "size": int(size), "pw_name": owner,
            "gr_name": group, "uid": int(uid), "gid": int(gid), "mtime": float(mtime)}
    return Outcome(command=f"stat {path}", result={"stat": stat})


async def _slurp(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """Ansible's slurp: the file's bytes as base64 in `content`. Read by the transport (over SSH on the SFTP
    session: no fork of sshd and a shell on the host); under become, by `base64` as root on the host."""
    path = str(args["src"])
    what = f"slurp {path}"
    if ctx.become:
        result = await ctx.transport.run(f"base64 -w0 < {shlex.quote(path)}", become=True, timeout=ctx.timeout)
        if not result.ok:
            return _from_result(what, result, changed=False)
        content = result.stdout.strip()
    else:
        try:
            content = base64.b64encode(await ctx.transport.read_file(path)).decode()
        except TransportError as exc:
            # Only now the look that tells a missing file (Ansible's words) from one it could not read: the
            # file being there is the usual case, and one round trip.
            missing = not await ctx.transport.exists(path)
            return Outcome(failed=True, command=what, message=f"file not found: {path}" if missing else str(exc))
    return Outcome(command=what, result={"content": content, "encoding": "base64", "source": path})


async def _read_text(ctx: ModuleContext, path: str, create: bool, module: str) -> str | None:
    """The file's text; None if it does not exist and `create` allows that; ModuleFailure otherwise."""
    if not await ctx.transport.exists(path):
        if not create:
            raise ModuleFailure(f"{module}: Destination {path} does not exist !")  # Ansible's words
        return None
    return (await ctx.transport.read_file(path)).decode("utf-8", errors="surrogateescape")


async def _write_text(ctx: ModuleContext, path: str, before: str | None, lines: list[str], mode: int | None,
                      what: str) -> Outcome:
    text = "".join(line + "\n" for line in lines)
    if before is not None and text == before and mode is None:
        return Outcome(command=what, message="unchanged")
    changed = await ctx.transport.write_file(path, text.encode("utf-8", errors="surrogateescape"), mode)
    return Outcome(changed=changed or (before is not None and text != before), command=what)


async def _lineinfile(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    path, state = str(args["path"]), str(args.get("state") or "present")
    regexp = _opt_str(args.get("regexp"))
    line = args.get("line")
    if state == "present" and line is None:
        raise ModuleFailure("lineinfile: line is required with state=present")
    before = await _read_text(ctx, path, truthy(args.get("create", False)), "lineinfile")
    lines = (before or "").splitlines()
    pattern = re.compile(regexp) if regexp else None

    def matches(text: str) -> bool:
        return bool(pattern.search(text)) if pattern else text == str(line)

    if state == "absent":
        kept = [x for x in lines if not matches(x)]
        return await _write_text(ctx, path, before, kept, _mode(args), f"lineinfile {path} absent")
    new = str(line)
    found = [i for i, x in enumerate(lines) if matches(x)]
    if found:  # as Ansible: the last matching line is replaced
        lines[found[-1]] = new
    else:
        lines.insert(_insert_at(lines, args), new)
    return await _write_text(ctx, path, before, lines, _mode(args), f"lineinfile {path}")


def _insert_at(lines: list[str], args: Mapping[str, Any]) -> int:
    """Where a new line goes: after the last line matching insertafter, before the last matching
    insertbefore (BOF/EOF as the ends), else at the end — Ansible's defaults."""
    after, before = _opt_str(args.get("insertafter")), _opt_str(args.get("insertbefore"))
    if before is not None:
        if before == "BOF":
            return 0
        hits = [i for i, x in enumerate(lines) if re.search(before, x)]
        return hits[-1] if hits else len(lines)
    if after is not None and after != "EOF":
        hits = [i for i, x in enumerate(lines) if re.search(after, x)]
        return hits[-1] + 1 if hits else len(lines)
    return len(lines)


async def _blockinfile(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    path, state = str(args["path"]), str(args.get("state") or "present")
    marker = str(args.get("marker") or "# {mark} ANSIBLE MANAGED BLOCK")
    begin, end = marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")
    before = await _read_text(ctx, path, truthy(args.get("create", False)), "blockinfile")
    lines = (before or "").splitlines()
    block = str(args.get("block") or "")
    start = lines.index(begin) if begin in lines else None
    stop = lines.index(end, start) if start is not None and end in lines[start:] else None
    if start is not None and stop is not None:
        del lines[start:stop + 1]
        at = start
    else:
        at = None
    if state == "present" and block:
        where = at if at is not None else _insert_at(lines, args)
        lines[where:where] = [begin, *block.splitlines(), end]
    return await _write_text(ctx, path, before, lines, _mode(args), f"blockinfile {path}")


def _mode(args: Mapping[str, Any]) -> int | None:
    try:
        return parse_mode(args.get("mode"))
    except ValueError as exc:
        raise ModuleFailure(str(exc)) from None


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


_RUNNERS: dict[str, Callable[[Mapping[str, Any], ModuleContext], Any]] = {
    "shell": _shell, "command": _command, "copy": _copy, "template": _template, "file": _file,
    SERVICE: _service, "wait_for": _wait_for, HEALTH: _health, "debug": _debug,
    "set_fact": _set_fact, "assert": _assert, "fail": _fail, "raw": _raw, "stat": _stat, "slurp": _slurp,
    "lineinfile": _lineinfile, "blockinfile": _blockinfile, "pause": _pause, "uri": _uri, "get_url": _get_url,
    "unarchive": _unarchive, "git": _system_module(system.git, "git"), "group": _system_module(system.group, "group"),
    "user": _system_module(system.user, "user"), "apt": _system_module(system.apt, "apt"),
}

__all__ = ["ALIASES", "HEALTH", "MOVED_ARGUMENTS", "MOVED_MODULES", "SERVICE", "SPECS", "ModuleContext", "ModuleFailure", "ModuleSpec", "Outcome", "canonical",
           "find_source", "parse_mode", "run_module", "truthy"]
