"""Ansible's system modules `git`, `group`, `user` and `apt`, with Ansible's semantics, run with the host's tools.

Each does what ansible-core's module of that name does (ansible/modules/{git,group,user,apt}.py): the same
commands (git, groupadd/groupmod/groupdel, useradd/usermod/userdel, dpkg-query/apt-get), the same decisions
about what needs changing, the same `changed` and return values, so a second run of a play changes nothing.
Kept apart from modules.py (which wraps these as modules, as it does web.py) so each stays readable.
The wrapper hands over the arguments rendered, with the boolean ones already read as Ansible reads them.
With `check=True` each is Ansible's module under `--check`: the same probes and decisions, and where Ansible's
would change something it stops and says so instead (read-only commands only; the host is left as it was).
"""

from __future__ import annotations

import fnmatch
import posixpath
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from opsconsole.errors import OperatorError
from opsconsole.transport.base import CommandResult, Transport

# What Ansible registers for a password: the value itself is never shown (no_log in its argument spec).
NOT_LOGGING_PASSWORD = "NOT_LOGGING_PASSWORD"
# As Ansible's modules run their commands: in the C locale, so the output they parse is in English.
_C_LOCALE = {"LC_ALL": "C", "LANG": "C", "LANGUAGE": "C"}


@dataclass
class Done:
    """What a system module did: modules.py turns it into the task's Outcome."""

    changed: bool = False
    failed: bool = False
    message: str = ""
    command: str = ""  # what ran last, for the failure message (never a password)
    values: dict[str, Any] = field(default_factory=dict)  # return values for `register`


class SystemFailure(OperatorError):
    """A command the module needs failed; the message says which (it never holds a password)."""


@dataclass
class HostShell:
    """A host's commands, run as argument lists (every word quoted), in the C locale."""

    transport: Transport
    become: bool = False
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # more environment (git's GIT_SSH_COMMAND)

    async def run(self, argv: Sequence[str], cwd: str | None = None, stdin: bytes | None = None) -> CommandResult:
        return await self.transport.run(shlex.join(argv), cwd=cwd, become=self.become, timeout=self.timeout,
                                        env={**_C_LOCALE, **self.env}, stdin=stdin)

    async def must(self, argv: Sequence[str], cwd: str | None = None, stdin: bytes | None = None,
                   what: str | None = None) -> str:
        """The command's output; SystemFailure naming it (or `what`) when it fails."""
        result = await self.run(argv, cwd, stdin)
        if not result.ok:
            raise SystemFailure(f"{what or shlex.join(argv)}: {why(result)}")
        return result.stdout

    async def exists(self, path: str) -> bool:
        return (await self.run(["test", "-e", path])).ok

    async def is_dir(self, path: str) -> bool:
        return (await self.run(["test", "-d", path])).ok


def whole(args: Mapping[str, Any], name: str) -> int | None:
    """A whole-number argument (uid, gid, depth, cache_valid_time), also when a template gave it as text."""
    value = args.get(name)
    if value in (None, ""):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise SystemFailure(f"{name} {value!r} is not a whole number") from None


def why(result: CommandResult) -> str:
    """A failed command's exit code and its last lines (what Ansible reports as msg/stderr)."""
    return "; ".join([result.describe(), *result.tail[-3:]])


# -- git ----------------------------------------------------------------------------------------------------

@dataclass
class _Git:
    sh: HostShell
    dest: str
    remote: str
    depth: int | None

    async def git(self, *args: str, cwd: str | None = None, what: str | None = None) -> str:
        return await self.sh.must(["git", *args], cwd=self.dest if cwd is None else cwd, what=what)

    async def version(self) -> str:
        return (await self.git("rev-parse", "HEAD")).strip()

    async def ls_remote(self, where: str, *args: str, cwd: str | None = None) -> str:
        return await self.git("ls-remote", where, *args, cwd=cwd)

    async def is_remote_branch(self, where: str, version: str, cwd: str | None = None) -> bool:
        return version in await self.ls_remote(where, "-h", f"refs/heads/{version}", cwd=cwd)

    async def is_remote_tag(self, where: str, version: str, cwd: str | None = None) -> bool:
        return version in await self.ls_remote(where, "-t", f"refs/tags/{version}", cwd=cwd)

    async def is_local_branch(self, branch: str) -> bool:
        return (await self.sh.run(["git", "show-ref", "--verify", "--quiet", f"refs/heads/{branch}"],
                                  cwd=self.dest)).ok

    async def head_branch(self) -> str:
        """The branch HEAD is on; when detached, the branch the remote's HEAD names (as Ansible reads it)."""
        on_branch = await self.sh.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=self.dest)
        if on_branch.ok:
            return on_branch.stdout.strip().removeprefix("refs/heads/")
        ref = (await self.git("symbolic-ref", f"refs/remotes/{self.remote}/HEAD")).strip()
        return ref.removeprefix(f"refs/remotes/{self.remote}/")

    async def has_local_mods(self) -> bool:
        # As Ansible: untracked files (`??`) are not modifications.
        out = await self.git("status", "--porcelain")
        return any(line and not line.startswith("??") for line in out.splitlines())

    async def remote_url(self) -> str | None:
        got = await self.sh.run(["git", "ls-remote", "--get-url", self.remote], cwd=self.dest)
        return got.stdout.strip() if got.ok else None

    async def set_remote_url(self, repo: str) -> bool:
        url = await self.remote_url()
        if url is not None and _same_repo(url, repo):
            return False
        await self.git("remote", "set-url", self.remote, repo, what=f"set a new url {repo} for {self.remote}")
        return url is not None

    async def clone(self, repo: str, version: str) -> None:
        parent = posixpath.dirname(self.dest) or "."
        await self.sh.must(["mkdir", "-p", parent])
        argv = ["clone", "--origin", self.remote]
        if self.depth:
            if version == "HEAD":
                argv += ["--depth", str(self.depth)]
            elif await self.is_remote_branch(repo, version, cwd=parent) or \
                    await self.is_remote_tag(repo, version, cwd=parent):
                argv += ["--depth", str(self.depth), "--branch", version]
        await self.git(*argv, repo, self.dest, cwd=parent)

    async def fetch(self, repo: str, version: str, force: bool) -> None:
        await self.set_remote_url(repo)
        argv, refspecs = ["fetch"], []
        if self.depth:
            if version == "HEAD":
                refspecs.append(await self.head_branch())
            elif await self.is_remote_branch(repo, version):
                if await self.head_branch_or_none() != version:
                    refspecs.append(f"+refs/heads/{version}:refs/heads/{version}")
                refspecs.append(f"+refs/heads/{version}:refs/remotes/{self.remote}/{version}")
            elif await self.is_remote_tag(repo, version):
                refspecs.append(f"+refs/tags/{version}:refs/tags/{version}")
            if refspecs:
                argv += ["--depth", str(self.depth)]
        if not self.depth or not refspecs:
            argv.append("--tags")
        if force:
            argv.append("--force")
        await self.git(*argv, self.remote, *refspecs, what="Failed to download remote objects and refs")

    async def head_branch_or_none(self) -> str | None:
        try:
            return await self.head_branch()
        except SystemFailure:
            return None

    async def switch_version(self, version: str) -> None:
        if version == "HEAD":
            branch = await self.head_branch()
            await self.git("checkout", "--force", branch, what=f"Failed to checkout branch {branch}")
            await self.git("reset", "--hard", f"{self.remote}/{branch}", "--",
                           what=f"Failed to checkout branch {branch}")
        elif await self.is_remote_branch(self.remote, version):
            if not await self.is_local_branch(version):
                if self.depth:
                    await self.git("fetch", f"--depth={self.depth}", self.remote,
                                   f"+refs/heads/{version}:refs/remotes/{self.remote}/{version}")
                await self.git("checkout", "--track", "-b", version, f"{self.remote}/{version}",
                               what=f"Failed to checkout {version}")
            else:
                await self.git("checkout", "--force", version, what=f"Failed to checkout branch {version}")
                await self.git("reset", "--hard", f"{self.remote}/{version}", what=f"Failed to checkout {version}")
        else:
            await self.git("checkout", "--force", version, what=f"Failed to checkout {version}")

    async def remote_head(self, repo: str, version: str, cloning: bool = True) -> str:
        """The revision `version` names upstream: in `repo` when cloning (clone=no, or a check before the clone:
        what a clone would check out), else in the clone's remote, HEAD then being the clone's branch (as Ansible)."""
        where, cwd = (repo, "/") if cloning else (self.remote, self.dest)
        if version == "HEAD":
            ref = "HEAD" if cloning else f"refs/heads/{await self.head_branch()}"
            out = await self.ls_remote(where, "-h", ref, cwd=cwd)
        elif await self.is_remote_branch(where, version, cwd=cwd):
            out = await self.ls_remote(where, "-h", f"refs/heads/{version}", cwd=cwd)
        elif await self.is_remote_tag(where, version, cwd=cwd):
            lines = (await self.ls_remote(where, "-t", f"refs/tags/{version}*", cwd=cwd)).splitlines()
            # An annotated tag: the commit it points to (`^{}`), as Ansible takes it.
            out = next((x for x in lines if x.endswith(f"{version}^{{}}")), None) or \
                next((x for x in reversed(lines) if x.endswith(version)), "")
        else:
            return version
        if not out.split():
            raise SystemFailure(f"Could not determine remote revision for {version}")
        return out.split()[0]


def _same_repo(a: str, b: str) -> bool:
    return a == b or posixpath.normpath(a) == posixpath.normpath(b)


async def git(args: Mapping[str, Any], sh: HostShell, check: bool = False, diff: bool = False) -> Done:
    """Ansible's git: clone `repo` into `dest`, or fetch and move it to `version`; changed when HEAD moved,
    local modifications were thrown away (force) or the remote's URL changed. Under check (as Ansible's):
    nothing cloned, fetched or reset; `after` is what the remote names, changed when it is not HEAD."""
    repo, version = str(args["repo"]), str(args.get("version") or "HEAD")
    if repo.startswith("/"):
        repo = "file://" + repo  # as Ansible: a path is a file:// URL
    dest = posixpath.normpath(str(args["dest"]))
    # As Ansible: accept_hostkey / accept_newhostkey are ssh's StrictHostKeyChecking for an ssh:// repo.
    checking = "no" if args.get("accept_hostkey") else "accept-new" if args.get("accept_newhostkey") else None
    if checking is not None:
        sh = replace(sh, env={**sh.env, "GIT_SSH_COMMAND": f"ssh -o StrictHostKeyChecking={checking}"})
    g = _Git(sh, dest, str(args.get("remote") or "origin"), whole(args, "depth"))
    values: dict[str, Any] = {"before": None}
    local_mods = remote_url_changed = False
    if not await sh.exists(f"{dest}/.git/config"):
        if check or not bool(args.get("clone", True)):
            after = await g.remote_head(repo, version)
            values.update(after=after, **({"diff": {"prepared": f">> Newly checked out {after}"}} if diff else {}))
            return Done(changed=True, command=f"git ls-remote {repo}", values=values,
                        message=f"would clone {repo} into {dest} at {after[:12]}" if check else "")
        await g.clone(repo, version)
    elif not bool(args.get("update", True)):
        before = await g.version()
        return Done(command=f"git rev-parse HEAD in {dest}", values={"before": before, "after": before})
    else:
        local_mods = await g.has_local_mods()
        values["before"] = await g.version()
        if local_mods:
            if not bool(args.get("force", False)):
                message = f"Local modifications exist in the destination: {dest} (force=no)."
                return Done(failed=True, message=message, command=f"git status --porcelain in {dest}",
                            values={**values, "msg": message})
            if not check:
                await g.git("reset", "--hard", "HEAD")
                values["msg"] = f"Local modifications exist in the destination: {dest}"
        if check:
            return await _git_check(g, repo, version, values, diff)
        remote_url_changed = await g.set_remote_url(repo)
        values["remote_url_changed"] = remote_url_changed
        await g.fetch(repo, version, bool(args.get("force", False)))
    await g.switch_version(version)
    values["after"] = await g.version()
    changed = values["before"] != values["after"] or local_mods or remote_url_changed
    short = (values["after"] or "")[:12]
    return Done(changed=changed, command=f"git {repo} -> {dest}", values=values,
                message=f"{dest} at {short}" + ("" if changed else " (as it was)"))


async def _git_check(g: _Git, repo: str, version: str, values: dict[str, Any], diff: bool) -> Done:
    """A clone under check, as Ansible's: its remote asked where `version` is now; changed when that is not
    HEAD or the remote's URL would change. Local modifications (with force) alone do not count, as in Ansible."""
    url = await g.remote_url()
    remote_url_changed = bool(url) and not _same_repo(url or "", repo)
    after = await g.remote_head(repo, version, cloning=False)
    changed = values["before"] != after or remote_url_changed
    values.update(remote_url_changed=remote_url_changed, after=after)
    if diff and values["before"] != after:
        values["diff"] = {"prepared": await _git_diff(g, values["before"], after)}
    return Done(changed=changed, command=f"git ls-remote {g.remote} in {g.dest}", values=values,
                message=f"{g.dest} would move to {after[:12]}" if changed else f"{g.dest} at {after[:12]} (as it is)")


async def _git_diff(g: _Git, before: str, after: str) -> str:
    """`git diff before after` when the clone has `after` already. Ansible's check fetches it first, which
    writes into .git; ours fetches nothing, so a commit not yet fetched is named, not shown."""
    if not (await g.sh.run(["git", "cat-file", "-e", f"{after}^{{commit}}"], cwd=g.dest)).ok:
        return f">> {after} is not fetched yet (check mode fetches nothing): no diff from {before}\n"
    shown = await g.sh.run(["git", "diff", before, after], cwd=g.dest)
    if not shown.ok:
        return f">> Failed to get proper diff between {before} and {after}\n"
    return shown.stdout or f">> No visual differences between {before} and {after}"


# -- group --------------------------------------------------------------------------------------------------

async def _entry(sh: HostShell, database: str, name: str) -> list[str] | None:
    """The host's passwd/group/shadow entry for `name` as its fields, or None if there is none."""
    found = await sh.run(["getent", database, name])
    if found.rc == 2:  # getent: no such key
        return None
    if not found.ok:
        raise SystemFailure(f"getent {database} {name}: {found.describe()}")
    return found.stdout.strip().split("\n")[0].split(":")


async def group(args: Mapping[str, Any], sh: HostShell, check: bool = False) -> Done:
    """Ansible's group: groupadd (-g, -r) when missing, groupmod -g when the gid differs, groupdel when absent.
    Under check none of them runs: changed says one would."""
    name, state = str(args["name"]), str(args.get("state") or "present")
    gid = whole(args, "gid")
    system = bool(args.get("system", False))
    values: dict[str, Any] = {"name": name, "state": state}
    entry = await _entry(sh, "group", name)
    argv: list[str] = []
    if state == "absent":
        if entry is not None:
            argv = ["groupdel", name]
    elif entry is None:
        argv = ["groupadd", *(["-g", str(gid)] if gid is not None else []), *(["-r"] if system else []), name]
    elif gid is not None and int(entry[2]) != gid:
        argv = ["groupmod", "-g", str(gid), name]
    if argv and check and argv[0] != "groupmod":  # as Ansible's: it exits with changed alone
        return Done(changed=True, command=shlex.join(argv), message=f"would run {shlex.join(argv)}")
    if argv and not check:
        result = await sh.run(argv)
        if not result.ok:
            return Done(failed=True, message=why(result), command=shlex.join(argv), values=values)
    if state == "present":
        entry = await _entry(sh, "group", name)
        values.update(system=system, gid=int(entry[2]) if entry else None)
    return Done(changed=bool(argv), command=shlex.join(argv) if argv else f"getent group {name}", values=values,
                message=shlex.join(argv) if argv else f"group {name} {state}")


# -- user ---------------------------------------------------------------------------------------------------

def _group_names(value: Any) -> list[str] | None:
    """`groups` as Ansible reads it: a list, or a comma-separated string; None when not given."""
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(g).strip() for g in items if str(g).strip()]


async def _group_entry(sh: HostShell, name: str) -> list[str]:
    entry = await _entry(sh, "group", name)
    if entry is None:
        raise SystemFailure(f"Group {name} does not exist")  # Ansible's words
    return entry


async def _memberships(sh: HostShell, user: str) -> set[str]:
    """Every group that lists `user` as a member (Ansible's user_group_membership, primary not excluded)."""
    out = await sh.must(["getent", "group"])
    return {f[0] for f in (line.split(":") for line in out.splitlines()) if len(f) > 3 and user in f[3].split(",")}


async def _set_password(sh: HostShell, name: str, password: str) -> None:
    # The hash goes on stdin, never on a command line: no process listing, log or message can show it.
    result = await sh.run(["chpasswd", "-e"], stdin=f"{name}:{password}\n".encode())
    if not result.ok:
        raise SystemFailure(f"setting the password of {name} failed (exit code {result.rc})")


def home_mode(login_defs: str) -> int:
    """The mode of a home directory Ansible makes: login.defs' HOME_MODE, else 0777 less its UMASK, else 0755."""
    mode = 0o755
    for line in login_defs.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "HOME_MODE" and words[1].isdigit():
            return int(words[1], 8)
        if len(words) == 2 and words[0] == "UMASK" and words[1].isdigit():
            mode = 0o777 & ~int(words[1], 8)
    return mode


async def _create_home(sh: HostShell, home: str, uid: str, gid: str) -> None:
    """As Ansible's create_homedir: a copy of /etc/skel (or an empty directory), its mode from login.defs,
    owned by the user."""
    defs = await sh.run(["cat", "/etc/login.defs"])
    mode = f"{home_mode(defs.stdout if defs.ok else ''):o}"
    script = ('if [ -d /etc/skel ]; then mkdir -p "$(dirname "$1")" && cp -a /etc/skel "$1"; else mkdir -p "$1"; fi'
              ' && chmod "$2" "$1" && chown -R "$3:$4" "$1"')
    await sh.must(["sh", "-c", script, "create_home", home, mode, uid, gid], what=f"create home directory {home}")


async def user(args: Mapping[str, Any], sh: HostShell, check: bool = False) -> Done:
    """Ansible's user: useradd when missing, usermod for what differs, userdel when absent; the home
    directory made when missing (create_home); a password hash set when it differs (never shown).
    Under check nothing runs: changed says what would (useradd/userdel exit at once, as Ansible's do)."""
    name, state = str(args["name"]), str(args.get("state") or "present")
    values: dict[str, Any] = {"name": name, "state": state}
    entry = await _entry(sh, "passwd", name)
    if state == "absent":
        if entry is None:
            return Done(command=f"getent passwd {name}", message=f"user {name} absent", values=values)
        force, remove = bool(args.get("force", False)), bool(args.get("remove", False))
        argv = ["userdel", *(["-f"] if force else []), *(["-r"] if remove else []), name]
        if check:
            return Done(changed=True, command=shlex.join(argv), message=f"would run {shlex.join(argv)}")
        result = await sh.run(argv)
        values.update(force=force, remove=remove)
        if not result.ok:
            return Done(failed=True, message=why(result), command=shlex.join(argv), values=values)
        return Done(changed=True, command=shlex.join(argv), message=shlex.join(argv), values=values)

    uid = None if whole(args, "uid") is None else str(whole(args, "uid"))
    primary = str(args["group"]) if args.get("group") not in (None, "") else None
    groups = _group_names(args.get("groups"))
    comment, home, shell = (str(args[k]) if args.get(k) is not None else None for k in ("comment", "home", "shell"))
    password = str(args["password"]) if args.get("password") not in (None, "") else None
    create_home = bool(args.get("create_home", True))
    append = bool(args.get("append", False))
    argv: list[str] = []
    set_password = False
    if entry is None and check:
        return Done(changed=True, command=f"useradd {name}", message=f"would add user {name}")
    if entry is None:
        argv = ["useradd", *(["-u", uid] if uid else [])]
        if primary is not None:
            await _group_entry(sh, primary)
            argv += ["-g", primary]
        elif await _entry(sh, "group", name) is not None:
            argv.append("-N")  # as Ansible: a group named like the user exists, useradd must not make one
        if groups:
            argv += ["-G", ",".join([(await _group_entry(sh, g))[0] for g in groups])]
        if comment is not None:
            argv += ["-c", comment]
        if home is not None:
            if create_home and not await sh.is_dir(posixpath.dirname(home)):
                await sh.must(["mkdir", "-p", posixpath.dirname(home)])  # useradd makes only the last level
            argv += ["-d", home]
        if shell is not None:
            argv += ["-s", shell]
        argv += ["-m"] if create_home else ["-M"]
        if bool(args.get("system", False)):
            argv.append("-r")
        set_password = password is not None
        values.update(system=bool(args.get("system", False)), create_home=create_home)
    else:
        argv = ["usermod"]
        if uid is not None and entry[2] != uid:
            argv += ["-u", uid]
        if primary is not None:
            want_gid = (await _group_entry(sh, primary))[2]
            if entry[3] != want_gid:
                argv += ["-g", want_gid]
        if groups is not None:
            current = await _memberships(sh, name)
            wanted = {(await _group_entry(sh, g))[0] for g in groups}
            if not groups:  # groups: "" — every supplementary group dropped, unless append
                if current and not append:
                    argv += ["-G", ""]
            elif current ^ wanted and (not append or wanted - current):
                argv += (["-a"] if append else []) + ["-G", ",".join(sorted(wanted))]
        for option, want, have in (("-c", comment, entry[4]), ("-d", home, entry[5]), ("-s", shell, entry[6])):
            if want is not None and want != have:
                argv += [option, want]
                if option == "-d" and bool(args.get("move_home", False)):
                    argv.append("-m")
        if password is not None and str(args.get("update_password") or "always") == "always":
            shadow = await _entry(sh, "shadow", name)
            set_password = shadow is None or shadow[1].lstrip("!") != password.lstrip("!")
        argv = argv if len(argv) > 1 else []
        values.update(append=append, move_home=bool(args.get("move_home", False)))
    if argv and not check:
        result = await sh.run([*argv, name])
        if not result.ok:
            return Done(failed=True, message=why(result), command=shlex.join([*argv, name]), values=values)
    if set_password and not check:
        await _set_password(sh, name, password or "")
    changed = bool(argv) or set_password
    entry = await _entry(sh, "passwd", name)
    if entry is None:
        return Done(failed=True, message=f"failed to look up user name: {name}", values=values)
    values.update(uid=int(entry[2]), group=int(entry[3]), comment=entry[4], home=entry[5], shell=entry[6])
    if groups is not None:
        values["groups"] = ",".join(groups)
    if password is not None:
        values["password"] = NOT_LOGGING_PASSWORD
    if create_home and not await sh.exists(entry[5]):
        if not check:
            await _create_home(sh, entry[5], entry[2], entry[3])
        changed = True
    done = shlex.join([*argv, name]) if argv else f"user {name} present"
    said = ("would run " if check and argv else "") + done + \
        ((" (password would be set)" if check else " (password set)") if set_password else "")
    return Done(changed=changed, command=done, message=said,
                values=values)


# -- apt ----------------------------------------------------------------------------------------------------

# As Ansible's apt: no questions, the package's own config files kept where the admin changed them.
_APT_ENV = {**_C_LOCALE, "DEBIAN_FRONTEND": "noninteractive", "DEBIAN_PRIORITY": "critical"}
_DPKG_OPTIONS = ("--force-confdef", "--force-confold")
_APT_DPKG_OPTIONS = tuple(arg for option in _DPKG_OPTIONS for arg in ("-o", f"Dpkg::Options::={option}"))
_CACHE_STAMP = "/var/lib/apt/periodic/update-success-stamp"
_LISTS = "/var/lib/apt/lists"


@dataclass
class _Package:
    name: str
    version: str | None  # `name=version`: Ansible's version pattern (fnmatch)
    installed: str | None  # the version dpkg has installed, or None
    candidate: str | None  # the version apt would install, or None
    has_files: bool  # removed but not purged: its config files are still there


def _package_names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(p).strip() for p in items if str(p).strip() and str(p).strip() != "*"]


async def _apt(sh: HostShell, argv: Sequence[str]) -> CommandResult:
    return await sh.transport.run(shlex.join(argv), become=sh.become, timeout=sh.timeout, env=_APT_ENV)


async def _package(sh: HostShell, spec: str) -> _Package:
    name, _, version = spec.partition("=")
    status = await sh.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", name])
    abbrev, _, have = status.stdout.partition("|") if status.ok else ("", "", "")
    policy = await sh.run(["apt-cache", "policy", name])
    candidate = next((line.split(":", 1)[1].strip() for line in policy.stdout.splitlines()
                      if line.strip().startswith("Candidate:")), None) if policy.ok else None
    return _Package(name=name, version=version or None, installed=have.strip() if abbrev.startswith("ii") else None,
                    candidate=None if candidate in (None, "(none)") else candidate,
                    has_files=abbrev[1:2] in ("c", "i", "U", "F", "H", "W", "t"))


async def _cache_time(sh: HostShell) -> float:
    """When apt's lists were last updated, as Ansible reads it: the update stamp's mtime, else the lists'."""
    got = await sh.run(["sh", "-c", f"stat -c %Y {_CACHE_STAMP} 2>/dev/null || stat -c %Y {_LISTS} 2>/dev/null "
                                    "|| echo 0"])
    return float(got.stdout.split()[0]) if got.ok and got.stdout.split() else 0.0


async def _now(sh: HostShell) -> float:
    got = await sh.must(["date", "+%s"])
    return float(got.strip())


async def apt(args: Mapping[str, Any], sh: HostShell, check: bool = False) -> Done:
    """Ansible's apt: apt-get update when asked (and the lists are older than cache_valid_time), then
    install (present: when missing; latest: when the candidate differs) or remove what needs it, with
    dpkg-query and apt-get; `deb`: dpkg -i unless that version is installed. Under check neither apt-get nor
    dpkg runs: stale lists count as updated, and changed says a package would be installed or removed."""
    state = str(args.get("state") or "present")
    values: dict[str, Any] = {}
    packages = _package_names(args.get("name")) if args.get("name") is not None else []
    deb = str(args["deb"]) if args.get("deb") not in (None, "") else None
    if args.get("update_cache") or args.get("cache_valid_time"):
        mtime = await _cache_time(sh)
        valid = whole(args, "cache_valid_time") or 0
        stale = mtime + valid < await _now(sh)
        if stale and not check:
            updated = await _apt(sh, ["apt-get", "update"])
            if not updated.ok:
                return Done(failed=True, command="apt-get update", values=values,
                            message=f"Failed to update apt cache: {why(updated)}")
        after = await _cache_time(sh)
        updated_now = after != mtime or (check and stale)  # as Ansible's: under check, stale lists count as updated
        values.update(cache_updated=updated_now, cache_update_time=int(after))
        if not packages and deb is None:
            return Done(changed=updated_now, command="apt-get update", values=values,
                        message="cache valid" if not updated_now else "cache would be updated" if check else
                        "cache updated")
    if deb is not None:
        if state != "present":
            return Done(failed=True, command=f"apt deb={deb}", message="deb only supports state=present")
        return await _install_deb(sh, deb, values, check)
    for spec in packages:
        if spec.count("=") > 1:
            return Done(failed=True, command=f"apt {spec}", message=f"invalid package spec: {spec}")
    found = [await _package(sh, spec) for spec in packages]
    if state == "absent":
        purge = bool(args.get("purge", False))
        gone = [p.name for p in found if p.installed is not None and (p.version is None or
                                                                     fnmatch.fnmatch(p.installed, p.version))
                or (purge and p.has_files)]
        if not gone:
            return Done(command=f"apt {' '.join(packages)} absent", values=values, message="nothing to remove")
        argv = ["apt-get", "-q", "-y", *_APT_DPKG_OPTIONS, *(["--purge"] if purge else []),
                *(["--auto-remove"] if args.get("autoremove") else []), "remove", *gone]
    else:
        wanted: list[str] = []
        for p in found:
            if p.candidate is None and p.installed is None:
                return Done(failed=True, command=f"apt {p.name}", values=values,
                            message=f"No package matching '{p.name}' is available")
            matches = p.installed is not None and (p.version is None or fnmatch.fnmatch(p.installed, p.version))
            if p.installed is None or not matches or (state == "latest" and p.candidate not in (None, p.installed)):
                wanted.append(f"{p.name}={p.version}" if p.version else
                              f"{p.name}={p.candidate}" if p.candidate else p.name)
        recommends = args.get("install_recommends")
        argv = ["apt-get", "-y", *_APT_DPKG_OPTIONS, "install", *wanted,
                *(["-o", f"APT::Install-Recommends={'yes' if recommends else 'no'}"] if recommends is not None else [])]
        if not wanted:
            argv = []
    if argv and check:
        return Done(changed=True, command=shlex.join(argv), values=values, message=f"would run {shlex.join(argv)}")
    if argv:
        done = await _apt(sh, argv)
        if not done.ok:
            return Done(failed=True, command=shlex.join(argv), message=f"'{shlex.join(argv)}' failed: {why(done)}",
                        values={**values, "stdout": done.stdout})
        values["stdout"] = done.stdout
    if state != "absent" and packages and not check:  # as Ansible: what was asked for is marked manually installed
        await sh.must(["apt-mark", "manual", *[p.name for p in found]])
    command = shlex.join(argv) if argv else f"apt {' '.join(packages)} {state}"
    return Done(changed=bool(argv), command=command, values=values, message=command)


async def _install_deb(sh: HostShell, deb: str, values: dict[str, Any], check: bool = False) -> Done:
    if "://" in deb:
        raise SystemFailure(f"deb {deb}: only a .deb file on the host is installed natively (not a URL)")
    fields = await sh.must(["dpkg-deb", "-f", deb, "Package", "Version"], what=f"read {deb}")
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    package = await _package(sh, info.get("Package", ""))
    if package.installed is not None and package.installed == info.get("Version"):
        return Done(command=f"dpkg -i {deb}", values=values, message=f"{package.name} {package.installed} installed")
    argv = ["dpkg", *_DPKG_OPTIONS, "-i", deb]
    if check:
        return Done(changed=True, command=shlex.join(argv), values=values, message=f"would run {shlex.join(argv)}")
    done = await _apt(sh, argv)
    if not done.ok:
        return Done(failed=True, command=shlex.join(argv), message=f"{shlex.join(argv)} failed: {why(done)}",
                    values={**values, "stdout": done.stdout})
    return Done(changed=True, command=shlex.join(argv), values={**values, "stdout": done.stdout},
                message=shlex.join(argv))


__all__ = ["NOT_LOGGING_PASSWORD", "Done", "HostShell", "SystemFailure", "apt", "git", "group", "user"]
