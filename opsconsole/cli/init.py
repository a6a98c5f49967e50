"""`opsconsole init [DIR]`: a commented starting config for one's own fleet, and the playbooks it names.

What is written, and why its placeholders pass `--check`, is opsconsole/starter.py. This
module is the command: it refuses when any of the files exists (naming it, exit 2, nothing
written) and prints what to fill in, by line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opsconsole.cli.common import EXIT_BAD_INPUT, EXIT_OK, Subcommand
from opsconsole.starter import CONFIG_NAME, PROXY_DRIVERS, existing, fill_in_lines, project_name, starter_files, write_starter

DESCRIPTION = f"""\
Write a commented starting config, DIR/{CONFIG_NAME}, for static SSH hosts behind a
bastion: an app group (app-1, app-2), a db host (db-1, MariaDB) and a proxy host
(proxy-1, HAProxy or the embedded proxy), with an app built from a git URL. Also
writes the playbooks it names under DIR/playbooks/ (provisioning of each group, the
deploy) for you to adapt.

The config passes `opsconsole --config DIR/{CONFIG_NAME} --check` as written: its
placeholders (192.0.2.x addresses, example.org names) reach no real machine. Each
line to change is marked `# FILL IN`, and init lists them. Nothing is ever
overwritten: if any of the files exists, init names it and writes nothing (exit 2).
"""

EPILOG = f"""\
next steps:
  $EDITOR DIR/{CONFIG_NAME}                       fill in the FILL IN lines
  opsconsole --config DIR/{CONFIG_NAME} --check   check each edit
  opsconsole --config DIR/{CONFIG_NAME} hostkeys accept bastion.example.org
  opsconsole --config DIR/{CONFIG_NAME}           open the console; `provision app`, `deploy app`
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("directory", metavar="DIR", nargs="?", default=".",
                   help="where to write (created if missing; default: the current directory)")
    p.add_argument("--proxy", choices=PROXY_DRIVERS, default="haproxy",
                   help="the proxy on the proxy host: haproxy (steered through its runtime API over SSH) or "
                        "embedded (`opsconsole proxy`); default haproxy")
    p.add_argument("--project", metavar="NAME",
                   help="the fleet's name (state dir, journal); default: DIR's name, else `fleet`")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if directory.exists() and not directory.is_dir():
        print(f"opsconsole: init: {directory} exists and is not a directory; nothing was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        files = starter_files(args.project or project_name(directory), args.proxy)
    except ValueError as exc:
        print(f"opsconsole: init: --project: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    taken = existing(directory, files)
    if taken:
        names = ", ".join(str(p) for p in taken)
        print(f"opsconsole: init: {names} already exist{'s' if len(taken) == 1 else ''}; nothing was written "
              "(init never overwrites: move them away or choose another DIR)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        written = write_starter(directory, files)
    except FileExistsError as exc:  # appeared between the check and the write; what init wrote is removed
        print(f"opsconsole: init: {exc.filename} already exists; nothing was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"opsconsole: init: cannot write {exc.filename or directory}: {exc.strerror}; nothing was written",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    config = written[0]
    print(f"wrote {config} ({args.proxy} proxy) and {len(written) - 1} files under {directory / 'playbooks'}")
    print(f"fill in (each passes --check as written, but reaches no real machine):")
    for number, what in fill_in_lines(files[0].text):
        print(f"  {config}:{number}: {what}")
    print(f"then: opsconsole --config {config} --check")
    return EXIT_OK


SUBCOMMAND = Subcommand(
    name="init", summary="write a commented starting config for your own fleet (and its playbooks); never overwrites",
    description=DESCRIPTION, add_arguments=add_arguments, run=run)
