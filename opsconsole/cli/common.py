"""What every subcommand shares: exit codes, where the config comes from, the `--config` option."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from opsconsole.config.loader import load_config
from opsconsole.yamlsource import SourceError
from opsconsole.config.model import Config

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

CONFIG_HELP = "the YAML config (see config.example.yaml); default $OPSCONSOLE_CONFIG, else ./opsconsole.yaml"


@dataclass(frozen=True)
class Subcommand:
    """One `opsconsole NAME …` subcommand: its options and what runs it.

    `pass_through`: the arguments after NAME that the cli does not know go to `run` as
    `args.rest` (the proxy parses its own).
    """

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""
    pass_through: bool = False


def add_config_option(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """`--config FILE`, accepted before the subcommand (top level) and after it.

    After a subcommand it has no default, so one given before the subcommand is not overwritten
    by argparse's default; given on both sides, the later one wins.
    """
    parser.add_argument("--config", "-c", metavar="FILE", default=None if top_level else argparse.SUPPRESS,
                        help=CONFIG_HELP + ("" if top_level else "; may also come before the subcommand"))


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("OPSCONSOLE_CONFIG") or "opsconsole.yaml")


def load(arg: str | None) -> Config:
    """The config named by `--config`, $OPSCONSOLE_CONFIG or ./opsconsole.yaml; SourceError says what is wrong."""
    path = config_path(arg)
    if not arg and not os.environ.get("OPSCONSOLE_CONFIG") and not path.exists():
        raise SourceError(path, None, "", "file not found: give --config FILE (config.example.yaml is a commented "
                                          "start), or set $OPSCONSOLE_CONFIG")
    return load_config(path)
