"""`opsconsole proxy`: the embedded traffic proxy, a separate long-running process.

The proxy parses its own options (`opsconsole proxy --help` shows them); the cli only takes
`--config` from either side of the word `proxy` and hands everything over.
"""

from __future__ import annotations

import argparse

from opsconsole.cli.common import Subcommand, config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from opsconsole.proxy.__main__ import main_proxy

    # The same default as every other front end: --config, else $OPSCONSOLE_CONFIG, else ./opsconsole.yaml.
    return main_proxy(["--config", str(config_path(args.config))] + list(args.rest))


SUBCOMMAND = Subcommand(
    name="proxy", summary="the embedded traffic proxy (a long-running process; --help lists its options)",
    add_arguments=add_arguments, run=run, pass_through=True)
