"""`opsconsole`: the command-line entry point for every front end.

Without a subcommand it runs the console, or its commands headless (cli/console.py);
each subcommand is its own module here. `--config` may come before or after the
subcommand (`opsconsole --config X heartbeat` and `opsconsole heartbeat --config X`),
because people type both.
"""

from __future__ import annotations

import argparse
import os
import sys

from opsconsole.cli import commands, console, heartbeat, history, hostkeys, init, proxy
from opsconsole.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Subcommand, add_config_option
from opsconsole.yamlsource import SourceError

SUBCOMMANDS: tuple[Subcommand, ...] = (history.SUBCOMMAND, heartbeat.SUBCOMMAND, proxy.SUBCOMMAND,
                                       hostkeys.SUBCOMMAND, commands.SUBCOMMAND, init.SUBCOMMAND)

DESCRIPTION = """\
A terminal operations console: fleet, builds, rolling updates, heartbeat and canary.

Without --script it opens the console (a Textual app). With --script it runs the
same commands headless, one per line, printing one line per event.
"""

EPILOG = """\
--config goes before or after a subcommand: `opsconsole --config X heartbeat` and
`opsconsole heartbeat --config X` are the same. The config file is taken from
--config, else $OPSCONSOLE_CONFIG, else ./opsconsole.yaml.
`opsconsole SUBCOMMAND --help` lists a subcommand's own options.

exit codes: 0 all commands succeeded, 1 a command failed, 2 bad input
(config, script, arguments), 130 interrupted.
"""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `opsconsole` parser, and each subcommand's own (its errors show its usage)."""
    parser = argparse.ArgumentParser(
        prog="opsconsole", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="opsconsole [--config FILE] [--script FILE] [options]\n"
              "       opsconsole [--config FILE] SUBCOMMAND [options]")
    add_config_option(parser, top_level=True)
    console.add_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", title="subcommands")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for sub in SUBCOMMANDS:
        p = subparsers.add_parser(sub.name, prog=f"opsconsole {sub.name}", help=sub.summary,
                                  description=sub.description or sub.summary, add_help=not sub.pass_through)
        add_config_option(p)
        sub.add_arguments(p)
        p.set_defaults(subcommand=sub)
        parsers[sub.name] = p
    return parser, parsers


def _not_dumpable() -> None:
    """Keep our memory and environment (secrets, the proxy token, AWS keys) from processes of the same user.

    A build runs code anyone who can push to the branch wrote, as our user: without this it could read
    /proc/<our pid>/environ and mem, whatever environment we hand it. Linux only; elsewhere nothing changes.
    """
    if sys.platform != "linux":
        return
    try:
        import ctypes

        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no libc prctl: nothing to do


def main(argv: list[str] | None = None) -> int:
    parser, parsers = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    sub: Subcommand | None = getattr(args, "subcommand", None)
    if rest and not (sub and sub.pass_through):
        (parsers[sub.name] if sub else parser).error(f"unrecognized arguments: {' '.join(rest)}")
    if sub is not None and (misplaced := console.given(args)):
        parsers[sub.name].error(f"{', '.join(misplaced)} belongs to the console run (no subcommand), not to "
                                f"`opsconsole {sub.name}`")
    args.rest = rest
    # Everything the console creates while it runs (state, logs, git caches, local hosts' files, what
    # their commands write) is the operator's alone: 0700 directories, 0600 files. Restored on return
    # for callers that run main() in their own process.
    umask = os.umask(0o077)
    _not_dumpable()
    try:
        return sub.run(args) if sub is not None else console.run(args)
    except SourceError as exc:
        print(f"opsconsole: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        os.umask(umask)


__all__ = ["SUBCOMMANDS", "build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
