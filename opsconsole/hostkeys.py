"""Host keys: what known_hosts says about a host, the refusal when it disagrees, and accepting a key.

There is no accept-all: an unknown or changed key stops work on that host with a
message naming the key and the command that trusts it
(`opsconsole hostkeys accept HOST`, opsconsole/cli/hostkeys.py), which shows the
fingerprint and asks. Which known_hosts file is meant is the config's `ssh.known_hosts`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import asyncssh

from opsconsole.fsio import write_atomic
from opsconsole.transport.base import TransportError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class HostKeyProblem:
    host: str  # the name the operator knows (inventory name, or "jump host …")
    address: str
    port: int
    kind: str  # "unknown" | "changed"
    presented: str  # "ssh-ed25519 SHA256:…" as the host presents it now; "" if it could not be fetched
    known: tuple[str, ...]  # fingerprints on file for this host
    known_hosts: str

    def message(self) -> str:
        where = f"{self.address}:{self.port}"
        key = self.presented or "a key we could not fetch"
        if self.kind == "unknown":
            return (f"{self.host}: host key is not known: {where} presents {key}, which is not in "
                    f"{self.known_hosts}; nothing was run there. If that fingerprint is right, trust it with "
                    f"`opsconsole hostkeys accept {self.host}`")
        return (f"{self.host}: HOST KEY CHANGED: {where} now presents {key}, but {self.known_hosts} has "
                f"{', '.join(self.known)} for it; nothing was run there. This can be an attack (someone "
                f"between you and the host); if the host was rebuilt, check the fingerprint and run "
                f"`opsconsole hostkeys accept {self.host}`")


class HostKeyError(TransportError):
    """A host's key is unknown or changed; work on that host stops."""

    def __init__(self, problem: HostKeyProblem) -> None:
        super().__init__(problem.message())
        self.problem = problem


def known_hosts_path(configured: str | None) -> Path:
    return Path(os.path.expanduser(configured or DEFAULT_KNOWN_HOSTS))


def host_pattern(address: str, port: int) -> str:
    """The known_hosts name of a host, as OpenSSH writes it."""
    return address if port == 22 else f"[{address}]:{port}"


def describe_key(key: asyncssh.SSHKey) -> str:
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


def known_keys(path: Path, address: str, port: int) -> list[asyncssh.SSHKey]:
    """The host keys on file for `address:port` (plain or hashed entries)."""
    if not path.is_file():
        return []
    try:
        ipaddress.ip_address(address)
        addr = address
    except ValueError:
        addr = ""
    entries = asyncssh.read_known_hosts(str(path))
    unique: dict[bytes, asyncssh.SSHKey] = {}
    # An IP address matches as host and as addr: the same entry comes back twice.
    for key in entries.match(address, addr, port if port != 22 else None)[0]:
        unique.setdefault(key.public_data, key)
    return list(unique.values())


def diagnose(name: str, address: str, port: int, path: Path, presented: asyncssh.SSHKey | None) -> HostKeyProblem:
    """Why verification failed: the key is not on file, or a different one is."""
    known = known_keys(path, address, port)
    return HostKeyProblem(
        host=name, address=address, port=port, kind="changed" if known else "unknown",
        presented=describe_key(presented) if presented is not None else "",
        known=tuple(describe_key(k) for k in known), known_hosts=str(path))


def trust(path: Path, address: str, port: int, key: asyncssh.SSHKey) -> None:
    """Record `key` as the host's key: drop any other entry for the host, append the new one."""
    pattern = host_pattern(address, port)
    kept = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if not _names_host(line, pattern):
                kept.append(line)
    public = key.export_public_key("openssh").decode().split()
    kept.append(f"{pattern} {public[0]} {public[1]}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The file's own mode is kept (known_hosts is often 0644); a new one is 0600.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_atomic(path, "\n".join(kept) + "\n", mode=mode)


def _names_host(line: str, pattern: str) -> bool:
    fields = line.split()
    if not fields or line.lstrip().startswith("#"):
        return False
    if fields[0].startswith("@"):  # @cert-authority / @revoked lines are the operator's business
        return False
    for name in fields[0].split(","):
        if name.startswith("|1|"):
            try:
                salt, digest = (base64.b64decode(p) for p in name[3:].split("|"))
            except ValueError:
                continue
            if hmac.new(salt, pattern.encode(), hashlib.sha1).digest() == digest:
                return True
        elif name == pattern:
            return True
    return False


def ask_tty(question: str) -> bool:
    """Ask on the terminal; anything but yes is no (and no terminal is no)."""
    if not sys.stdin.isatty():
        print(f"{question} [y/N] no (not a terminal; nothing changed)", file=sys.stderr)
        return False
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


@dataclass(frozen=True)
class AcceptOutcome:
    accepted: bool
    message: str


async def accept_host_key(
    name: str,
    address: str,
    port: int,
    path: Path,
    fetch: Callable[[list[str]], Awaitable[asyncssh.SSHKey | None]],
    confirm: Callable[[str], bool] = ask_tty,
    expected: str | None = None,
) -> AcceptOutcome:
    """The `opsconsole hostkeys accept HOST` flow: fetch the key the host presents, show it, ask, record.

    `fetch(algorithms)` returns the key the host presents (over the jump host when
    there is one); `algorithms` narrows the request to the kinds on file so a changed
    key is compared like for like.
    """
    known = known_keys(path, address, port)
    key = await fetch([a.decode() for k in known for a in k.sig_algorithms])
    if key is None:
        return AcceptOutcome(False, f"{name}: {address}:{port} presented no host key")
    shown = describe_key(key)
    if any(k.public_data == key.public_data for k in known):
        return AcceptOutcome(True, f"{name}: {shown} is already trusted in {path}")
    if known:
        question = (f"{name} ({address}:{port}) now presents {shown}\n"
                    f"  {path} has {', '.join(describe_key(k) for k in known)}, which will be replaced.\n"
                    f"Trust the new key?")
    else:
        question = f"{name} ({address}:{port}) presents {shown}\nTrust this key?"
    if expected is not None:  # non-interactive: only the fingerprint the operator checked out of band
        if key.get_fingerprint("sha256") != expected:
            return AcceptOutcome(False, f"{name}: presents {shown}, not {expected}; {path} unchanged")
    elif not confirm(question):
        return AcceptOutcome(False, f"{name}: not accepted; {path} unchanged")
    trust(path, address, port, key)
    return AcceptOutcome(True, f"{name}: trusted {shown} in {path}")
