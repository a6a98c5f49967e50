"""The modules a task may use: their arguments (checked at load time) and what they do (at run time).

Everything a module does on a host goes through the Transport interface, so a
play behaves the same on a local directory and over SSH.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import httpx

from opsconsole.hosts import Host
from opsconsole.playbook.templating import Templar
from opsconsole.transport.base import CommandResult, LineHandler, Transport, TransportError
from opsconsole.units import parse_duration


@dataclass(frozen=True)
class ModuleSpec:
    """The arguments of a module. `free_form`: the argument a plain string value stands for."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    free_form: str | None = None
    any_args: bool = False  # set_fact: every argument is a variable name

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional


# opsconsole's own behaviours live under their own FQCN, so no name means two things: Ansible's
# `service` drives the host's service manager, ours starts a command detached with a pid file.
SERVICE = "opsconsole.builtin.service"
HEALTH = "opsconsole.builtin.health"

SPECS: dict[str, ModuleSpec] = {
    "shell": ModuleSpec(required=("cmd",), optional=("chdir",), free_form="cmd"),
    "command": ModuleSpec(required=("cmd",), optional=("chdir",), free_form="cmd"),
    "copy": ModuleSpec(required=("dest",), optional=("src", "content", "mode")),
    "template": ModuleSpec(required=("src", "dest"), optional=("mode",)),
    "file": ModuleSpec(required=("path", "state"), optional=("src", "mode"),
                       choices={"state": ("directory", "absent", "touch", "link")}),
    # As Ansible's: a TCP port to accept connections, `timeout` in seconds (a number).
    "wait_for": ModuleSpec(required=("port",), optional=("host", "timeout")),
    "debug": ModuleSpec(optional=("msg", "var", "verbosity"), free_form="msg"),
    "set_fact": ModuleSpec(optional=("cacheable",), any_args=True),
    "assert": ModuleSpec(required=("that",), optional=("fail_msg", "msg", "success_msg", "quiet")),
    "fail": ModuleSpec(optional=("msg",), free_form="msg"),
    SERVICE: ModuleSpec(required=("name", "state"), optional=("command", "chdir", "env", "port"),
                        choices={"state": ("started", "stopped", "restarted")}),
    HEALTH: ModuleSpec(required=("url",), optional=("status", "timeout")),
}
# The names an Ansible user may write for the same module: `ansible.builtin.copy` is `copy`.
ALIASES = {f"{prefix}.{name}": name for name in SPECS if "." not in name
           for prefix in ("ansible.builtin", "ansible.legacy")}

# Names that meant opsconsole's own behaviour before they meant Ansible's: refused, naming the new
# name (accepting them would make `service` switch meaning silently once Ansible's lands natively).
MOVED_MODULES = {
    name: f"`{name}` is Ansible's service manager module, which opsconsole does not run natively yet; "
          f"opsconsole's service started by its command is `{SERVICE}` (same arguments)"
    for name in ("service", "daemon", "ansible.builtin.service", "ansible.builtin.systemd", "systemd")
}
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


def find_source(src: str, playbook_dir: Path) -> Path | None:
    """Where a copy/template `src` is on this machine: as given if absolute, else next to the
    playbook or in its templates/ or files/ directory (like Ansible)."""
    path = Path(src).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for base in (playbook_dir, playbook_dir / "templates", playbook_dir / "files"):
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


class ModuleFailure(Exception):
    """The module could not do its work; the message says why."""


async def run_module(module: str, args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """Run `module` with rendered `args` on the context's host."""
    return await _RUNNERS[module](args, ctx)


def _from_result(command: str, result: CommandResult, changed: bool = True) -> Outcome:
    return Outcome(changed=changed, failed=not result.ok, rc=result.rc, stdout=result.stdout, command=command,
                   tail=result.tail, message="" if result.ok else result.describe())


async def _shell(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
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
    cmd = shlex.join(argv)
    result = await ctx.transport.run(f"exec {cmd}", on_line=ctx.on_line, cwd=_opt_str(args.get("chdir")),
                                     become=ctx.become, timeout=ctx.timeout)
    return _from_result(cmd, result)


async def _copy(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    dest, mode = str(args["dest"]), _mode(args)
    if args.get("src") not in (None, ""):
        src = find_source(str(args["src"]), ctx.playbook_dir)
        if src is None:
            raise ModuleFailure(f"copy: source file {args['src']} not found (looked next to the playbook, "
                                f"in templates/ and files/ of {ctx.playbook_dir})")
        changed = await ctx.transport.put_file(str(src), dest, mode)
        return Outcome(changed=changed, command=f"copy {src} -> {dest}")
    content = args.get("content", "")
    text = json.dumps(content, indent=2) if isinstance(content, (dict, list)) else str(content)
    changed = await ctx.transport.write_file(dest, text.encode(), mode)
    return Outcome(changed=changed, command=f"copy content -> {dest}")


async def _template(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    src = find_source(str(args["src"]), ctx.playbook_dir)
    if src is None:
        raise ModuleFailure(f"template: {args['src']} not found (looked next to the playbook, "
                            f"in templates/ and files/ of {ctx.playbook_dir})")
    text = ctx.templar.render_text(src.read_text(encoding="utf-8"))
    dest = str(args["dest"])
    changed = await ctx.transport.write_file(dest, text.encode(), _mode(args))
    return Outcome(changed=changed, command=f"template {src} -> {dest}")


# Each `file` state is a small shell script that prints CHANGED when it changed something,
# so the module works the same through any transport.
def _file_script(state: str, path: str, src: str | None, mode: int | None) -> str:
    q = shlex.quote(path)
    chmod = (f'[ "$(stat -c %a {q})" = "{mode:o}" ] || {{ chmod {mode:o} {q} && echo CHANGED; }}'
             if mode is not None else "true")
    if state == "directory":
        return (f"if [ -e {q} ] && [ ! -d {q} ]; then echo {shlex.quote(path + ' exists and is not a directory')} >&2; exit 1; fi\n"
                f"[ -d {q} ] || {{ mkdir -p -- {q} && echo CHANGED; }} || exit 1\n{chmod}")
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
    script = _file_script(state, path, src, _mode(args) if state != "link" else None)
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
    running = await t.service_pid(name)
    if state == "started" and running is not None:
        return Outcome(changed=False, command=command, message=f"{name} already running (pid {running})")
    if state == "restarted" and running is not None:
        await t.stop_service(name)
    # With `port`, a port another program holds is refused here by name (PortInUse), before the start.
    pid = await t.start_service(name, command, cwd=_opt_str(args.get("chdir")), env=env, port=port)
    # A service that dies at once (bad command, port taken) fails here, with its log, not at a later health check.
    await asyncio.sleep(0.2)
    if await t.service_pid(name) is None:
        try:
            log = (await t.read_file(f"log/{name}.log")).decode(errors="replace").splitlines()[-10:]
        except TransportError:
            log = []
        return Outcome(changed=True, failed=True, command=command, tail=tuple(log),
                       message=f"service {name} (pid {pid}) exited right after starting")
    return Outcome(changed=True, command=command, message=f"{name} running (pid {pid})")


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
    return await _wait(args, ctx, _seconds(args.get("timeout", 300)))


async def _health(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    return await _wait(args, ctx, parse_duration(args.get("timeout", 30)))


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModuleFailure(f"wait_for: timeout {value!r} is not a number of seconds") from None


async def _wait(args: Mapping[str, Any], ctx: ModuleContext, timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout
    last = "not tried"
    if args.get("url"):
        url = await _reachable_url(str(args["url"]), ctx.transport)
        want = int(args.get("status", 200))
        what = f"{args['url']} to answer {want}"
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
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
    else:
        host, port = str(args.get("host") or ctx.host.address), int(args["port"])
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
    "set_fact": _set_fact, "assert": _assert, "fail": _fail,
}

__all__ = ["ALIASES", "HEALTH", "MOVED_ARGUMENTS", "MOVED_MODULES", "SERVICE", "SPECS", "ModuleContext", "ModuleFailure", "ModuleSpec", "Outcome", "canonical",
           "find_source", "parse_mode", "run_module", "truthy"]
