"""The console: a Textual app over the engine. Commands in, events out, nothing else.

Every action, keyed or typed, becomes a command line in the `--script`
grammar, is parsed by the engine and run by `engine.execute` in a worker, so
it is journaled exactly like a headless run and the UI never waits on it.
Events arrive on the bus from inside the engine's work; they are only queued
there, and a timer hands them to the panes in batches.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import TYPE_CHECKING, Iterable

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.containers import Container
from textual.screen import Screen
from textual.widgets import DataTable, Footer
from textual.worker import Worker, WorkerState

from opsconsole.engine.commands import Command, CommandError, command_classes, verbs
from opsconsole.events import CommandFinished, Event
from opsconsole.ui import themes
from opsconsole.ui.bindings import KEYS, MUTATING_ACTIONS, bindings, unknown_ids
from opsconsole.ui.builds import BuildQueuePane
from opsconsole.ui.canary import CanaryPane
from opsconsole.ui.command_line import CommandLine
from opsconsole.ui.confirm import ConfirmScreen
from opsconsole.ui.describe import DescribeScreen, build_description
from opsconsole.ui.event_log import EventLogScreen, event_line
from opsconsole.ui.feed import EventFeed
from opsconsole.ui.fleet import FleetPane
from opsconsole.ui.heartbeat import HeartbeatPane
from opsconsole.ui.help import HelpScreen
from opsconsole.ui.history import HostHistory
from opsconsole.ui.host_detail import HostDetailScreen
from opsconsole.ui.log_view import LogLine
from opsconsole.ui.quitting import exit_summary, quit_question, rollout_apps
from opsconsole.ui.result_view import ResultScreen
from opsconsole.ui.rollout_timeline import RolloutTimelines
from opsconsole.ui.selection import SelectionChanged
from opsconsole.ui.status_line import StatusLine

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine

PANES = ("fleet", "builds", "heartbeat", "canary")
# App keys that act on the panes' selections: off while another screen is on top (help and quit stay on).
PANE_ACTIONS = frozenset(s.action.split("(")[0] for s in KEYS if s.scope == "app" and s.id not in ("help", "quit"))
FLUSH_SECONDS = 0.05  # events reach the screen at most this late; also bounds redraws to 20/s
STOPPED = ("aborted", "interrupted")  # how a command stopped by `abort` or a quit ends
GC_YOUNG_OBJECTS = 10_000  # the console's young-generation GC threshold (see on_mount)
EVENT_LINES = 5000  # the event log (`l`) keeps this many lines, a ring: memory stays flat under any flood
# The dialog's action button; any other verb is title-cased.
ACTION_LABELS = {"roll resume": "Resume", "lock release": "Release", "cancel": "Cancel build"}


class OpsConsoleApp(App[int]):
    CSS_PATH = themes.css_paths()
    BINDINGS = bindings("app")
    TITLE = "opsconsole"

    def __init__(self, engine: "Engine", *, flush_seconds: float = FLUSH_SECONDS,
                 freeze_startup: bool = False) -> None:
        super().__init__()
        self.engine = engine
        self.freeze_startup = freeze_startup
        self.flush_seconds = flush_seconds
        self.feed = EventFeed(engine.bus)
        self.hosts_seen = HostHistory()
        self.rollouts = RolloutTimelines()
        self.event_lines: deque[LogLine] = deque(maxlen=EVENT_LINES)
        self.theme_short = themes.choose(engine.config.theme)
        # Not `_closed`: that is Textual's own message-pump flag, and setting it made the app skip its own close
        # (after a quit that stopped a rollout the console hung on a blank screen).
        self._engine_closed = False
        self.log_wrap = False  # the event log's and result views' wrap: the operator's last choice sticks
        self._last_pane = "fleet"  # the pane whose selection the keys act on while a line or dialog has focus
        self.exit_summary: list[str] = []  # what quitting stopped and left; printed once the terminal is back
        self._footer_shown: tuple[object, ...] | None = None  # the keys the main screen's footer was last given
        self.set_keymap(engine.config.keymap)

    # -- layout ------------------------------------------------------------
    def compose(self) -> ComposeResult:
        config = self.engine.config
        with Container(id="panes"):
            yield FleetPane(self.engine, id="fleet")
            yield BuildQueuePane(self.engine, id="builds")
            yield HeartbeatPane(config.state_dir / "logs" / "heartbeat.log", id="heartbeat")
            yield CanaryPane(self.engine, id="canary")
        yield StatusLine(config.readonly, id="status")
        yield CommandLine(self.engine.names, verbs(), self._journal_history(), id="command-line",
                          mask=self.engine.masked, builds=self._build_ids)
        # No "^p palette" here: at 80 columns it pushed `q quit` off the line; the help screen (?) lists ctrl+p.
        yield Footer(compact=True, show_command_palette=False)

    def _build_ids(self) -> list[str]:
        return [record.build_id for record in reversed(self.engine.builds.records())][:100]

    def _journal_history(self) -> list[str]:
        return [e["command"] for e in self.engine.journal.entries() if e.get("kind") == "command.start"][-500:]

    async def on_mount(self) -> None:
        for theme in themes.TEXTUAL_THEMES.values():
            self.register_theme(theme)
        self.theme_changed_signal.subscribe(self, lambda _theme: self._on_theme_changed())
        self.theme = themes.TEXTUAL_THEMES[self.theme_short].name
        self._sync_theme_class()
        if unknown := unknown_ids(self.engine.config.keymap):
            self.notify(f"keymap: unknown binding id(s) {', '.join(unknown)}; ids are listed on the help screen (?)",
                        severity="warning", timeout=10)
        for notice in self.engine.startup_notices():
            self.notify(notice, title="left unfinished", severity="warning", timeout=30)
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_published)
        self.set_interval(self.flush_seconds, self.flush)
        self.pane("fleet").focus_main()
        self._show_scope()
        if self.freeze_startup:
            # Everything built so far (Textual, the DOM, the config) lives as long as the process; moving it
            # out of the collector's sight keeps full collections short while floods churn through the rings.
            # Safe: a frozen object is still freed by reference counting when dropped; only a cycle among
            # start-up objects would stay, a fixed amount, and whatever is made after the freeze is collected.
            self.call_after_refresh(gc.freeze)
            # Young collections after this many new objects, not 700: in bench_ui's 200 presses under the flood
            # the default ran ~6,700 young, ~600 middle (10 ms each) and, as they promoted short-lived render
            # objects, ~55 full collections (~100 ms each, up to 250): stalls a key press landed behind (issue
            # 18). Fewer, larger young collections let those objects die by reference counting first (80 young,
            # 7 middle, no full one); a cycle still goes at the next young collection, so memory stays flat.
            gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
        # What always runs (heartbeat, pollers, proxy watch) was chosen by whoever opened the engine.
        await self.engine.start()

    def pane(self, name: str) -> FleetPane | BuildQueuePane | HeartbeatPane | CanaryPane:
        return self.query_one(f"#{name}")  # type: ignore[return-value]

    @property
    def monochrome(self) -> bool:
        return self.no_color or self.theme_short == "mono"

    def _sync_theme_class(self) -> None:
        for name in themes.NAMES:
            self.set_class(name == self.theme_short, f"-theme-{name}")

    def _on_theme_changed(self) -> None:
        # Cells and log lines carry colours resolved from the theme; re-render them.
        self.theme_short = themes.short_name(self.theme) or self.theme_short
        self._sync_theme_class()
        fleet = self.pane("fleet")
        assert isinstance(fleet, FleetPane)
        fleet.rebuild()
        self.query_one(StatusLine).redraw()
        for pane in ("builds", "heartbeat"):
            log = self.pane(pane).log  # type: ignore[union-attr]
            log.rebuild()
        self.pane("canary").render_split()  # type: ignore[union-attr]

    # -- events ------------------------------------------------------------
    def flush(self) -> None:
        """Hand the queued events to every pane at once: one redraw per batch, however many events."""
        batch = self.feed.drain()
        if not batch:
            return
        try:
            panes, status = [self.pane(name) for name in PANES], self.query_one(StatusLine)
        except NoMatches:
            return  # the app is closing and its panes are gone; a last tick of the timer has nothing to draw
        with self.batch_update():
            for pane in panes:
                pane.on_events(batch)
            status.on_events(batch)
            self.hosts_seen.add(batch)
            self.rollouts.add(batch)
            lines = [line for line in map(event_line, batch) if line is not None]
            self.event_lines.extend(lines)
            self._to_screen(self.screen, batch, lines)
            for event in batch:
                # A stop the operator asked for is no error to toast over the panes: the status line says it.
                if isinstance(event, CommandFinished) and not event.ok and event.message not in STOPPED:
                    self.notify(event.message or "failed", title=f"✘ {event.text}", severity="error", timeout=8)

    @staticmethod
    def _to_screen(screen: Screen, batch: list[Event], lines: list[LogLine]) -> None:
        """The batch for the screen on top, if it shows events. A screen being opened or closed (Escape just
        pressed) may be on top with its widgets not there yet, or gone: it has nothing to draw, and the
        lines are kept in event_lines for its next opening. (The console died of NoMatches here.)"""
        try:
            if isinstance(screen, HostDetailScreen):
                screen.on_events(batch)
            elif isinstance(screen, EventLogScreen):
                screen.add(lines)
        except NoMatches:
            pass

    # -- running commands --------------------------------------------------
    def submit(self, line: str) -> None:
        """Parse, check, confirm if destructive, then execute `line` — without ever blocking the UI."""
        self.run_worker(self._submit(line), group="submit", exit_on_error=False)

    async def _submit(self, line: str, *, confirm: bool = True) -> None:
        try:
            command = self.engine.parse(line)
        except CommandError as exc:
            shown = self.engine.masked(line)  # learned first, so the error quoting it is masked too
            why = self.engine.masked(str(exc))
            self.notify(why, title=f"cannot run `{shown}`", severity="error", timeout=10)
            self.query_one(StatusLine).say(f"✘ {shown}: {why}", "bad")
            return
        if self.engine.refusal(command) is not None:  # the engine refuses it too; say it the console's way
            self.notify(f"`{command.text()}` changes something; the console is read-only",
                        title="refused", severity="warning")
            return
        if command.mutating and command.confirm and confirm:
            what = await self.engine.preview(command)
            label = ACTION_LABELS.get(command.verb, command.verb.title())
            if not await self.push_screen_wait(ConfirmScreen(what, label, f"{command.verb}?")):
                self.query_one(StatusLine).say(f"cancelled: {self.engine.masked(command.text())}", "dim")
                return
        self.start(command)

    def start(self, command: Command) -> Worker[object]:
        if command.reports:
            return self.run_worker(self._report(command), group="commands", name=command.text(), exit_on_error=False)
        return self.run_worker(self.engine.execute(command), group="commands", name=command.text(),
                               exit_on_error=False)

    async def _report(self, command: Command) -> None:
        """A command whose output is the point: run it with its output in a result view of its own."""
        view = ResultScreen(command, wrap=self.log_wrap)
        await self.push_screen(view)
        started = time.monotonic()
        outcome = await self.engine.execute(command, output=view.take)
        view.finished(outcome, time.monotonic() - started)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        # engine.execute never raises but on cancel; an error here is a bug, so show it rather than die.
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.error!r}", title=f"internal error in {event.worker.name}", severity="error",
                        timeout=20)

    def scope(self) -> tuple[str | None, str]:
        """The app an app key acts on, and whose selection chose it: the focused pane's, else the fleet's."""
        # The command line or a dialog has the focus for a moment: the pane that had it still sets the scope.
        pane = self._focused_pane() or self._last_pane
        if pane == "canary":
            chosen = self.pane("canary").selected  # type: ignore[union-attr]
            if chosen:
                return chosen, "canary pane"
        if pane == "builds":
            build = self.pane("builds").selected_build()  # type: ignore[union-attr]
            app = self.pane("builds").selected_app()  # type: ignore[union-attr]
            if app:
                return app, f"build {build}"
        host = self.pane("fleet").selected_host()  # type: ignore[union-attr]
        group = self.pane("fleet").selected_group()  # type: ignore[union-attr]
        if host is None and group is not None:  # a group's summary row in a big fleet
            for name, app_config in self.engine.config.apps.items():
                if app_config.group == group:
                    return name, f"group {group}"
        if host is not None:
            group = self.engine.views[host].host.group
            apps = self.engine.config.apps
            for name, app_config in apps.items():
                if app_config.group == group:
                    return name, host
            for name, app_config in apps.items():  # a canary host belongs to the app whose canary pool it is in
                if any(h.name == host for h in self.engine.app_hosts(app_config)):
                    return name, host
        return next(iter(self.engine.config.apps), None), "first app"

    def selected_app(self) -> str | None:
        return self.scope()[0]

    def _show_scope(self) -> None:
        if self._engine_closed or len(self.screen_stack) != 1:  # only the main screen has panes (and no stack at exit)
            return
        app, where = self.scope()
        self.query_one(StatusLine).set_scope(app, where)

    def on_descendant_focus(self) -> None:
        if len(self.screen_stack) == 1 and (pane := self._focused_pane()) is not None:
            self._last_pane = pane
        self._show_scope()
        self._refresh_footer()

    @on(DataTable.RowHighlighted)
    @on(SelectionChanged)
    def _selection_moved(self) -> None:
        self._show_scope()
        self._refresh_footer()  # e.g. `d` on a fleet group row: nothing to describe

    def _refresh_footer(self) -> None:
        """The footer follows the focused pane and its selection (see check_action)."""
        # Only when what it would show differs from what it shows: a refresh makes the Footer re-create its
        # keys, and the layout pass that follows repaints the screen; on every cursor move that was a frame
        # of 40+ ms under an event flood, which the next key press waited behind (issue 18).
        if not self._engine_closed and len(self.screen_stack) == 1:  # not while closing: no screen is left
            if _footer_keys(self.screen) != self._footer_shown:
                self.refresh_bindings()

    def _bindings_published(self, screen: Screen[object]) -> None:
        # Every refresh of the main screen's bindings (ours, and Textual's on focus changes) passes here.
        self._footer_shown = _footer_keys(screen)

    def _with_app(self, template: str) -> None:
        app = self.selected_app()
        if app is None:
            self.notify("no app is configured", severity="warning")
            return
        self.submit(template.format(app=app))

    # -- actions (every key of bindings.KEYS with scope "app") ------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.engine.config.readonly and action in MUTATING_ACTIONS:
            return False  # hidden from the footer and never run
        if action in PANE_ACTIONS and not self._on_main_screen():
            return False  # a screen of its own (event log, host detail) owns its keys: `r` there is not roll
        if len(self.screen_stack) == 1 and not self._engine_closed:
            # The footer offers the keys that act on the focused pane: hidden here, a key that would do nothing.
            pane = self._focused_pane() or self._last_pane
            if action == "filter" and not hasattr(self.pane(pane), "open_filter"):
                return False
            if action == "describe" and self.selection() is None:
                return False
        return True

    def _on_main_screen(self) -> bool:
        # The palette runs its chosen action while it is still on the stack; that action is the operator's choice.
        return len(self.screen_stack) == 1 or isinstance(self.screen, CommandPalette)

    def action_roll(self) -> None:
        self._with_app("roll {app}")

    def action_build(self) -> None:
        self._with_app("build {app}")

    def action_abort(self) -> None:
        if not any(c.abortable for c in self.engine.running()):
            self.query_one(StatusLine).say("nothing to abort: no deploy or rollout is running", "dim")
            return
        self.submit("abort")

    def action_pause(self) -> None:
        self.submit("resume" if self.engine.paused() else "pause")

    def _canary_app(self) -> str | None:
        """The selected app if it has a canary; else say which pane selects one, and run nothing."""
        app = self.selected_app()
        if app is None or self.engine.has_canary(app):
            return app
        text = f"app {app} has no canary: the proxy does not front it; the canary pane (4) selects one that has"
        self.query_one(StatusLine).say(text, "warn")
        self.notify(text, severity="warning")
        return None

    def action_canary_step(self, direction: int) -> None:
        app = self._canary_app()
        if app is None:
            return
        self.run_worker(self._canary_step(app, direction), group="submit", exit_on_error=False)

    async def _canary_step(self, app: str, direction: int) -> None:
        # A step from the weight the engine knows now (the proxy's answer, else the last one set); the pane's
        # last report only when neither is known: a pane that missed a report would step from a stale weight.
        current = await self.engine.traffic.canary_weight(app)
        if current is None:
            current = self.pane("canary").weights.get(app, 0)  # type: ignore[union-attr]
        weight = max(0, min(100, current + self.engine.config.canary_step * (1 if direction > 0 else -1)))
        # A small step is steering: asking each time slowed it down (issue 15); `canary.confirm_steps` asks again.
        ask = self.engine.config.canary.confirm_steps
        if not ask:
            self.query_one(StatusLine).say(f"canary {app}: {100 - current}/{current} → {100 - weight}/{weight}", "busy")
        await self._submit(f"canary {app} weight {weight}", confirm=ask)

    def action_canary_stable(self) -> None:
        if (app := self._canary_app()) is not None:
            self.submit(f"canary {app} weight 0")

    def action_promote(self) -> None:
        if (app := self._canary_app()) is not None:
            self.submit(f"canary {app} promote")

    def action_command_line(self, text: str = "") -> None:
        self.query_one(StatusLine).add_class("-hidden")
        self.query_one(CommandLine).open(text)

    @on(CommandLine.Entered)
    def _command_entered(self, event: CommandLine.Entered) -> None:
        self._command_line_closed()
        self.submit(event.text)

    @on(CommandLine.Closed)
    def _command_line_closed(self) -> None:
        self.query_one(StatusLine).remove_class("-hidden")
        self._focus_last_pane()

    def _focus_last_pane(self) -> None:
        self.pane(self._last_pane).focus_main()

    def action_filter(self) -> None:
        pane = self.pane(self._focused_pane() or "fleet")
        if hasattr(pane, "open_filter"):
            pane.open_filter()  # type: ignore[union-attr]
        else:
            self.notify("this pane has nothing to filter", severity="information")

    def _focused_pane(self) -> str | None:
        focused = self.focused
        for name in PANES:
            if focused is not None and self.pane(name) in focused.ancestors_with_self:
                return name
        return None

    def action_focus_pane(self, name: str) -> None:
        self._last_pane = name
        self.pane(name).focus_main()

    def action_next_pane(self, step: int) -> None:
        current = self._focused_pane() or "fleet"
        self.action_focus_pane(PANES[(PANES.index(current) + step) % len(PANES)])

    def action_zoom(self) -> None:
        """The focused pane alone on the screen, or the grid back: at 80x24 nothing needs to stay cut off."""
        panes = self.query_one("#panes")
        name = self._focused_pane() or self._last_pane
        zoomed = not panes.has_class("-zoomed")
        panes.set_class(zoomed, "-zoomed")
        for pane in PANES:
            self.pane(pane).set_class(zoomed and pane == name, "-zoom")
        self.pane(name).focus_main()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.engine.config.keymap, self.engine.config.readonly))

    def selection(self) -> tuple[str, str] | None:
        """What the focused pane has selected, as (kind, name): ("host", h), ("build", id), ("canary", app)."""
        # The pane last chosen, not `focused`: focus moves a tick later, and `3 l` typed at once means the heartbeat.
        pane = self._last_pane
        if pane == "fleet" and (host := self.pane("fleet").selected_host()) is not None:  # type: ignore[union-attr]
            return "host", host
        if pane == "builds" and (build := self.pane("builds").selected_build()) is not None:  # type: ignore[union-attr]
            return "build", build
        if pane == "canary" and (app := self.pane("canary").selected) is not None:  # type: ignore[union-attr]
            return "canary", app
        return None

    def action_event_log(self) -> None:
        """`l`: the selection's logs, in the one log viewer; with nothing selected, every event."""
        selected = self.selection()
        if selected is None:
            self.push_screen(EventLogScreen(list(self.event_lines), wrap=self.log_wrap))
            return
        kind, name = selected
        if kind == "build":
            self.submit(f"log build {name}")
        elif kind == "host":
            self.push_screen(EventLogScreen(list(self.event_lines), wrap=self.log_wrap, subject=f"host {name}",
                                            scope=lambda line: line.key == name))
        else:  # a canary app: its commands, messages and its hosts' lines name it
            self.push_screen(EventLogScreen(list(self.event_lines), wrap=self.log_wrap, subject=f"app {name}",
                                            scope=lambda line: name in line.key or name in line.text))

    def action_describe(self) -> None:
        """`d`: the selection in full, on a screen of its own (Esc leaves)."""
        selected = self.selection()
        if selected is None:
            self.query_one(StatusLine).say("nothing selected to describe in this pane", "dim")
            return
        kind, name = selected
        if kind == "host":
            self.push_screen(HostDetailScreen(self.engine, self.hosts_seen, name))
        elif kind == "build":
            record = next((r for r in self.engine.builds.records() if r.build_id == name), None)
            if record is not None:
                self.push_screen(DescribeScreen(f"Build {name}", build_description(record)))
        else:
            self.submit(f"traffic {name}")  # pools, members, weights, health and counts, in a result view

    @on(BuildQueuePane.BuildChosen)
    def _build_chosen(self, event: BuildQueuePane.BuildChosen) -> None:
        self.submit(f"log build {event.build_id}")

    @on(FleetPane.HostChosen)
    def _host_chosen(self, event: FleetPane.HostChosen) -> None:
        # A host in a running rollout drills into that rollout's timeline (what its "now" column shows a step
        # of); `d` still describes the host. Any other host: its detail. The row is painted from the engine's
        # views, the tracker from events the flush timer hands over: flush first, so Enter pressed the moment a
        # row says "deploying" decides on the same state the operator sees (it once opened the host's detail).
        self.flush()
        rollout_id = self.rollouts.running_for(event.host)
        if rollout_id is not None:
            self.push_screen(DescribeScreen(f"Rollout {rollout_id} · d on the host: its detail",
                                            self.rollouts.rows(rollout_id),
                                            live=lambda: self.rollouts.rows(rollout_id)))
            return
        self.push_screen(HostDetailScreen(self.engine, self.hosts_seen, event.host))

    # -- quitting ------------------------------------------------------------
    async def action_quit(self) -> None:
        running = self.engine.running()
        if not running:
            await self.shutdown()
            return
        self.run_worker(self._confirm_quit(), group="submit")

    async def _confirm_quit(self) -> None:
        if await self.push_screen_wait(ConfirmScreen(quit_question(self.engine), "Stop it and quit", "work is running")):
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop running commands (the engine journals them as interrupted), say what they left, close, exit."""
        stopped, apps = [c.text() for c in self.engine.running()], rollout_apps(self.engine)
        commands = [w for w in self.workers if w.group == "commands" and not w.is_finished]
        if stopped and len(self.screen_stack) == 1:  # not a blank wait: say what the console is doing
            self.query_one(StatusLine).say(f"stopping {'; '.join(stopped)}; the console closes once it has stopped",
                                           "warn")
        for worker in commands:
            worker.cancel()
        for worker in commands:
            try:
                await worker.wait()
            except Exception:  # cancelled or failed: either way it is over, and the journal says how
                pass
        if stopped:
            self.exit_summary = await exit_summary(self.engine, stopped, apps)
        await self._close_engine()
        self.exit(0)

    async def _close_engine(self) -> None:
        if self._engine_closed:
            return
        self._engine_closed = True
        self.feed.close()
        await self.engine.close()

    async def on_unmount(self) -> None:
        await self._close_engine()

    # -- command palette -----------------------------------------------------
    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for spec in KEYS:
            if spec.scope != "app" or spec.id in ("help", "quit"):
                continue
            if self.engine.config.readonly and spec.mutating:
                continue
            yield SystemCommand(f"{spec.short}: {spec.description}", f"key {spec.key} · id {spec.id}",
                                lambda action=spec.action: self.run_action(action))
        for cls in command_classes():
            if self.engine.config.readonly and cls.mutating:
                continue
            yield SystemCommand(f":{cls.usage}", cls.summary,
                                lambda verb=cls.verb: self.action_command_line(f"{verb} "))


def _footer_keys(screen: Screen[object]) -> tuple[object, ...]:
    """What a Footer on `screen` shows: each active key's binding, whether it is enabled, and its tooltip."""
    return tuple((key, binding, enabled, tooltip) for key, (_node, binding, enabled, tooltip)
                 in screen.active_bindings.items())


def run_console(engine: "Engine") -> int:
    """The CLI's entry: run the console until the operator quits; the exit code for the shell."""
    app = OpsConsoleApp(engine, freeze_startup=True)
    result = app.run()
    for line in app.exit_summary:  # the screen is gone: the operator reads what quitting did here
        print(line)
    return int(result or 0) if app.return_code is None else app.return_code


__all__ = ["OpsConsoleApp", "run_console"]
