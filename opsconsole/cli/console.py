"""`opsconsole` without a subcommand: the console, or the same commands headless (`--script`, `--watch`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from opsconsole.cli.common import EXIT_INTERRUPTED, EXIT_OK, load
from opsconsole.yamlsource import SourceError, decode_utf8

# The options of the console run, by argparse dest: none of them means anything to a subcommand.
OPTIONS = {"script": "--script", "json": "--json", "keep_going": "--keep-going", "readonly": "--readonly",
           "theme": "--theme", "check": "--check", "watch": "--watch"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--script", "-s", metavar="FILE", help="run the commands in FILE headless ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="with --script: print events as JSON lines")
    p.add_argument("--keep-going", action="store_true", help="with --script: run every line even after a failure")
    p.add_argument("--readonly", action="store_true", help="refuse every command that changes something")
    p.add_argument("--theme", metavar="NAME", help="console theme: dark, light or mono")
    p.add_argument("--check", action="store_true",
                   help="validate the config (and --script, and every playbook) and exit; writes nothing")
    p.add_argument("--watch", action="store_true",
                   help="headless: run the heartbeat and the branch pollers (build and deploy what is pushed) "
                        "during --script, or until Ctrl-C without one")


def given(args: argparse.Namespace) -> list[str]:
    """The console's options on this command line (a subcommand refuses them)."""
    return [flag for dest, flag in OPTIONS.items() if getattr(args, dest, None)]


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("opsconsole: interrupted; running work was cancelled and the journal records it", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    config = load(args.config)
    if args.readonly:
        config = replace(config, readonly=True)
    if args.theme:
        from opsconsole.config.loader import THEMES

        if args.theme not in THEMES:
            raise SourceError("--theme", None, "", f"unknown theme {args.theme!r}; themes: {', '.join(THEMES)}")
        config = replace(config, theme=args.theme)
    for notice in config.notices:
        print(f"opsconsole: note: {notice}", file=sys.stderr)
    text, source = _script_text(args.script) if args.script else ("", "")
    if args.check or args.script:
        # Checked before the real engine exists: a check, or a script refused as bad input, changes nothing
        # (no state directory, port book or demo repo made).
        from opsconsole.engine.engine import Engine
        from opsconsole.headless import read_script

        with Engine.checking(config) as checker:
            if args.script:
                read_script(text, source, checker)
        if args.check:
            print(f"{args.config or 'config'} and {source} are valid" if args.script else f"{config.file} is valid")
            return EXIT_OK
    from opsconsole.engine.engine import Engine

    # The console and --watch run the always-on work; a plain --script runs none of it.
    always_on = args.watch or not args.script
    engine = Engine.open(config, heartbeat=always_on, poll=always_on, watch_proxy=always_on)
    if args.script:
        from opsconsole.headless import main_headless

        return main_headless(engine, text, source, as_json=args.json, keep_going=args.keep_going)
    if args.watch:
        from opsconsole.headless import main_headless

        return main_headless(engine, None, "", as_json=args.json, keep_going=args.keep_going)
    from opsconsole.ui.app import run_console

    return run_console(engine)


def _script_text(script: str) -> tuple[str, str]:
    """The script's text and the name its errors give: UTF-8 as the config is, whatever the locale."""
    source = "<stdin>" if script == "-" else script
    try:
        data = sys.stdin.buffer.read() if script == "-" else Path(script).read_bytes()
    except OSError as exc:
        raise SourceError(script, None, "", f"cannot read script: {exc.strerror}") from None
    return decode_utf8(data, source), source  # a bad byte names its line
