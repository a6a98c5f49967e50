"""`opsconsole`: the command-line entry point for every front end."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from opsconsole.config import SourceError, load_config

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
A terminal operations console: fleet, builds, rolling updates, heartbeat and canary.

Without --script it opens the console (a Textual app). With --script it runs the
same commands headless, one per line, printing one line per event.
"""

EPILOG = """\
subcommands:
  opsconsole history [--as-script]   print the journal (or a replayable script)
  opsconsole heartbeat [--count N]   only the heartbeat monitor: one line per host per interval
  opsconsole proxy --config FILE     the embedded traffic proxy (a long-running process)
  opsconsole hostkeys accept HOST [--fingerprint FP]
                                     trust a host's SSH key after checking its fingerprint
  opsconsole commands                list the command language

exit codes: 0 all commands succeeded, 1 a command failed, 2 bad input
(config, script, arguments), 130 interrupted.

The config file is taken from --config, else $OPSCONSOLE_CONFIG, else ./opsconsole.yaml.
"""


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("OPSCONSOLE_CONFIG") or "opsconsole.yaml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opsconsole", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="FILE", help="the YAML config (see config.example.yaml)")
    p.add_argument("--script", "-s", metavar="FILE", help="run the commands in FILE headless ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="with --script: print events as JSON lines")
    p.add_argument("--keep-going", action="store_true", help="with --script: run every line even after a failure")
    p.add_argument("--readonly", action="store_true", help="refuse every command that changes something")
    p.add_argument("--theme", metavar="NAME", help="console theme: dark, light or mono")
    p.add_argument("--check", action="store_true", help="validate the config (and --script) and exit")
    p.add_argument("--watch", action="store_true",
                   help="headless: run the heartbeat and the branch pollers (build and deploy what is pushed) "
                        "during --script, or until Ctrl-C without one")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "history":
        return _history(argv[1:])
    if argv and argv[0] == "heartbeat":
        from opsconsole.heartbeat.headless import main_heartbeat

        return main_heartbeat(argv[1:])
    if argv and argv[0] == "proxy":
        from opsconsole.proxy.__main__ import main_proxy

        return main_proxy(argv[1:])
    if argv and argv[0] == "hostkeys":
        from opsconsole.hostkeys import main_hostkeys

        return main_hostkeys(argv[1:])
    if argv and argv[0] == "commands":
        from opsconsole.engine.commands import help_text

        print(help_text())
        return EXIT_OK
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SourceError as exc:
        print(f"opsconsole: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("opsconsole: interrupted; running work was cancelled and the journal records it", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    path = _config_path(args.config)
    if not path.exists() and not args.config and not os.environ.get("OPSCONSOLE_CONFIG"):
        raise SourceError(path, None, "", "file not found: give --config FILE (config.example.yaml is a commented "
                                          "start), or set $OPSCONSOLE_CONFIG")
    config = load_config(path)
    if args.readonly:
        config = replace(config, readonly=True)
    if args.theme:
        from opsconsole.config.loader import THEMES

        if args.theme not in THEMES:
            raise SourceError("--theme", None, "", f"unknown theme {args.theme!r}; themes: {', '.join(THEMES)}")
        config = replace(config, theme=args.theme)
    for notice in config.notices:
        print(f"opsconsole: note: {notice}", file=sys.stderr)
    from opsconsole.engine import Engine

    engine = Engine(config)
    engine.prepare()
    if args.script:
        from opsconsole.headless import main_headless, read_script

        source = "<stdin>" if args.script == "-" else args.script
        try:
            text = sys.stdin.read() if args.script == "-" else Path(args.script).read_text()
        except OSError as exc:
            raise SourceError(args.script, None, "", f"cannot read script: {exc.strerror}") from None
        if args.check:
            read_script(text, source, engine)
            print(f"{args.config or 'config'} and {source} are valid")
            return EXIT_OK
        return main_headless(engine, text, source, as_json=args.json, keep_going=args.keep_going, watch=args.watch)
    if args.check:
        print(f"{config.file} is valid")
        return EXIT_OK
    if args.watch:
        from opsconsole.headless import main_headless

        return main_headless(engine, None, "", as_json=args.json, keep_going=args.keep_going, watch=True)
    from opsconsole.ui.app import run_console

    return run_console(engine)


def _history(argv: list[str]) -> int:
    import json

    from opsconsole.engine.journal import Journal

    p = argparse.ArgumentParser(prog="opsconsole history", description="print the journal of commands")
    p.add_argument("--config", "-c", metavar="FILE")
    p.add_argument("--as-script", action="store_true", help="print only the commands that ran, as a --script file")
    p.add_argument("--json", action="store_true", help="print the raw journal entries")
    args = p.parse_args(argv)
    try:
        config = load_config(_config_path(args.config))
    except SourceError as exc:
        print(f"opsconsole: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    journal = Journal(config.state_dir / "journal.jsonl")
    import time

    for entry in journal.entries():
        if args.json:
            print(json.dumps(entry, sort_keys=True))
        elif args.as_script:
            if entry.get("kind") == "command.start":
                print(entry["command"])
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["ts"]))
            state = {"command.start": "start", "command.end": "ok" if entry.get("ok") else "FAILED",
                     "command.interrupted": "INTERRUPTED"}.get(entry["kind"], entry["kind"])
            extra = f" — {entry['message']}" if entry.get("message") else ""
            print(f"{stamp} {entry.get('issuer', '?'):<20} {state:<11} {entry.get('command', '')}{extra}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
