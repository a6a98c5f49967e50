"""`opsconsole hostkeys accept HOST`: trust an SSH host's key after checking its fingerprint.

It connects exactly as the engine does (opsconsole.transport.pool.SshOptions.from_config): the
config's `ssh.known_hosts` is the file read and written, `identity_files` and `agent` log in to
the jump host, through which the hosts behind it are asked.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable

from opsconsole.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Subcommand, add_config_option, load

if TYPE_CHECKING:
    from opsconsole.config.model import Config
    from opsconsole.transport.pool import SshOptions


async def accept_for_config(
    config: Config,
    target: str,
    *,
    options: SshOptions | None = None,
    confirm: Callable[[str], bool] | None = None,
    out: Callable[[str], None] = print,
    expected: str | None = None,
) -> int:
    """Accept HOST's key; HOST is an inventory host or the jump host. Returns the exit code.

    Hosts behind the jump host are asked through it, so the jump host's own key
    must be trusted first (the refusal says so). `confirm` asks the question (default:
    on the terminal).
    """
    # Imported when used: asyncssh (and asyncio) would slow the start of every other subcommand.
    import asyncssh

    from opsconsole.hostkeys import accept_host_key, ask_tty
    from opsconsole.inventory import build_inventory
    from opsconsole.transport.base import TransportError
    from opsconsole.transport.pool import SshOptions, SshPool

    pool = SshPool(options or SshOptions.from_config(config))
    try:
        jump = pool.options.jump
        if jump is not None and target in (jump.host, "jump"):
            name, address, port, via_jump = jump.host, jump.host, jump.port, False
        else:
            host = build_inventory(config).get(target)
            if host is None or host.transport != "ssh":
                out(f"opsconsole: hostkeys: {target!r} is not an SSH host of {config.file}"
                    + (f" nor its jump host {jump.host}" if jump else ""))
                return EXIT_BAD_INPUT
            name, address, port, via_jump = host.name, host.address, host.ssh_port, True

        async def fetch(algorithms: list[str]) -> asyncssh.SSHKey | None:
            return await pool.fetch_host_key(address, port, algorithms, via_jump=via_jump)

        outcome = await accept_host_key(name, address, port, pool.known_hosts, fetch, confirm or ask_tty, expected)
        out(outcome.message)
        return EXIT_OK if outcome.accepted else EXIT_FAILED
    except (TransportError, OSError, asyncssh.Error) as exc:
        out(f"opsconsole: hostkeys: {target}: {exc}")
        return EXIT_FAILED
    finally:
        await pool.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    accept = sub.add_parser("accept", help="show HOST's key fingerprint and ask whether to trust it",
                            description="show HOST's key fingerprint and ask whether to trust it; the key is "
                                        "recorded in the config's ssh.known_hosts (default ~/.ssh/known_hosts)")
    accept.add_argument("host", metavar="HOST", help="an inventory host, or the jump host")
    accept.add_argument("--fingerprint", metavar="SHA256:…", help="accept without asking if and only if the key has it")
    add_config_option(accept)


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(accept_for_config(load(args.config), args.host, expected=args.fingerprint))


SUBCOMMAND = Subcommand(
    name="hostkeys", summary="`hostkeys accept HOST`: trust a host's SSH key after checking its fingerprint",
    description="trust an SSH host's key after checking it",
    add_arguments=add_arguments, run=run)
