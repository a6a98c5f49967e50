"""A lab host a play may change accounts and packages on: its /etc and package state are its own copies."""

from __future__ import annotations

from opsconsole.transport.ssh import SshTransport
from tests.lab.fixtures import skip_or_fail
from tests.lab.sshd import PRIVATE_DIRS


async def private_host(transport: SshTransport) -> None:
    """Refuse to touch a host whose /etc and package state are not its own copies (no overlayfs)."""
    for path in ("/etc", *PRIVATE_DIRS):
        got = await transport.run(f"findmnt -n -o FSTYPE --mountpoint {path}")
        if got.stdout.strip() != "overlay":
            skip_or_fail(f"lab host {transport.host.name}: {path} is not a private overlay (needs overlayfs)")
