"""Headless front end: run a script of commands, print one line per event (or JSON lines)."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import IO, Iterable

from opsconsole.engine.commands import Command, CommandError
from opsconsole.engine.engine import Engine
from opsconsole.event_lines import format_event
from opsconsole.events import Event
from opsconsole.yamlsource import SourceError


@dataclass(frozen=True)
class ScriptLine:
    number: int
    text: str
    command: Command


def read_script(text: str, source: str, engine: Engine) -> list[ScriptLine]:
    """Parse every line before any runs; a bad line is a SourceError naming source and line."""
    lines = []
    # A BOM that an editor (or PowerShell's redirect) put in front of the text is no part of the first command.
    text = text.removeprefix("\ufeff")
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        shown = engine.masked(stripped)  # a credential typed in the line is not echoed in an error
        try:
            command = engine.parse(stripped)
        except CommandError as exc:
            raise SourceError(source, number, "", f"{shown!r}: {engine.masked(str(exc))}") from None
        if engine.refusal(command) is not None:  # said before anything runs, in the script's terms
            raise SourceError(source, number, "", f"{shown!r}: refused, the console is read-only")
        lines.append(ScriptLine(number, stripped, command))
    return lines


class EventPrinter:
    """Prints each event as a line (or a JSON line) to `out`.

    A reader that goes away (`opsconsole --script roll.ops | head -2`) stops the printing, never the
    work: the rollout runs on, the journal records how it ended, the exit code says it too.
    """

    def __init__(self, out: IO[str], as_json: bool, *, err: IO[str] | None = None) -> None:
        self.out = out
        self.as_json = as_json
        self.err = err if err is not None else sys.stderr
        self.closed = False

    def __call__(self, event: Event) -> None:
        if self.closed:
            return
        if self.as_json:
            text = json.dumps(event.to_dict(), default=str)
        else:
            line = format_event(event)
            if line is None:
                return
            text = line
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed = True
        # What is still buffered would fail again when Python flushes at exit ("Exception ignored …",
        # exit status 120): point the descriptor at /dev/null so that last flush has somewhere to go.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.out.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        try:
            self.err.write("opsconsole: the output was closed; the script runs on, and `opsconsole history` "
                           "shows how it ended\n")
            self.err.flush()
        except (OSError, ValueError):
            pass  # stderr went the same way (`2>&1 | head`)


async def run_script(engine: Engine, lines: Iterable[ScriptLine], *, keep_going: bool = False) -> int:
    """Run parsed lines in order. Returns 0 if all succeeded, else 1."""
    failed = False
    for line in lines:
        outcome = await engine.execute(line.command)
        if not outcome.ok:
            failed = True
            if not keep_going:
                return 1
    return 1 if failed else 0


def main_headless(engine: Engine, script_text: str | None, source: str, *, as_json: bool, keep_going: bool,
                  out: IO[str] = sys.stdout) -> int:
    """Run a script (parsed whole first), with the always-on work the engine was opened for
    (`Engine.open(…, heartbeat=, poll=)`: `--watch`) running meanwhile. Without a script, run that work
    until Ctrl-C/SIGTERM: the console's automation with nobody at the keyboard (a CI job, a service)."""
    lines = read_script(script_text, source, engine) if script_text is not None else []
    engine.bus.subscribe(EventPrinter(out, as_json))
    # As the console does on start: work a killed run left unfinished is said first (and its open journal
    # entries closed, so `history` stops showing a start with no end).
    for notice in engine.startup_notices():
        engine.say(notice, level="warning")

    async def go() -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        # SIGTERM stops like Ctrl-C: work cancelled cleanly, the journal says so.
        loop.add_signal_handler(signal.SIGTERM, lambda: main.cancel() if main else None)
        async with engine:  # starts what it was opened for; closed however this ends
            code = await run_script(engine, lines, keep_going=keep_going)
            if script_text is None:
                await asyncio.Event().wait()  # until cancelled
            return code

    try:
        return asyncio.run(go())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
