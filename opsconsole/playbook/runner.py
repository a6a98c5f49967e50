"""Running a loaded playbook over hosts: plays, serial batches, tasks, handlers; every step an event.

A batch's hosts run in parallel, each host's tasks in order. A failed host
stops its own play; a batch with a failed host stops the playbook, so with
`serial: 1` a bad deploy stops at the first host and the rest are not touched.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

from opsconsole.events import EventBus, Message, OutputLine, PlayFinished, PlayStarted, TaskFinished, TaskStarted
from opsconsole.hosts import Host
from opsconsole.playbook.checking import DIFFABLE, check_module, diff_text
from opsconsole.playbook.fallback import run_play
from opsconsole.playbook.model import Play, Playbook, PlaybookResult, Task
from opsconsole.playbook.modules import ModuleContext, Outcome, run_module, truthy
from opsconsole.playbook.templating import LOOKED_UP, Templar, TemplateFailure
from opsconsole.redact import NO_LOG
from opsconsole.transport.base import Transport
from opsconsole.transport.pool import SshOptions

OUTPUT_LINES_IN_MESSAGE = 10


def select_hosts(pattern: str, hosts: Sequence[Host]) -> list[Host]:
    """The hosts a play's `hosts:` names, in the given order: `all`, groups and host names, comma (or colon) separated."""
    terms = {t.strip() for t in pattern.replace(":", ",").split(",") if t.strip()}
    if "all" in terms:
        return list(hosts)
    return [h for h in hosts if h.name in terms or h.group in terms]


def batches(hosts: list[Host], serial: int | str | None) -> list[list[Host]]:
    """Split hosts by `serial`: a count, or a percentage of the play's hosts (at least one), like Ansible."""
    if not hosts:
        return []
    if serial is None:
        size = len(hosts)
    elif isinstance(serial, str) and serial.endswith("%"):
        size = max(1, math.floor(len(hosts) * int(serial[:-1]) / 100))
    else:
        size = max(1, int(serial))
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


@dataclass(frozen=True)
class _Selection:
    """How a run was asked for: --tags/--skip-tags, --check, --diff."""

    tags: frozenset[str] | None = None
    skip_tags: frozenset[str] = frozenset()
    check: bool = False
    diff: bool = False


@dataclass
class _HostRun:
    """One host's progress through one play."""

    host: Host
    registered: dict[str, Any] = field(default_factory=dict)
    notified: set[str] = field(default_factory=set)
    failure: str | None = None
    tags: frozenset[str] | None = None  # --tags: run only these (None: all)
    skip_tags: frozenset[str] = frozenset()  # --skip-tags
    check: bool = False  # --check: tell what would change, change nothing
    diff: bool = False  # --diff: show before/after of the files a task changes (or would)
    changed_tasks: list[str] = field(default_factory=list)  # titles of the tasks that changed (or would)
    check_skipped: list[str] = field(default_factory=list)  # tasks check mode could not tell about


class PlaybookRunner:
    def __init__(self, bus: EventBus, transport_for: Callable[[Host], Transport], *,
                 secrets: Mapping[str, str] = {}, ssh: SshOptions | None = None) -> None:
        self.bus = bus
        self.transport_for = transport_for
        self.ssh = ssh  # how ansible-playbook reaches SSH hosts, for plays that run with it
        self.secrets = dict(secrets)  # `{{ secrets.NAME }}`; the bus's redactor masks the values

    async def run(
        self,
        playbook: Playbook,
        hosts: Sequence[Host],
        *,
        extra_vars: Mapping[str, Any] = {},
        limit: Collection[str] | None = None,
        tags: Collection[str] | None = None,
        skip_tags: Collection[str] = (),
        check: bool = False,
        diff: bool = False,
    ) -> PlaybookResult:
        """Run every play over the hosts it selects (narrowed to `limit` if given).

        Cancelling the caller's task cancels the hosts now running (their commands are
        killed by the transport) and starts nothing more. `tags`/`skip_tags` select tasks as
        ansible-playbook's --tags/--skip-tags do (with `always`, `never`, `tagged`, `untagged`, `all`).
        `check`/`diff` are ansible-playbook's --check/--diff: with check, nothing changes on a host and the
        result's `changed_tasks` says what would.
        """
        selection = _Selection(frozenset(tags) if tags is not None else None, frozenset(skip_tags), check, diff)
        changed_tasks: dict[str, list[str]] = {}
        check_skipped: dict[str, list[str]] = {}
        everyone = list(hosts)
        candidates = [h for h in everyone if limit is None or h.name in limit]
        status: dict[str, str] = {}
        failures: dict[str, str] = {}
        groups: dict[str, list[str]] = {}
        for h in everyone:
            groups.setdefault(h.group, []).append(h.name)
        groups["all"] = [h.name for h in everyone]
        stopped = False
        for play in playbook.plays:
            selected = select_hosts(play.hosts, candidates)
            for h in selected:
                status.setdefault(h.name, "skipped")
            if stopped:
                continue
            if not selected:
                self.bus.emit(Message(text=f"{playbook.name}: play {play.name!r}: no hosts match {play.hosts!r}",
                                      level="warning"))
                continue
            failed = await self._play(playbook, play, selected, groups, extra_vars, status, failures, selection,
                                      changed_tasks, check_skipped)
            stopped = failed
        return PlaybookResult(ok=not failures and all(s != "failed" for s in status.values()),
                              host_status=status, failures=failures, changed_tasks=changed_tasks,
                              check_skipped=check_skipped)

    async def _play(self, playbook: Playbook, play: Play, selected: list[Host], groups: dict[str, list[str]],
                    extra_vars: Mapping[str, Any], status: dict[str, str], failures: dict[str, str],
                    selection: "_Selection", changed_tasks: dict[str, list[str]],
                    check_skipped: dict[str, list[str]]) -> bool:
        """Run one play; True if a host failed (which stops the playbook)."""
        title = _best_effort(play.name, extra_vars)
        self.bus.emit(PlayStarted(playbook=playbook.name, play=title, hosts=tuple(h.name for h in selected)))
        ok: list[str] = []
        failed: list[str] = []
        running: list[str] = []
        pending = batches(selected, play.serial)
        if play.runner == "ansible":
            self.bus.emit(Message(text=f"{playbook.name}: {play.why}"))
        try:
            while pending and not failed:
                batch = pending.pop(0)
                running = [h.name for h in batch]
                if play.runner == "ansible":
                    runs = await self._ansible(playbook, play, batch, extra_vars, selection)
                else:
                    runs = await asyncio.gather(*(self._host(playbook, play, h, groups, extra_vars, selection)
                                                  for h in batch))
                running = []
                for run in runs:
                    if run.changed_tasks:
                        changed_tasks.setdefault(run.host.name, []).extend(run.changed_tasks)
                    if run.check_skipped:
                        check_skipped.setdefault(run.host.name, []).extend(run.check_skipped)
                    if run.failure is None:
                        ok.append(run.host.name)
                        if status.get(run.host.name) != "failed":
                            status[run.host.name] = "ok"
                    else:
                        failed.append(run.host.name)
                        status[run.host.name] = "failed"
                        failures.setdefault(run.host.name, run.failure)
        finally:
            # Also on cancel: hosts caught mid-play count as failed, later batches as skipped (untouched).
            failed_now = failed + running
            skipped = [h.name for b in pending for h in b]
            self.bus.emit(PlayFinished(playbook=playbook.name, play=title, ok_hosts=tuple(ok),
                                       failed_hosts=tuple(failed_now), skipped_hosts=tuple(skipped)))
        return bool(failed)

    async def _ansible(self, playbook: Playbook, play: Play, batch: list[Host],
                       extra_vars: Mapping[str, Any], selection: "_Selection") -> list[_HostRun]:
        """One batch of a play that runs with ansible-playbook; its events reach the bus as the native ones do."""
        def host_vars(host: Host) -> dict[str, Any]:
            return {"port": host.port} if host.port is not None else {}

        # What changed (or, under --check, would) is told by ansible-playbook's task events on the bus.
        names = {h.name for h in batch}
        changed: dict[str, list[str]] = {}
        skipped: dict[str, list[str]] = {}

        def told(event: object) -> None:
            if isinstance(event, TaskFinished) and event.host in names:
                if event.status == "changed":
                    changed.setdefault(event.host, []).append(event.task)
                elif event.status == "skipped" and selection.check and "check mode" in event.message:
                    skipped.setdefault(event.host, []).append(event.task)

        stop_listening = self.bus.subscribe(told)
        try:
            status, failures = await run_play(self.bus, playbook.directory.absolute(), play.source, batch,
                                              self.transport_for, self.ssh, {**extra_vars, "secrets": self.secrets},
                                              host_vars, ("--check",) * selection.check + ("--diff",) * selection.diff)
        except (OSError, RuntimeError) as exc:  # no ansible-playbook, an unwritable playbook directory
            why = f"{play.why}, which could not start: {exc}"
            status, failures = {h.name: "failed" for h in batch}, {h.name: why for h in batch}
        finally:
            stop_listening()
        return [_HostRun(h, failure=(failures.get(h.name) or f"{h.name}: failed under ansible-playbook")
                         if status.get(h.name) == "failed" else None, changed_tasks=changed.get(h.name, []),
                         check_skipped=skipped.get(h.name, [])) for h in batch]

    async def _host(self, playbook: Playbook, play: Play, host: Host, groups: dict[str, list[str]],
                    extra_vars: Mapping[str, Any], selection: "_Selection") -> _HostRun:
        run = _HostRun(host, tags=selection.tags, skip_tags=selection.skip_tags, check=selection.check,
                       diff=selection.diff)
        try:
            transport = self.transport_for(host)
        except Exception as exc:  # noqa: BLE001 - any refusal to reach the host fails that host only
            run.failure = f"{host.name}: no transport: {exc}"
            self.bus.emit(Message(text=run.failure, level="error", host=host.name))
            return run
        builtins: dict[str, Any] = {
            "inventory_hostname": host.name, "ansible_host": host.address, "group_names": [host.group],
            "groups": groups, "host_root": transport.root, "playbook_dir": str(playbook.directory.absolute()),
            "secrets": self.secrets,  # a raw layer: a password holding `{{` stays a password
            "ansible_check_mode": run.check, "ansible_diff_mode": run.diff,
        }
        if host.port is not None:
            builtins["port"] = host.port
        # Precedence, low to high: app+group vars (merged into Host.vars by the caller), built-ins,
        # play vars, task vars, registered results, extra vars.
        # Roles add their layers around these, by Ansible's precedence (see Play and Task).
        base = [(host.vars, True), (builtins, False), (play.vars, True)]

        def templar(task: Task, item: Any = _NO_ITEM) -> Templar:
            layers = [(play.role_defaults, True), (task.role_defaults, True), *base, (play.role_exports, True),
                      (task.role_vars, True), (task.vars, True), (run.registered, False), (task.role_params, True),
                      (extra_vars, True)]
            if item is not _NO_ITEM:
                layers.append(({"item": item}, False))
            return Templar(layers)

        if not await self._tasks(playbook, play, play.tasks, run, transport, templar):
            return run
        for handler in play.handlers:  # definition order, each at most once; tags do not select handlers
            if handler.handler_key in run.notified:
                if not await self._task(playbook, play, handler, run, transport, templar):
                    return run
        return run

    async def _tasks(self, playbook: Playbook, play: Play, tasks: Sequence[Task], run: _HostRun,
                     transport: Transport, templar: Callable[..., Templar]) -> bool:
        """Run tasks in order on one host; False when the host must stop (a failure not rescued)."""
        for task in tasks:
            if task.module == "block":
                if not await self._block(playbook, play, task, run, transport, templar):
                    return False
            elif _selected(task.tags, run.tags, run.skip_tags):
                if not await self._task(playbook, play, task, run, transport, templar):
                    return False
        return True

    async def _block(self, playbook: Playbook, play: Play, block: Task, run: _HostRun, transport: Transport,
                     templar: Callable[..., Templar]) -> bool:
        """block, then rescue if a task of it failed (which clears the failure, as in Ansible), then always."""
        ok = await self._tasks(playbook, play, block.block, run, transport, templar)
        if not ok and block.rescue:
            run.registered["ansible_failed_result"] = {"failed": True, "msg": run.failure}
            run.failure = None
            ok = await self._tasks(playbook, play, block.rescue, run, transport, templar)
        if block.always:
            failure, run.failure = run.failure, None
            always_ok = await self._tasks(playbook, play, block.always, run, transport, templar)
            run.failure = run.failure if not always_ok else failure
            ok = ok and always_ok
        return ok

    async def _task(self, playbook: Playbook, play: Play, task: Task, run: _HostRun, transport: Transport,
                    templar: Callable[..., Templar]) -> bool:
        """Run one task on one host and report it; False if the host must stop."""
        # A no_log task's lookup('env', …) values are masked everywhere from the moment they are read.
        looked_up = LOOKED_UP.set([] if task.no_log else None)
        try:
            return await self._task_hiding(playbook, play, task, run, transport, templar)
        finally:
            self._hide_looked_up()
            LOOKED_UP.reset(looked_up)

    def _hide_looked_up(self) -> None:
        values = LOOKED_UP.get()
        if values:
            self.bus.redactor.add(values)

    async def _task_hiding(self, playbook: Playbook, play: Play, task: Task, run: _HostRun, transport: Transport,
                           templar: Callable[..., Templar]) -> bool:
        host = run.host
        started = time.monotonic()
        name = _task_title(task, templar(task))
        self._hide_looked_up()
        self.bus.emit(TaskStarted(host=host.name, task=name))

        def finish(status: str, rc: int | None = None, message: str = "", service: str = "") -> None:
            if task.no_log and status in ("ok", "changed"):
                message = NO_LOG  # a failure's message is built without the command and output already
            self.bus.emit(TaskFinished(host=host.name, task=name, status=status, rc=rc, message=message,
                                       duration=time.monotonic() - started, started=service))

        def on_line(line: str, stream: str) -> None:
            if not task.no_log:
                self.bus.emit(OutputLine(host=host.name, line=line, stream=stream, source=name))

        # A task's own check_mode/diff win over the run's, as in Ansible (`check_mode: false` probes for real).
        ctx = ModuleContext(host=host, transport=transport, templar=templar(task), playbook_dir=playbook.directory,
                            on_line=on_line, become=play.become if task.become is None else task.become,
                            timeout=task.timeout, role_dir=Path(task.role_dir) if task.role_dir else None,
                            check=run.check if task.check_mode is None else task.check_mode,
                            diff=run.diff if task.diff is None else task.diff)
        try:
            items = self._items(task, ctx.templar)
            outcomes: list[tuple[Any, Outcome]] = []
            for item in items:
                t = templar(task) if item is _NO_ITEM else templar(task, item)
                if not all(truthy(t.evaluate(c) if isinstance(c, str) else c) for c in task.when):
                    continue
                ctx.templar = t
                outcome = await self._outcome(task, ctx, t, run)
                outcomes.append((item, outcome))
                if outcome.failed:
                    break
        except asyncio.CancelledError:
            # Not "failed": nothing went wrong on the host, the operator stopped the work (abort, quit).
            finish("cancelled", message=f"task {name!r} on {host.name}: cancelled; its commands were killed")
            raise
        except Exception as exc:  # noqa: BLE001 - any error fails this task on this host, never the console
            self._hide_looked_up()
            message = self.bus.redactor.text(f"task {name!r} failed on {host.name}: {NO_LOG if task.no_log else exc}")
            run.registered.update(_registration(task, [(_NO_ITEM, Outcome(failed=True, message=str(exc)))]))
            finish("failed", message=message)
            return self._after_failure(task, run, message)
        if not outcomes:
            if task.register:
                run.registered[task.register] = {"rc": None, "stdout": "", "stdout_lines": [], "changed": False,
                                                 "failed": False, "skipped": True}
            finish("skipped", message="condition false" if task.when else "empty loop")
            return True
        run.registered.update(_registration(task, outcomes))
        for _, outcome in outcomes:
            run.registered.update(outcome.facts)  # set_fact: rendered values, used as they are
        last = outcomes[-1][1]
        if all(o.result.get("skipped") for _, o in outcomes):  # check mode could not tell (command, raw, uri)
            run.check_skipped.append(name)
            finish("skipped", message=f"skipped in check mode: {last.message}")
            return True
        changed = any(o.changed for _, o in outcomes)
        if ctx.diff and not task.no_log:
            for _, outcome in outcomes:
                if outcome.changed and outcome.result.get("diff"):
                    for line in diff_text(outcome.result["diff"]).splitlines():
                        self.bus.emit(OutputLine(host=host.name, line=line, stream="diff", source=name))
        if any(o.failed for _, o in outcomes):
            message = self.bus.redactor.text(_failure_message(name, host.name, last, task.no_log))
            finish("failed", rc=last.rc, message=message)
            return self._after_failure(task, run, message)
        if changed:
            run.notified.update(task.notify)
            run.changed_tasks.append(name)
        finish("changed" if changed else "ok", rc=last.rc, message=last.message,
               service=next((o.started for _, o in outcomes if o.started), ""))
        return True

    def _after_failure(self, task: Task, run: _HostRun, message: str) -> bool:
        if task.ignore_errors:
            return True
        run.failure = message
        return False

    def _items(self, task: Task, templar: Templar) -> list[Any]:
        if task.loop is None:
            return [_NO_ITEM]
        items = templar.render(task.loop)
        if not isinstance(items, list):
            raise TemplateFailure(f"loop must give a list, got {type(items).__name__}: {items!r}")
        if task.flatten_loop:  # with_items flattens one level: [a, [b, c]] is a, b, c
            items = [x for item in items for x in (item if isinstance(item, list) else [item])]
        return items

    async def _outcome(self, task: Task, ctx: ModuleContext, templar: Templar, run: _HostRun) -> Outcome:
        args = templar.render(task.args)
        self._hide_looked_up()
        if ctx.check:
            outcome = await check_module(task.module, args, ctx)
        elif ctx.diff and task.module in DIFFABLE:  # the before/after, taken before the module writes
            diff = (await check_module(task.module, args, ctx)).result.get("diff")
            outcome = await run_module(task.module, args, ctx)
            if diff:
                outcome.result["diff"] = diff
        else:
            outcome = await run_module(task.module, args, ctx)
        if outcome.result.get("skipped"):
            return outcome  # as Ansible: changed_when/failed_when are not asked of a skipped result
        if task.changed_when is not None or task.failed_when is not None:
            # The conditions see the result under the register name, as in Ansible.
            result = _registration(task, [(_NO_ITEM, outcome)]).get(task.register or "", {})
            layered = templar.with_layer({task.register: result} if task.register else {})
            if task.changed_when is not None:
                outcome.changed = truthy(_condition(layered, task.changed_when))
            if task.failed_when is not None:
                outcome.failed = truthy(_condition(layered, task.failed_when))
                if outcome.failed and not outcome.message:
                    outcome.message = f"failed_when: {task.failed_when}"
        return outcome


_NO_ITEM = object()


def _condition(templar: Templar, value: Any) -> Any:
    return templar.evaluate(value) if isinstance(value, str) else value


def _selected(task_tags: tuple[str, ...], tags: frozenset[str] | None, skip: frozenset[str]) -> bool:
    """Whether --tags/--skip-tags select a task with these tags, by ansible-playbook's rules."""
    own = set(task_tags)
    if own & skip or ("tagged" in skip and own) or ("untagged" in skip and not own):
        return False
    if tags is None or ("all" in tags and "never" not in own):
        return "never" not in own or bool(tags and own & tags - {"all"})
    if "always" in own and "always" not in skip:
        return True
    return bool(own & tags) or ("tagged" in tags and bool(own)) or ("untagged" in tags and not own)


def _registration(task: Task, outcomes: list[tuple[Any, Outcome]]) -> dict[str, Any]:
    """What `register:` stores: {rc, stdout, stdout_lines, changed, failed, skipped} (+ results for a loop)."""
    if not task.register:
        return {}

    def one(o: Outcome) -> dict[str, Any]:
        stdout = o.stdout.rstrip("\r\n")  # as Ansible: `{{ r.stdout }}` has no trailing newline
        return {"rc": o.rc, "stdout": stdout, "stdout_lines": stdout.splitlines(), "changed": o.changed,
                "failed": o.failed, "skipped": False, "msg": o.message, **o.result}

    if task.loop is None:
        return {task.register: one(outcomes[-1][1])}
    results = [{**one(o), "item": item} for item, o in outcomes]
    last = outcomes[-1][1]
    return {task.register: {**one(last), "changed": any(r["changed"] for r in results),
                            "failed": any(r["failed"] for r in results), "results": results}}


def _failure_message(task: str, host: str, outcome: Outcome, no_log: bool = False) -> str:
    """Everything an operator needs in one place: task, host, command, exit code, last output
    (for a no_log task: task, host and exit code only)."""
    if no_log:
        code = f"exit code {outcome.rc} " if outcome.rc is not None else ""
        return f"task {task!r} failed on {host}: {code}{NO_LOG}"
    why = f"exit code {outcome.rc}" if outcome.rc is not None else (outcome.message or "failed")
    if outcome.rc is not None and outcome.message and not outcome.message.startswith("exit code"):
        why += f" ({outcome.message})"
    lines = outcome.tail[-OUTPUT_LINES_IN_MESSAGE:]
    text = f"task {task!r} failed on {host}: `{outcome.command}`: {why}"
    if lines:
        text += "\n" + "\n".join(f"  | {line}" for line in lines)
    return text


def _task_title(task: Task, templar: Templar) -> str:
    try:
        return str(templar.render_text(task.name))
    except TemplateFailure:
        return task.name  # a name is for humans: an undefined variable in it must not fail the task


def _best_effort(text: str, variables: Mapping[str, Any]) -> str:
    try:
        return Templar([(variables, True)]).render_text(text)
    except TemplateFailure:
        return text


__all__ = ["PlaybookRunner", "batches", "select_hosts"]
