"""The one command language every front end speaks.

A key in the TUI, a line at its `:` prompt and a line of a `--script` file are
all parsed here into the same immutable command objects. Parsing checks the
names (apps, groups, hosts) against the config, so a whole script is validated
before its first line runs.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
import difflib
import shlex
from dataclasses import dataclass, fields
from typing import Callable, ClassVar, Iterable

from opsconsole.rollouts.batch import BatchError, check_batch
from opsconsole.units import format_duration, is_count, parse_duration


class CommandError(OperatorError, ValueError):
    """A command line that cannot be parsed; the message says what would have been valid."""


@dataclass(frozen=True)
class Names:
    """What a command may refer to: taken from the loaded config and inventory."""

    apps: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    verb: ClassVar[str] = ""
    usage: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    mutating: ClassVar[bool] = True  # changes something: refused when the console is read-only
    # `abort` stops it (a deploy or a rollout: hosts not yet reached stay untouched)
    abortable: ClassVar[bool] = False
    # a front end asks the operator first (with `engine.preview(command)`) when it also changes something
    confirm: ClassVar[bool] = True
    # its output is the point (a table, a log): a front end shows all of it until the operator is done reading
    reports: ClassVar[bool] = False

    def text(self) -> str:
        """The canonical command line; parsing it gives this command back."""
        raise NotImplementedError


@dataclass(frozen=True)
class Status(Command):
    verb: ClassVar[str] = "status"
    usage: ClassVar[str] = "status [APP]"
    summary: ClassVar[str] = "show every host: service, health, version"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False
    app: str | None = None

    def text(self) -> str:
        return _join("status", self.app)


@dataclass(frozen=True)
class Deploy(Command):
    verb: ClassVar[str] = "deploy"
    usage: ClassVar[str] = "deploy APP [--hosts H,H…] [--version COMMIT]"
    summary: ClassVar[str] = "build if needed, then run the app's deploy playbook (honours its serial)"
    abortable: ClassVar[bool] = True
    app: str = ""
    hosts: tuple[str, ...] = ()
    version: str | None = None

    def text(self) -> str:
        return _join("deploy", self.app, "--hosts" if self.hosts else None, ",".join(self.hosts) or None,
                     "--version" if self.version else None, self.version)


@dataclass(frozen=True)
class Start(Command):
    verb: ClassVar[str] = "start"
    usage: ClassVar[str] = "start APP"
    summary: ClassVar[str] = "start the app's service on its hosts (canary included)"
    confirm: ClassVar[bool] = False  # it only starts what is stopped
    app: str = ""

    def text(self) -> str:
        return _join("start", self.app)


@dataclass(frozen=True)
class Stop(Command):
    verb: ClassVar[str] = "stop"
    usage: ClassVar[str] = "stop APP"
    summary: ClassVar[str] = "stop the app's service on its hosts (canary included)"
    app: str = ""

    def text(self) -> str:
        return _join("stop", self.app)


@dataclass(frozen=True)
class Run(Command):
    verb: ClassVar[str] = "run"
    usage: ClassVar[str] = "run GROUP|HOST -- COMMAND…"
    summary: ClassVar[str] = "run a shell command on every host of a group (or one host)"
    reports: ClassVar[bool] = True
    target: str = ""
    command: str = ""

    def text(self) -> str:
        return f"run {shlex.quote(self.target)} -- {self.command}"


@dataclass(frozen=True)
class WaitHealthy(Command):
    verb: ClassVar[str] = "wait"
    usage: ClassVar[str] = "wait healthy APP TIMEOUT"  # `wait down HOST TIMEOUT` parses here too
    summary: ClassVar[str] = "wait until every host of the app answers its health check"
    mutating: ClassVar[bool] = False
    app: str = ""
    timeout: float = 30.0

    def text(self) -> str:
        return _join("wait", "healthy", self.app, _duration_text(self.timeout))


@dataclass(frozen=True)
class WaitDown(Command):
    verb: ClassVar[str] = "wait down"
    usage: ClassVar[str] = "wait down HOST TIMEOUT"
    summary: ClassVar[str] = "wait until the heartbeat declares a host down"
    mutating: ClassVar[bool] = False
    host: str = ""
    timeout: float = 30.0

    def text(self) -> str:
        return _join("wait", "down", self.host, _duration_text(self.timeout))


@dataclass(frozen=True)
class Heartbeat(Command):
    verb: ClassVar[str] = "heartbeat"
    usage: ClassVar[str] = "heartbeat"
    summary: ClassVar[str] = "the heartbeat table: every host's state, last status, latency"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False

    def text(self) -> str:
        return "heartbeat"


@dataclass(frozen=True)
class Probe(Command):
    verb: ClassVar[str] = "probe"
    usage: ClassVar[str] = "probe HOST"
    summary: ClassVar[str] = "probe one host now"
    mutating: ClassVar[bool] = False
    host: str = ""

    def text(self) -> str:
        return _join("probe", self.host)


@dataclass(frozen=True)
class Sleep(Command):
    verb: ClassVar[str] = "sleep"
    usage: ClassVar[str] = "sleep DURATION"
    summary: ClassVar[str] = "pause the script (e.g. sleep 2s)"
    mutating: ClassVar[bool] = False
    seconds: float = 0.0

    def text(self) -> str:
        return _join("sleep", _duration_text(self.seconds))


@dataclass(frozen=True)
class Build(Command):
    verb: ClassVar[str] = "build"
    usage: ClassVar[str] = "build APP [COMMIT]"
    summary: ClassVar[str] = "build the branch head (or COMMIT) and keep the artifact"
    confirm: ClassVar[bool] = False  # it only adds an artifact
    app: str = ""
    commit: str | None = None

    def text(self) -> str:
        return _join("build", self.app, self.commit)


@dataclass(frozen=True)
class Roll(Command):
    verb: ClassVar[str] = "roll"
    usage: ClassVar[str] = "roll APP [--batch N|N%] [--max-fail N] [--version COMMIT] [--on-failure stop|rollback] [--plan]"
    summary: ClassVar[str] = "rolling update: per batch drain → deploy → health gate → back in the pool"
    abortable: ClassVar[bool] = True
    app: str = ""
    batch: str | None = None
    max_fail: int = 0
    version: str | None = None
    on_failure: str = "stop"
    plan_only: bool = False

    @property
    def mutating(self) -> bool:  # type: ignore[override]
        return not self.plan_only

    def text(self) -> str:
        return _join("roll", self.app, *(("--batch", self.batch) if self.batch else ()),
                     *(("--max-fail", str(self.max_fail)) if self.max_fail else ()),
                     *(("--version", self.version) if self.version else ()),
                     *(("--on-failure", self.on_failure) if self.on_failure != "stop" else ()),
                     "--plan" if self.plan_only else None)


@dataclass(frozen=True)
class RollResume(Command):
    verb: ClassVar[str] = "roll resume"
    usage: ClassVar[str] = "roll resume APP"
    summary: ClassVar[str] = "finish an interrupted rollout where it stopped"
    abortable: ClassVar[bool] = True
    app: str = ""

    def text(self) -> str:
        return _join("roll", "resume", self.app)


@dataclass(frozen=True)
class Rollback(Command):
    verb: ClassVar[str] = "rollback"
    usage: ClassVar[str] = "rollback APP [--batch N|N%]"
    summary: ClassVar[str] = "roll the previous good version out the same way"
    abortable: ClassVar[bool] = True
    app: str = ""
    batch: str | None = None

    def text(self) -> str:
        return _join("rollback", self.app, *(("--batch", self.batch) if self.batch else ()))


@dataclass(frozen=True)
class Pause(Command):
    verb: ClassVar[str] = "pause"
    usage: ClassVar[str] = "pause"
    summary: ClassVar[str] = "pause the running rollout before its next batch"
    confirm: ClassVar[bool] = False  # it only holds a rollout between batches

    def text(self) -> str:
        return "pause"


@dataclass(frozen=True)
class Resume(Command):
    verb: ClassVar[str] = "resume"
    usage: ClassVar[str] = "resume"
    summary: ClassVar[str] = "resume a paused rollout"
    confirm: ClassVar[bool] = False  # it only lets a paused rollout go on

    def text(self) -> str:
        return "resume"


@dataclass(frozen=True)
class LockStatus(Command):
    verb: ClassVar[str] = "lock"
    usage: ClassVar[str] = "lock status APP"
    summary: ClassVar[str] = "who holds an app's deploy lock, since when and why"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False
    app: str = ""

    def text(self) -> str:
        return _join("lock", "status", self.app)


@dataclass(frozen=True)
class LockRelease(Command):
    verb: ClassVar[str] = "lock release"
    usage: ClassVar[str] = "lock release APP"
    summary: ClassVar[str] = "remove an app's deploy lock (a stale one, or one you know is dead)"
    app: str = ""

    def text(self) -> str:
        return _join("lock", "release", self.app)


@dataclass(frozen=True)
class History(Command):
    verb: ClassVar[str] = "history"
    usage: ClassVar[str] = "history APP [--json]"
    summary: ClassVar[str] = "each rollout of an app as a timeline: steps, hosts, durations, who"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False
    app: str = ""
    as_json: bool = False

    def text(self) -> str:
        return _join("history", self.app, "--json" if self.as_json else None)


@dataclass(frozen=True)
class Manifests(Command):
    verb: ClassVar[str] = "manifests"
    usage: ClassVar[str] = "manifests APP [--version V]"
    summary: ClassVar[str] = "print the Kubernetes objects `apply` would send, as multi-document YAML"
    mutating: ClassVar[bool] = False
    app: str = ""
    version: str | None = None

    def text(self) -> str:
        return _join("manifests", self.app, *(("--version", self.version) if self.version else ()))


@dataclass(frozen=True)
class Apply(Command):
    verb: ClassVar[str] = "apply"
    usage: ClassVar[str] = "apply APP [--version V]"
    summary: ClassVar[str] = "server-side apply an app's Kubernetes objects (what `manifests` prints)"
    app: str = ""
    version: str | None = None

    def text(self) -> str:
        return _join("apply", self.app, *(("--version", self.version) if self.version else ()))


CANARY_ACTIONS = ("weight", "steps", "promote", "rollback", "clear", "deploy")


@dataclass(frozen=True)
class Canary(Command):
    verb: ClassVar[str] = "canary"
    usage: ClassVar[str] = "canary APP weight N|steps|promote|rollback|clear|deploy [--version COMMIT]"
    summary: ClassVar[str] = "steer the canary: set its weight, walk the steps, promote, roll back, clear the alert"
    app: str = ""
    action: str = "weight"
    weight: int | None = None
    version: str | None = None

    def text(self) -> str:
        return _join("canary", self.app, self.action, str(self.weight) if self.weight is not None else None,
                     *(("--version", self.version) if self.version else ()))


@dataclass(frozen=True)
class Traffic(Command):
    verb: ClassVar[str] = "traffic"
    usage: ClassVar[str] = "traffic [APP]"
    summary: ClassVar[str] = "the proxy's pools and members: weights, health, requests, errors"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False
    app: str | None = None

    def text(self) -> str:
        return _join("traffic", self.app)


@dataclass(frozen=True)
class Provision(Command):
    verb: ClassVar[str] = "provision"
    usage: ClassVar[str] = "provision GROUP"
    summary: ClassVar[str] = "create the group's machines if it has a provider (EC2), then run its provisioning playbook"
    group: str = ""

    def text(self) -> str:
        return _join("provision", self.group)


@dataclass(frozen=True)
class PlaybookRun(Command):
    verb: ClassVar[str] = "playbook"
    usage: ClassVar[str] = "playbook run FILE [--limit HOSTS] [--check] [--diff]"
    summary: ClassVar[str] = ("run any playbook against the fleet (--limit: hosts or groups, comma separated; "
                              "--check: tell what each task would change, changing nothing; "
                              "--diff: show the files' before/after)")
    abortable: ClassVar[bool] = True
    file: str = ""
    limit: tuple[str, ...] = ()
    check: bool = False
    diff: bool = False

    def text(self) -> str:
        return _join("playbook", "run", self.file, *(("--limit", ",".join(self.limit)) if self.limit else ()),
                     "--check" if self.check else None, "--diff" if self.diff else None)


@dataclass(frozen=True)
class Scale(Command):
    verb: ClassVar[str] = "scale"
    usage: ClassVar[str] = "scale GROUP N [--yes]"
    summary: ClassVar[str] = "add or remove EC2 instances (removing drains them first; needs --yes)"
    group: str = ""
    count: int = 0
    yes: bool = False

    def text(self) -> str:
        return _join("scale", self.group, str(self.count), "--yes" if self.yes else None)


@dataclass(frozen=True)
class Decommission(Command):
    verb: ClassVar[str] = "decommission"
    usage: ClassVar[str] = "decommission GROUP [--yes]"
    summary: ClassVar[str] = "terminate every EC2 instance of the group (without --yes: only say which)"
    group: str = ""
    yes: bool = False

    def text(self) -> str:
        return _join("decommission", self.group, "--yes" if self.yes else None)


@dataclass(frozen=True)
class Builds(Command):
    verb: ClassVar[str] = "builds"
    usage: ClassVar[str] = "builds [APP]"
    summary: ClassVar[str] = "list builds: queued, running, finished, skipped"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False
    app: str | None = None

    def text(self) -> str:
        return _join("builds", self.app)


@dataclass(frozen=True)
class CancelBuild(Command):
    verb: ClassVar[str] = "cancel"
    usage: ClassVar[str] = "cancel build ID"
    summary: ClassVar[str] = "cancel a queued or running build (its processes are killed)"
    build_id: str = ""

    def text(self) -> str:
        return _join("cancel", "build", self.build_id)


@dataclass(frozen=True)
class LogBuild(Command):
    verb: ClassVar[str] = "log"
    usage: ClassVar[str] = "log build ID"
    summary: ClassVar[str] = "print a build's log"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False
    build_id: str = ""

    def text(self) -> str:
        return _join("log", "build", self.build_id)


@dataclass(frozen=True)
class Abort(Command):
    verb: ClassVar[str] = "abort"
    usage: ClassVar[str] = "abort"
    summary: ClassVar[str] = "stop the running deploy or rollout safely: hosts not reached stay untouched"

    def text(self) -> str:
        return "abort"


@dataclass(frozen=True)
class Help(Command):
    verb: ClassVar[str] = "help"
    usage: ClassVar[str] = "help"
    summary: ClassVar[str] = "list the commands"
    reports: ClassVar[bool] = True
    mutating: ClassVar[bool] = False

    def text(self) -> str:
        return "help"


def _join(*parts: str | None) -> str:
    # A value `--` is quoted: bare, it would read back as the remote command's marker.
    return " ".join("'--'" if p == "--" else shlex.quote(p) for p in parts if p is not None)


def _duration_text(seconds: float) -> str:
    return f"{seconds:g}s"


# -- parsing ---------------------------------------------------------------

Parser = Callable[[list[str], Names], Command]
_PARSERS: dict[str, tuple[type[Command], Parser]] = {}


def _parser(cls: type[Command]) -> Callable[[Parser], Parser]:
    def register(fn: Parser) -> Parser:
        _PARSERS[cls.verb] = (cls, fn)
        return fn
    return register


def command_classes() -> list[type[Command]]:
    """Every command type, for help and completion (`wait down` shares the `wait` parser)."""
    classes = [cls for cls, _ in _PARSERS.values()]
    classes.insert(classes.index(WaitHealthy) + 1, WaitDown)
    classes.insert(classes.index(Roll) + 1, RollResume)
    classes.insert(classes.index(LockStatus) + 1, LockRelease)
    return classes


def _words_and_command(line: str) -> tuple[list[str], str | None]:
    """The words of `line` (shell rules, `#` comments), and the remote command after the first `--` that is a
    word of its own, unquoted (None without one). Read with the words: a `--` inside quotes, or after `#`,
    is no marker (`run web # note -- rm -rf x` once ran `rm -rf x`), and a tab beside it is a blank."""
    lex = shlex.shlex(line, posix=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words: list[str] = []
    start = 0
    while (word := lex.get_token()) not in (None, lex.eof):
        end = lex.instream.tell()
        if word == "--" and line[start:end].strip() == "--":  # as typed, not a quoted '--'
            return words, line[end:].strip()
        words.append(word)
        start = end
    return words, None


def verbs() -> list[str]:
    return list(_PARSERS)


def parse_command(line: str, names: Names) -> Command:
    """Parse one command line. Raises CommandError naming what was wrong and what is valid."""
    try:
        words, remote = _words_and_command(line)
    except ValueError as exc:
        raise CommandError(f"cannot split the line: {exc}") from None
    if not words:
        raise CommandError("empty command")
    verb, args = words[0], words[1:]
    if verb not in _PARSERS:
        close = difflib.get_close_matches(verb, list(_PARSERS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CommandError(f"unknown command {verb!r}{hint}; valid commands: {', '.join(sorted(_PARSERS))}")
    cls, fn = _PARSERS[verb]
    if remote is not None:
        args = args + ["--", remote]
    try:
        return fn(args, names)
    except CommandError as exc:
        raise CommandError(f"{exc} (usage: {cls.usage})") from None


def _app(args: list[str], names: Names, position: int = 0) -> str:
    if len(args) <= position:
        raise CommandError(f"an app name is required; apps: {_list(names.apps)}")
    app = args[position]
    if app not in names.apps:
        raise CommandError(f"unknown app {app!r}; apps: {_list(names.apps)}")
    return app


def _host(args: list[str], names: Names, position: int = 0) -> str:
    if len(args) <= position:
        raise CommandError(f"a host name is required; hosts: {_list(names.hosts)}")
    host = args[position]
    if host not in names.hosts:
        raise CommandError(f"unknown host {host!r}; hosts: {_list(names.hosts)}")
    return host


def _list(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items) if items else "(none configured)"


def _no_more(args: list[str], used: int) -> None:
    if len(args) > used:
        raise CommandError(f"unexpected {' '.join(args[used:])!r}")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


@_parser(Status)
def _parse_status(args: list[str], names: Names) -> Command:
    if not args:
        return Status()
    app = _app(args, names)
    _no_more(args, 1)
    return Status(app=app)


@_parser(Deploy)
def _parse_deploy(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    hosts: tuple[str, ...] = ()
    version = None
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag in ("--hosts", "--version") and not rest:
            raise CommandError(f"{flag} needs a value")
        if flag == "--hosts":
            hosts = tuple(h for h in rest.pop(0).split(",") if h)
            if not hosts:  # an empty $HOSTS in a script must not widen the deploy to the whole group
                raise CommandError("--hosts needs host names, comma separated")
            unknown = [h for h in hosts if h not in names.hosts]
            if unknown:
                raise CommandError(f"unknown host {unknown[0]!r}; hosts: {_list(names.hosts)}")
        elif flag == "--version":
            version = rest.pop(0)
        else:
            raise CommandError(f"unknown option {flag!r}; options: --hosts, --version")
    return Deploy(app=app, hosts=hosts, version=version)


@_parser(Start)
def _parse_start(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    _no_more(args, 1)
    return Start(app=app)


@_parser(Stop)
def _parse_stop(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    _no_more(args, 1)
    return Stop(app=app)


@_parser(Run)
def _parse_run(args: list[str], names: Names) -> Command:
    if not args or args[0] == "--":
        raise CommandError(f"a group or host is required; groups: {_list(names.groups)}")
    target = args[0]
    if target not in names.groups and target not in names.hosts:
        raise CommandError(f"unknown group or host {target!r}; groups: {_list(names.groups)}")
    if len(args) != 3 or args[1] != "--" or not args[2]:
        raise CommandError("the command goes after ' -- '")
    return Run(target=target, command=args[2])


@_parser(WaitHealthy)
def _parse_wait(args: list[str], names: Names) -> Command:
    if not args or args[0] not in ("healthy", "down"):
        raise CommandError("what to wait for: `wait healthy APP TIMEOUT` or `wait down HOST TIMEOUT`")
    if args[0] == "down":
        host = _host(args, names, 1)
        if len(args) < 3:
            raise CommandError("a timeout is required, e.g. 30s")
        timeout = _duration(args[2])
        _no_more(args, 3)
        return WaitDown(host=host, timeout=timeout)
    app = _app(args, names, 1)
    if len(args) < 3:
        raise CommandError("a timeout is required, e.g. 30s")
    timeout = _duration(args[2])
    _no_more(args, 3)
    return WaitHealthy(app=app, timeout=timeout)


@_parser(Sleep)
def _parse_sleep(args: list[str], names: Names) -> Command:
    if len(args) != 1:
        raise CommandError("one duration is required, e.g. 2s")
    return Sleep(seconds=_duration(args[0]))


@_parser(Build)
def _parse_build(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    commit = args[1] if len(args) > 1 else None
    _no_more(args, 2)
    return Build(app=app, commit=commit)


def _flags(args: list[str], spec: dict[str, bool]) -> dict[str, str | bool]:
    """Parse `--flag value` / `--switch` options; spec maps flag -> takes a value."""
    found: dict[str, str | bool] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        if flag not in spec:
            raise CommandError(f"unknown option {flag!r}; options: {', '.join(spec)}")
        if spec[flag]:
            if not rest:
                raise CommandError(f"{flag} needs a value")
            found[flag] = rest.pop(0)
        else:
            found[flag] = True
    return found


def _batch(text: str | bool | None) -> str | None:
    if text is None:
        return None
    try:
        return check_batch(str(text))
    except BatchError as exc:
        raise CommandError(str(exc)) from None


@_parser(Roll)
def _parse_roll(args: list[str], names: Names) -> Command:
    if args and args[0] == "resume":
        app = _app(args, names, 1)
        _no_more(args, 2)
        return RollResume(app=app)
    app = _app(args, names)
    f = _flags(args[1:], {"--batch": True, "--max-fail": True, "--version": True, "--on-failure": True, "--plan": False})
    max_fail = str(f.get("--max-fail", "0"))
    if not is_count(max_fail):
        raise CommandError(f"--max-fail {max_fail!r}: give a whole number of hosts")
    on_failure = str(f.get("--on-failure", "stop"))
    if on_failure not in ("stop", "rollback"):
        raise CommandError(f"--on-failure {on_failure!r}: stop or rollback")
    return Roll(app=app, batch=_batch(f.get("--batch")), max_fail=int(max_fail),
                version=str(f["--version"]) if "--version" in f else None, on_failure=on_failure,
                plan_only=bool(f.get("--plan", False)))


@_parser(Rollback)
def _parse_rollback(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    f = _flags(args[1:], {"--batch": True})
    return Rollback(app=app, batch=_batch(f.get("--batch")))


@_parser(Pause)
def _parse_pause(args: list[str], names: Names) -> Command:
    _no_more(args, 0)
    return Pause()


@_parser(Resume)
def _parse_resume(args: list[str], names: Names) -> Command:
    _no_more(args, 0)
    return Resume()


@_parser(LockStatus)
def _parse_lock(args: list[str], names: Names) -> Command:
    if not args or args[0] not in ("status", "release"):
        raise CommandError("say `lock status APP` or `lock release APP`")
    app = _app(args, names, 1)
    _no_more(args, 2)
    return LockStatus(app=app) if args[0] == "status" else LockRelease(app=app)


@_parser(History)
def _parse_history(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    f = _flags(args[1:], {"--json": False})
    return History(app=app, as_json=bool(f.get("--json", False)))


@_parser(Canary)
def _parse_canary(args: list[str], names: Names) -> Command:
    app = _app(args, names)
    if len(args) < 2 or args[1] not in CANARY_ACTIONS:
        raise CommandError(f"what to do with the canary: {', '.join(CANARY_ACTIONS)}")
    action = args[1]
    if action == "weight":
        if len(args) < 3 or not is_count(args[2]) or not 0 <= int(args[2]) <= 100:
            raise CommandError("the weight is a whole number from 0 to 100, e.g. `canary APP weight 20`")
        _no_more(args, 3)
        return Canary(app=app, action=action, weight=int(args[2]))
    if action == "deploy":
        f = _flags(args[2:], {"--version": True})
        return Canary(app=app, action=action, version=str(f["--version"]) if "--version" in f else None)
    _no_more(args, 2)
    return Canary(app=app, action=action)


@_parser(Traffic)
def _parse_traffic(args: list[str], names: Names) -> Command:
    if not args:
        return Traffic()
    app = _app(args, names)
    _no_more(args, 1)
    return Traffic(app=app)


def _group(args: list[str], names: Names, position: int = 0) -> str:
    if len(args) <= position:
        raise CommandError(f"a group name is required; groups: {_list(names.groups)}")
    group = args[position]
    if group not in names.groups:
        raise CommandError(f"unknown group {group!r}; groups: {_list(names.groups)}")
    return group


@_parser(Provision)
def _parse_provision(args: list[str], names: Names) -> Command:
    group = _group(args, names)
    _no_more(args, 1)
    return Provision(group=group)


@_parser(PlaybookRun)
def _parse_playbook(args: list[str], names: Names) -> Command:
    if not args or args[0] != "run":
        raise CommandError("say `playbook run FILE [--limit HOSTS] [--check] [--diff]`")
    if len(args) < 2 or args[1].startswith("--"):
        raise CommandError("a playbook file is required, e.g. `playbook run playbooks/site.yml`")
    f = _flags(args[2:], {"--limit": True, "--check": False, "--diff": False})
    limit = tuple(t.strip() for t in str(f.get("--limit", "")).split(",") if t.strip())
    for term in limit:
        if term not in names.hosts and term not in names.groups and term != "all":
            raise CommandError(f"--limit: {term!r} is neither a host nor a group; groups: {_list(names.groups)}")
    if "--limit" in f and not limit:
        raise CommandError("--limit needs host or group names, comma separated")
    return PlaybookRun(file=args[1], limit=limit, check=bool(f.get("--check", False)),
                       diff=bool(f.get("--diff", False)))


@_parser(Scale)
def _parse_scale(args: list[str], names: Names) -> Command:
    group = _group(args, names)
    if len(args) < 2 or not is_count(args[1]) or int(args[1]) > 1000:
        raise CommandError("the instance count is a whole number from 0 to 1000, e.g. `scale itrust 4`")
    f = _flags(args[2:], {"--yes": False})
    return Scale(group=group, count=int(args[1]), yes=bool(f.get("--yes", False)))


@_parser(Decommission)
def _parse_decommission(args: list[str], names: Names) -> Command:
    group = _group(args, names)
    f = _flags(args[1:], {"--yes": False})
    return Decommission(group=group, yes=bool(f.get("--yes", False)))


@_parser(Builds)
def _parse_builds(args: list[str], names: Names) -> Command:
    if not args:
        return Builds()
    app = _app(args, names)
    _no_more(args, 1)
    return Builds(app=app)


def _build_id(args: list[str]) -> str:
    if not args or args[0] != "build":
        raise CommandError("say `build ID`")
    if len(args) < 2:
        raise CommandError("a build id is required (see `builds`)")
    _no_more(args, 2)
    return args[1]


@_parser(CancelBuild)
def _parse_cancel(args: list[str], names: Names) -> Command:
    return CancelBuild(build_id=_build_id(args))


@_parser(LogBuild)
def _parse_log(args: list[str], names: Names) -> Command:
    return LogBuild(build_id=_build_id(args))


@_parser(Abort)
def _parse_abort(args: list[str], names: Names) -> Command:
    _no_more(args, 0)
    return Abort()


@_parser(Heartbeat)
def _parse_heartbeat(args: list[str], names: Names) -> Command:
    _no_more(args, 0)
    return Heartbeat()


@_parser(Probe)
def _parse_probe(args: list[str], names: Names) -> Command:
    host = _host(args, names)
    _no_more(args, 1)
    return Probe(host=host)


@_parser(Help)
def _parse_help(args: list[str], names: Names) -> Command:
    _no_more(args, 0)
    return Help()


def help_text() -> str:
    """One line per command (usage, then what it does); long usages put the summary on the next line."""
    width = 34
    lines = []
    for cls in command_classes():
        if len(cls.usage) <= width:
            lines.append(f"{cls.usage.ljust(width)}  {cls.summary}")
        else:
            lines.append(cls.usage)
            lines.append(f"{'':<{width}}  {cls.summary}")
    return "\n".join(lines)


def describe_fields(cmd: Command) -> dict[str, object]:
    return {f.name: getattr(cmd, f.name) for f in fields(cmd)}


__all__ = [
    "Abort", "Build", "Canary", "PlaybookRun", "Provision", "Scale", "Decommission", "Traffic", "Roll", "RollResume", "Rollback", "Pause", "Resume", "LockStatus", "LockRelease", "History", "Builds", "CancelBuild", "LogBuild", "Command", "CommandError", "Deploy", "Help", "Names", "Run", "Sleep", "Start", "Status",
    "Stop", "WaitHealthy", "WaitDown", "Heartbeat", "Probe", "command_classes", "format_duration", "help_text", "parse_command", "verbs",
]


def _app_and_version(args: list[str], names: Names) -> tuple[str, str | None]:
    app = _app(args, names)
    f = _flags(args[1:], {"--version": True})
    version = f.get("--version")
    return app, str(version) if version is not None else None


@_parser(Manifests)
def _parse_manifests(args: list[str], names: Names) -> Command:
    app, version = _app_and_version(args, names)
    return Manifests(app=app, version=version)


@_parser(Apply)
def _parse_apply(args: list[str], names: Names) -> Command:
    app, version = _app_and_version(args, names)
    return Apply(app=app, version=version)
