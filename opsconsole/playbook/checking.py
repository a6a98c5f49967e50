"""Ansible's check mode for the native modules: what a task WOULD change, with nothing changed on the host.

Each module reports as Ansible's does under `--check`: the file modules compare what they would write
with what the host has (and, with `--diff`, give `diff: {before, after, before_header, after_header}`);
command/shell run nothing ("skipped" unless creates/removes tell, as Ansible's partial support does);
modules without check mode in Ansible (raw, uri) are skipped; read-only ones (stat, assert, wait_for,
set_fact, ...) run as they always do. A module we do not know how to check is skipped, never run.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from opsconsole.playbook import modules as M, system, web
from opsconsole.playbook.modules import HEALTH, SERVICE, ModuleContext, ModuleFailure, Outcome
from opsconsole.transport.base import CommandResult, LineHandler, Transport

# Ansible's C.MAX_FILE_SIZE_FOR_DIFF: a bigger file's diff is not shown, only said to be too big.
MAX_FILE_SIZE_FOR_DIFF = 104448
# Modules that only read (or only wait), which Ansible runs as usual under --check.
RUN_AS_USUAL = frozenset({"stat", "slurp", "debug", "set_fact", "assert", "fail", "pause", "wait_for"})
# Modules whose result carries a file diff (also in a real run with --diff).
DIFFABLE = frozenset({"copy", "template", "lineinfile", "blockinfile", "file"})


def skipped(message: str) -> Outcome:
    """A task that did not run in check mode: registered with skipped=True, reported as skipped."""
    return Outcome(rc=None, message=message, result={"skipped": True, "msg": message})


async def check_module(module: str, args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """What `module` with rendered `args` would do on the context's host, changing nothing there."""
    if module in RUN_AS_USUAL:
        return await M.run_module(module, args, ctx)
    checker = _CHECKERS.get(module)
    if checker is None:
        return skipped(f"{module} does not support check mode")
    return await checker(args, ctx)


# -- file contents -----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Written:
    path: str
    existed: bool
    same: bool  # the same content
    before: str | None  # None: not shown (too big, binary)
    after: str | None
    note: dict[str, Any]  # dst_larger / dst_binary / src_binary, as Ansible says why a diff is not shown
    modes: tuple[int, int] | None = None  # (had, would have) when the mode alone would change


class _DryTransport:
    """A transport that reads from the host and only pretends to write: write_file/put_file report whether
    they would change the file (content or mode) and remember before/after for the diff. Anything that
    would run a command is refused: the modules handed to it (copy, template, lineinfile, blockinfile)
    write through write_file/put_file only once backup/owner/group are left to the caller."""

    def __init__(self, inner: Transport, diff: bool) -> None:
        self.inner = inner
        self.diff = diff
        self.written: list[_Written] = []

    @property
    def root(self) -> str:
        return self.inner.root

    @property
    def host(self) -> Any:
        return self.inner.host

    async def exists(self, path: str) -> bool:
        return await self.inner.exists(path)

    async def read_file(self, path: str) -> bytes:
        return await self.inner.read_file(path)

    async def put_file(self, local_path: str, path: str, mode: int | None = None) -> bool:
        return await self.write_file(path, Path(local_path).read_bytes(), mode)

    async def write_file(self, path: str, content: bytes, mode: int | None = None) -> bool:
        have = await file_facts(self.inner, path)
        same = have is not None and have["sha256"] == hashlib.sha256(content).hexdigest()
        modes = (have["mode"], mode) if have is not None and mode is not None and have["mode"] != mode else None
        changed = not same or modes is not None
        before: str | None = ""
        note: dict[str, Any] = {}
        if self.diff and have is not None:
            if have["size"] > MAX_FILE_SIZE_FOR_DIFF:
                before, note["dst_larger"] = None, MAX_FILE_SIZE_FOR_DIFF
            else:
                before = _text(await self.inner.read_file(path))
                if before is None:
                    note["dst_binary"] = True
        after = _text(content) if self.diff else ""
        if self.diff and after is None:
            note["src_binary"] = True
        self.written.append(_Written(path, have is not None, same, before, after, note, modes))
        return changed

    async def run(self, command: str, *, on_line: LineHandler | None = None, **kw: Any) -> CommandResult:
        raise ModuleFailure("check mode: this module would run a command on the host; nothing was run")


async def file_facts(transport: Transport, path: str) -> dict[str, Any] | None:
    """A regular file's mode, size and sha256 on the host (None when there is no such file, or a link)."""
    q = shlex.quote(path)
    probe = await transport.run(f"if [ -f {q} ] && [ ! -L {q} ]; then stat -c '%a %s' -- {q} && "
                                f"sha256sum -- {q}; else echo MISSING; fi")
    if not probe.ok:
        raise ModuleFailure(f"check mode: cannot read {path}: {probe.describe()}")
    lines = probe.stdout.split("\n")
    if lines[0].strip() == "MISSING":
        return None
    mode, size = lines[0].split()
    return {"mode": int(mode, 8), "size": int(size), "sha256": lines[1].split()[0]}


def _text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


async def _dry(run: Callable[[Mapping[str, Any], ModuleContext], Awaitable[Outcome]], args: Mapping[str, Any],
               ctx: ModuleContext, header: Callable[[str], tuple[str, str]]) -> Outcome:
    """Run a writing module against a _DryTransport; its changed says what it would change."""
    dry = _DryTransport(ctx.transport, ctx.diff)
    quiet = {k: v for k, v in args.items() if k not in ("backup", "owner", "group")}  # they only ever run commands
    outcome = await run(quiet, dataclasses.replace(ctx, transport=dry))  # type: ignore[arg-type]
    if dry.written and (args.get("owner") or args.get("group")):
        outcome.changed = outcome.changed or await _owner_differs(ctx, dry.written[-1].path, args)
    if ctx.diff and dry.written:
        w = dry.written[-1]
        before_header, after_header = header(w.path)
        diff: dict[str, Any] = {"after_header": after_header, **w.note}
        if w.existed:  # as Ansible: a file about to be made has no "before" header
            diff["before_header"] = before_header
        if not w.note:
            diff.update(before=w.before or "", after=w.after or "")
        if w.same and w.modes:  # the mode alone: Ansible shows the file's attributes instead
            diff = {"before": {"mode": f"{w.modes[0]:04o}", "path": w.path},
                    "after": {"mode": f"{w.modes[1]:04o}", "path": w.path}}
        outcome.result["diff"] = diff
    return outcome


async def _owner_differs(ctx: ModuleContext, path: str, args: Mapping[str, Any]) -> bool:
    owner, group = args.get("owner") or "", args.get("group") or ""
    q = shlex.quote(path)
    probe = await ctx.transport.run(f"[ -e {q} ] && stat -c '%U:%G' -- {q}", become=ctx.become, timeout=ctx.timeout)
    if not probe.ok:
        return True  # not there yet: it would be made, and owned
    have_owner, _, have_group = probe.stdout.strip().partition(":")
    return bool(owner and owner != have_owner) or bool(group and group != have_group)


async def _copy(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    src = args.get("src")
    return await _dry(M._copy, args, ctx, lambda dest: (dest, str(src) if src not in (None, "") else dest))


async def _template(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    src = M.find_source(str(args["src"]), ctx.playbook_dir, ctx.role_dir, "templates")
    return await _dry(M._template, args, ctx, lambda dest: (dest, str(src or args["src"])))


async def _lineinfile(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    return await _dry(M._lineinfile, args, ctx, lambda path: (f"{path} (content)", f"{path} (content)"))


async def _blockinfile(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    return await _dry(M._blockinfile, args, ctx, lambda path: (f"{path} (content)", f"{path} (content)"))


# -- file: state, mode, link ---------------------------------------------------------------------------
_FILE_PROBE = ('if [ -L {q} ]; then printf "link|%s|" "$(readlink -- {q})"; '
               'elif [ -d {q} ]; then printf "directory||"; elif [ -e {q} ]; then printf "file||"; '
               'else printf "absent||"; fi; stat -L -c %a -- {q} 2>/dev/null || echo')


async def _file(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    state, path = str(args["state"]), str(args["path"])
    src = M._opt_str(args.get("src"))
    mode = M._mode(args) if state != "link" else None
    probe = await ctx.transport.run(_FILE_PROBE.format(q=shlex.quote(path)), become=ctx.become, timeout=ctx.timeout)
    if not probe.ok:
        raise ModuleFailure(f"check mode: cannot look at {path}: {probe.describe()}")
    kind, target, have_mode = (probe.stdout.strip().split("|") + ["", ""])[:3]
    is_dir = kind == "directory" or (kind == "link" and have_mode != "" and state == "directory")
    before: dict[str, Any] = {"path": path}
    after: dict[str, Any] = {"path": path}
    what = f"file {state} {path}"
    if state == "directory" and kind != "absent" and not is_dir:
        return Outcome(failed=True, command=what, message=f"{path} exists and is not a directory")
    if state == "link" and kind == "directory":
        return Outcome(failed=True, command=what, message=f"{path} is a directory, not a link")
    if state == "absent":
        if kind != "absent":
            before["state"], after["state"] = kind, "absent"
    elif state == "link":
        if kind != "link" or target != src:
            before["state"], after["state"] = kind, "link"
            if kind == "link":
                before["src"], after["src"] = target, src
    elif kind == "absent":
        before["state"], after["state"] = "absent", state
    elif mode is not None and have_mode and int(have_mode, 8) != mode:
        before["mode"], after["mode"] = f"{int(have_mode, 8):04o}", f"{mode:04o}"
    outcome = Outcome(changed=before != after, rc=0, command=what)
    if ctx.diff:
        outcome.result["diff"] = {"before": before, "after": after}
    return outcome


# -- commands, services, downloads, archives ------------------------------------------------------------
async def _command(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """As Ansible's command/shell: creates/removes still decide; otherwise nothing can tell, so skipped."""
    not_run = await M._skip_for(args, ctx)
    if not_run is not None:
        return not_run
    if M._opt_str(args.get("creates")) is None and M._opt_str(args.get("removes")) is None:
        return skipped("Command would have run if not in check mode")
    return Outcome(changed=True, rc=0, command=str(args["cmd"]), message="Command would have run if not in check mode")


async def _not_supported(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    return skipped("This action does not support check mode.")


async def _service(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """As opsconsole.builtin.service under ansible-playbook --check: from the pid file alone."""
    name, state = str(args["name"]), str(args["state"])
    pid = await ctx.transport.service_pid(name)
    if state == "stopped":
        return Outcome(changed=pid is not None, command=f"stop service {name}",
                       message="was not running" if pid is None else f"would stop {name} (pid {pid})")
    if state == "started" and pid is not None:
        return Outcome(command=str(args.get("command") or name), message=f"{name} already running (pid {pid})")
    return Outcome(changed=True, command=str(args.get("command") or name), message=f"would {state[:-2]} {name}")


async def _get_url(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """An existing dest is kept unless force or a checksum it fails (mode still applied); otherwise it
    would be downloaded. Nothing is fetched: unlike Ansible's HEAD request, a missing URL shows at the run."""
    url, dest = str(args["url"]), str(args["dest"])
    into_directory = dest.endswith("/") or (await ctx.transport.run(f"[ -d {shlex.quote(dest)} ]")).rc == 0
    if not into_directory and not M.truthy(args.get("force", False)):
        have = await file_facts(ctx.transport, dest)
        if have is not None:
            kept = True
            if args.get("checksum") not in (None, ""):
                algorithm, want = web.parse_checksum(str(args["checksum"]))
                kept = web.digest(algorithm, await ctx.transport.read_file(dest)) == want
            if kept:
                mode = M._mode(args)
                return Outcome(changed=mode is not None and have["mode"] != mode, command=f"get_url {url}",
                               message="file already exists", result={"dest": dest, "url": url})
    return Outcome(changed=True, command=f"get_url {url}", message=f"would download {url}",
                   result={"dest": dest, "url": url})


async def _unarchive(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
    """As Ansible's: skipped when `creates` is there (in any mode); a dest that is not a directory fails;
    otherwise skipped, since its tar handler has no check mode ("does not support check mode when using gtar")."""
    src, dest = str(args["src"]), str(args["dest"])
    creates = M._opt_str(args.get("creates"))
    if creates is not None and await ctx.transport.exists(creates):
        return skipped(f"skipped, since {creates} exists")
    if (await ctx.transport.run(f"[ -d {shlex.quote(dest)} ]", become=ctx.become, timeout=ctx.timeout)).rc != 0:
        return Outcome(failed=True, command=f"unarchive {src}", message=f"dest '{dest}' must be an existing dir")
    return skipped("remote module (unarchive) does not support check mode when using gtar")


def _system(run: Callable[..., Awaitable[system.Done]], name: str, diff: bool = False) -> Callable[
        [Mapping[str, Any], ModuleContext], Awaitable[Outcome]]:
    """git, group, user, apt under check: system.py's own module with check=True, which only reads the host
    (the same decisions as a real run, stopped where Ansible's check stops; `diff` only git gives)."""
    async def checker(args: Mapping[str, Any], ctx: ModuleContext) -> Outcome:
        dry = functools.partial(run, check=True, **({"diff": ctx.diff} if diff else {}))
        return await M._system_module(dry, name)(args, ctx)
    return checker


_CHECKERS: dict[str, Callable[[Mapping[str, Any], ModuleContext], Awaitable[Outcome]]] = {
    "copy": _copy, "template": _template, "lineinfile": _lineinfile, "blockinfile": _blockinfile, "file": _file,
    "command": _command, "shell": _command, "raw": _not_supported, "uri": _not_supported,
    HEALTH: _not_supported, SERVICE: _service, "get_url": _get_url, "unarchive": _unarchive,
    "git": _system(system.git, "git", diff=True), "group": _system(system.group, "group"),
    "user": _system(system.user, "user"), "apt": _system(system.apt, "apt"),
}


# -- showing a diff ------------------------------------------------------------------------------------
def diff_text(diff: Mapping[str, Any] | list[Mapping[str, Any]]) -> str:
    """A result's `diff` as ansible-playbook's default callback prints it (a unified diff, no colours)."""
    ret: list[str] = []
    for d in diff if isinstance(diff, list) else [diff]:
        for key, why in (("dst_binary", "destination file appears to be binary"),
                         ("src_binary", "source file appears to be binary")):
            if key in d:
                ret.append(f"diff skipped: {why}\n")
        for key, which in (("dst_larger", "destination"), ("src_larger", "source")):
            if key in d:
                ret.append(f"diff skipped: {which} file size is greater than {d[key]}\n")
        if "prepared" in d:  # a module's own text (git's), printed as it is, as Ansible's callback does
            ret.append(str(d["prepared"]))
        if "before" not in d or "after" not in d:
            continue
        before, after = (_serialised(d[x]) for x in ("before", "after"))
        before_lines, after_lines = before.splitlines(True), after.splitlines(True)
        if before_lines and not before_lines[-1].endswith("\n"):
            before_lines[-1] += "\n\\ No newline at end of file\n"
        if after_lines and not after_lines[-1].endswith("\n"):
            after_lines[-1] += "\n\\ No newline at end of file\n"
        lines = list(difflib.unified_diff(
            before_lines, after_lines, n=3,
            fromfile=f"before: {d['before_header']}" if "before_header" in d else "before",
            tofile=f"after: {d['after_header']}" if "after_header" in d else "after", fromfiledate="", tofiledate=""))
        ret += lines
        if lines:
            ret.append("\n")
    return "".join(ret)


def _serialised(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, indent=4, separators=(",", ": ")) + "\n"
    return "" if value is None else str(value)


__all__ = ["DIFFABLE", "check_module", "diff_text", "file_facts", "skipped"]
