"""`opsconsole commands`: the command language, as `help` prints it."""

from __future__ import annotations

import argparse

from opsconsole.cli.common import EXIT_OK, Subcommand


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from opsconsole.engine.commands import help_text

    print(help_text())
    return EXIT_OK


SUBCOMMAND = Subcommand(
    name="commands", summary="list the command language (--script lines, the console's `:` prompt)",
    description="list every command of the language --script files and the console's `:` prompt speak",
    add_arguments=add_arguments, run=run)
