"""`opsconsole history`: the journal of every command, who ran it and how it ended."""

from __future__ import annotations

import argparse
import json
import time

from opsconsole.cli.common import EXIT_OK, Subcommand, load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as-script", action="store_true", help="print only the commands that ran, as a --script file")
    # Its own dest: the console's --json (before a subcommand) is refused, not taken for this one.
    p.add_argument("--json", dest="raw_json", action="store_true", help="print the raw journal entries")


def run(args: argparse.Namespace) -> int:
    from opsconsole.engine.journal import Journal
    from opsconsole.redact import Redactor

    config = load(args.config)
    journal = Journal(config.state_dir / "journal.jsonl")
    # The journal is masked when written; masked again here with today's secrets, for entries written
    # before a secret was configured. A masked `PGPASSWORD=***` line replays as a failure, not a leak.
    hide = Redactor(config.secrets.values())
    for entry in journal.entries():
        entry = hide.value(entry)
        if isinstance(entry.get("command"), str):
            entry["command"] = hide.command(entry["command"])
        if args.raw_json:
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


SUBCOMMAND = Subcommand(
    name="history", summary="print the journal of commands (--as-script: a script that replays them)",
    description="print the journal of commands: who ran what, when, and how it ended",
    add_arguments=add_arguments, run=run)
