"""SSH connections: one per host, shared by every task, opened through one shared jump connection.

Why a pool: a handshake through a jump host costs a few round trips and key
exchanges; a play of many short tasks over many hosts would spend its time
there. Each host keeps one connection with keep-alives; a connection that died
is replaced the next time the host is used. Channels per host are bounded below
OpenSSH's `MaxSessions 10`: `max_channels` for commands, one SFTP session and
one spare for killing a timed-out command, so a kill never waits behind the
work it is meant to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import asyncssh

from opsconsole.config.model import Config, JumpConfig
from opsconsole.hostkeys import HostKeyError, diagnose, known_hosts_path, known_keys
from opsconsole.hosts import Host
from opsconsole.transport.base import TransportError
from opsconsole.transport.batched_tcp import BatchedTcp

T = TypeVar("T")

# AES-GCM first: asyncssh runs chacha20-poly1305 (its default first choice) through two cipher set-ups
# per packet, ~5x the CPU of AES-GCM; at a hundred hosts behind a jump host (every packet encrypted
# twice) that CPU is most of a rollout's time. All of asyncssh's defaults stay, for servers without GCM.
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                   "aes256-ctr", "aes192-ctr", "aes128-ctr"]

# asyncssh sends an empty SSH_MSG_IGNORE before every packet once encryption is on: the defence for CBC
# mode, whose next IV an attacker could otherwise know (RFC 4251's security considerations; PuTTY pads
# only under CBC). No mode we offer (ENCRYPTION_ALGS has no CBC, and a rekey picks from the same list)
# needs it, and OpenSSH sends none. Behind a jump host it doubles the packets of both connections, each
# encrypted, framed, logged and decrypted by sshd: at 100 lab hosts the rollout's controller CPU fell
# from ~52 to ~40 ms per host without them (bench_scale; session notes of 2026-12-03).
_EMPTY_IGNORE = (b"\0\0\0\0",)  # the padding packet's one argument: an empty SSH string
_MSG_IGNORE = 2


def skip_ignore_padding(conn: asyncssh.SSHClientConnection) -> None:
    """Stop `conn` sending asyncssh's empty MSG_IGNORE before each packet, unless its cipher is a CBC one."""
    if "-cbc" in str(conn.get_extra_info("send_cipher", "-cbc")):
        return
    send = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if pkttype == _MSG_IGNORE and args == _EMPTY_IGNORE:
            return
        send(pkttype, *args, **kwargs)

    # On the instance: asyncssh sends every packet, its own padding too, through `self.send_packet`.
    conn.send_packet = send_packet  # type: ignore[method-assign]


# The connection died under us (or before we noticed): worth one retry on a fresh connection.
# (An SFTP session that died with it says so as an SFTPError: still the link, not the path.)
LINK_ERRORS: tuple[type[BaseException], ...] = (
    asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError, ConnectionResetError,
    asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection,
)


@dataclass(frozen=True)
class SshOptions:
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    client_keys: tuple[str, ...] = ()  # empty: ~/.ssh/id_* and the agent, as ssh does
    agent: bool = True  # use $SSH_AUTH_SOCK when set
    ssh_config: bool = False  # honour ~/.ssh/config (User, Port, IdentityFile, ProxyJump)
    jump: JumpConfig | None = None
    max_channels: int = 7  # commands at once per host; + SFTP + kill spare stays below MaxSessions 10
    keepalive_interval: float = 10.0
    keepalive_count_max: int = 3
    connect_timeout: float = 15.0
    max_connecting: int = 10  # handshakes in flight at once (see SshConfig.max_connecting)
    jump_nodelay: bool = True  # hold a pty session on the jump host (see SshPool._hold_pty)

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> "SshOptions":
        """The config's `ssh:` section and jump host; every SSH connection, `hostkeys accept`'s too, uses these."""
        ssh = config.ssh
        options: dict[str, Any] = dict(
            known_hosts=ssh.known_hosts, client_keys=ssh.identity_files, agent=ssh.agent, ssh_config=ssh.ssh_config,
            jump=config.jump, max_channels=ssh.max_channels, connect_timeout=ssh.connect_timeout,
            max_connecting=ssh.max_connecting)
        return cls(**{**options, **overrides})


@dataclass
class _Link:
    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient | None = None
    sftp_start: asyncio.Future[asyncssh.SFTPClient] | None = None  # its start, while (or since) it runs
    forwards: dict[tuple[str, int], asyncssh.SSHListener] = field(default_factory=dict)


class SshPool:
    """Connections to SSH hosts, keyed by inventory host name."""

    def __init__(self, options: SshOptions | None = None) -> None:
        self.options = options or SshOptions()
        if not 1 <= self.options.max_channels <= 8:
            raise ValueError("max_channels must be 1..8 (OpenSSH allows 10 sessions; we keep 2 for SFTP and kills)")
        self.known_hosts = known_hosts_path(self.options.known_hosts)
        self._known_hosts_cache: tuple[tuple[int, ...], asyncssh.SSHKnownHosts] | None = None
        self._links: dict[str, _Link] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._spare: dict[str, asyncio.Semaphore] = {}
        # Jump connections, shared by every host behind the same one: the config's `jump:` (key ""), and
        # with `ssh_config: true` each distinct ProxyJump of ~/.ssh/config (key: its spec, "user@host:port,…").
        self._jumps: dict[str, asyncssh.SSHClientConnection] = {}
        self._jump_lock = asyncio.Lock()
        self._jump_ptys: list[asyncssh.SSHClientProcess] = []
        self._hops: list[asyncssh.SSHClientConnection] = []
        # Paces connection set-up: a play over hundreds of hosts opens them all at once otherwise.
        self._connecting = asyncio.Semaphore(self.options.max_connecting)
        self.connecting_peak = 0  # most handshakes in flight at once so far (tests read it)
        self._in_flight = 0
        self.connects = 0  # connections opened so far (tests and the bench read it)

    # -- connections -------------------------------------------------------
    async def connection(self, host: Host) -> asyncssh.SSHClientConnection:
        """The host's live connection, opening (or re-opening) it if needed."""
        return (await self._link(host)).conn

    async def _link(self, host: Host) -> _Link:
        link = self._links.get(host.name)
        if link is not None and not link.conn.is_closed():
            return link
        async with self._locks.setdefault(host.name, asyncio.Lock()):
            link = self._links.get(host.name)
            if link is None or link.conn.is_closed():
                if link is not None:
                    self._forget(host.name, link)
                link = _Link(await self._open(host))
                self._links[host.name] = link
            return link

    def discard(self, host: Host, conn: asyncssh.SSHClientConnection | None = None) -> None:
        """Forget a host's connection (it broke); the next use opens a new one."""
        link = self._links.get(host.name)
        if link is not None and (conn is None or link.conn is conn):
            self._forget(host.name, link)

    def _forget(self, name: str, link: _Link) -> None:
        self._links.pop(name, None)
        for listener in link.forwards.values():
            listener.close()
        link.conn.abort()

    async def _open(self, host: Host) -> asyncssh.SSHClientConnection:
        tunnel, via = await self._tunnel(host)
        kwargs = self._connect_kwargs(host.ssh_user)
        port = host.ssh_port
        if host.ssh_port != 22 or not self.options.ssh_config:
            kwargs["port"] = host.ssh_port
        else:
            port = self._from_ssh_config(host.address, host.ssh_user).port  # for messages: ssh's own choice
        try:
            async with self._connecting:
                self._in_flight += 1
                self.connecting_peak = max(self.connecting_peak, self._in_flight)
                try:
                    conn = await asyncssh.connect(host.address, tunnel=self._direct(tunnel), **kwargs)
                finally:
                    self._in_flight -= 1
        except asyncssh.HostKeyNotVerifiable:
            presented = await self._presented_key(host.address, port, tunnel)
            raise HostKeyError(diagnose(host.name, host.address, port, self.known_hosts, presented)) from None
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear TransportError
            raise TransportError(f"{host.name}: cannot connect to {host.address}:{port}{via}: "
                                 f"{_reason(exc)}") from exc
        self.connects += 1
        skip_ignore_padding(conn)
        return conn

    async def _tunnel(self, host: Host) -> tuple[asyncssh.SSHClientConnection | tuple[()], str]:
        """The shared connection `host` is reached through (or `()`: directly), and words for messages."""
        if self.options.jump:
            return await self._jump_connection(), f" through jump host {self.options.jump.host}"
        if self.options.ssh_config:
            # asyncssh would open a fresh ProxyJump connection for every host; ssh(1) users expect one
            # connection to the bastion, so we open each distinct ProxyJump once and tunnel through it.
            spec = self._from_ssh_config(host.address, host.ssh_user).proxy_jump
            if spec:
                return await self._config_jump(spec), f" through ProxyJump {spec}"
        return (), ""

    async def _jump_connection(self) -> asyncssh.SSHClientConnection:
        jump = self.options.jump
        assert jump is not None

        async def open_jump() -> asyncssh.SSHClientConnection:
            kwargs = self._connect_kwargs(jump.user, jump.key)
            kwargs["port"] = jump.port
            return await self._connect_jump(jump.host, jump.port, (), kwargs)

        return await self._shared_jump("", open_jump)

    async def _config_jump(self, spec: str) -> asyncssh.SSHClientConnection:
        """The connection through a ProxyJump chain (`[user@]host[:port],…`, as ssh -J), opened once."""
        async def open_chain() -> asyncssh.SSHClientConnection:
            conn: asyncssh.SSHClientConnection | tuple[()] = ()
            for hop in spec.split(","):
                user, address, port = _split_hop(hop)
                kwargs = self._connect_kwargs(user)
                if port is None:
                    port = self._from_ssh_config(address, user).port
                else:
                    kwargs["port"] = port
                if not isinstance(conn, tuple):
                    self._hops.append(conn)  # an inner hop of a chain: closed with the pool
                conn = await self._connect_jump(address, port, conn, kwargs)
            assert not isinstance(conn, tuple)
            return conn

        return await self._shared_jump(spec, open_chain)

    async def _shared_jump(self, key: str, open_it: Callable[[], Awaitable[asyncssh.SSHClientConnection]]
                           ) -> asyncssh.SSHClientConnection:
        conn = self._jumps.get(key)
        if conn is not None and not conn.is_closed():
            return conn
        async with self._jump_lock:
            conn = self._jumps.get(key)
            if conn is None or conn.is_closed():
                conn = self._jumps[key] = await open_it()
                await self._hold_pty(conn)
            return conn

    async def _connect_jump(self, address: str, port: int, tunnel: Any, kwargs: dict[str, Any]
                            ) -> asyncssh.SSHClientConnection:
        try:
            conn = await asyncssh.connect(address, tunnel=self._direct(tunnel), **kwargs)
        except asyncssh.HostKeyNotVerifiable:
            presented = await self._presented_key(address, port, tunnel)
            raise HostKeyError(diagnose(address, address, port, self.known_hosts, presented)) from None
        except Exception as exc:  # noqa: BLE001
            raise TransportError(f"cannot connect to jump host {address}:{port}: {_reason(exc)}") from exc
        self.connects += 1
        skip_ignore_padding(conn)
        return conn

    def _from_ssh_config(self, address: str, user: str | None) -> "_SshConfigEntry":
        """What ~/.ssh/config says for `address` (Port, ProxyJump), the way ssh and asyncssh read it."""
        path = Path("~", ".ssh", "config").expanduser()
        if not self.options.ssh_config or not os.access(path, os.R_OK):
            return _SshConfigEntry(22, None)
        try:
            local_user = getpass.getuser()
        except (KeyError, OSError):
            local_user = os.environ.get("USER", "root")
        cfg = asyncssh.config.SSHClientConfig.load(None, [path], False, False, False, local_user,
                                                   user if user else (), address, ())
        jump = cfg.get("ProxyJump")
        return _SshConfigEntry(int(cfg.get("Port", 22) or 22),
                               jump if isinstance(jump, str) and jump.lower() != "none" else None)

    async def _hold_pty(self, jump: asyncssh.SSHClientConnection) -> None:
        """Keep a pty session open on the jump host, so its sshd turns Nagle off on our connection.

        OpenSSH sets TCP_NODELAY only for interactive (pty) sessions; a jump connection that
        only carries tunnels otherwise waits on delayed ACKs, ~40 ms per round trip. Measured in
        the lab: a command through the jump took 44 ms without this, 4.6 ms with it.
        """
        if not self.options.jump_nodelay:
            return
        try:
            self._jump_ptys.append(await jump.create_process("exec cat >/dev/null", term_type="dumb"))
        except (asyncssh.Error, OSError):
            pass  # PermitTTY no: slower, still correct

    def _direct(self, tunnel: Any) -> Any:
        """What asyncssh connects over, with writes batched per loop pass (see batched_tcp): straight over TCP
        (`tunnel` is `()`), or inside the jump connection `tunnel` (every host's packets share it). Straight
        over TCP with `ssh_config: true` stays asyncssh's own connect, which honours a ProxyCommand in
        ~/.ssh/config that a tunnel object would skip."""
        if isinstance(tunnel, tuple):
            return tunnel if self.options.ssh_config else BatchedTcp()
        return BatchedTcp(via=tunnel)

    def _connect_kwargs(self, user: str | None, key: str | None = None) -> dict[str, Any]:
        o = self.options
        kwargs: dict[str, Any] = {
            # Never None: that would switch host-key checking off.
            "known_hosts": self._known_hosts(),
            "keepalive_interval": o.keepalive_interval,
            "keepalive_count_max": o.keepalive_count_max,
            "connect_timeout": o.connect_timeout,
            "config": () if o.ssh_config else None,
            "encryption_algs": ENCRYPTION_ALGS,
        }
        keys = [str(Path(k).expanduser()) for k in ((key,) if key else o.client_keys)]
        if keys:
            kwargs["client_keys"] = keys
        if not o.agent:
            kwargs["agent_path"] = None
        if user:
            kwargs["username"] = user
        return kwargs

    def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        """The known_hosts file, parsed once while it stays the same file with the same contents. Given as a
        path, asyncssh parsed the whole file for every connection: at a few hundred hosts, each with a line,
        that grew with the square of the fleet. Never None: that would switch host-key checking off."""
        try:
            st = self.known_hosts.stat()
        except OSError:
            return asyncssh.import_known_hosts("")  # no file: no host is known, every key is refused
        # ctime too: a rewrite in place with the mtime put back (cp -p, rsync -t --inplace) still changes it.
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._known_hosts_cache is None or self._known_hosts_cache[0] != stamp:
            self._known_hosts_cache = (stamp, asyncssh.read_known_hosts(str(self.known_hosts)))
        return self._known_hosts_cache[1]

    async def _presented_key(self, address: str, port: int, tunnel: Any) -> asyncssh.SSHKey | None:
        algs = [a.decode() for k in known_keys(self.known_hosts, address, port) for a in k.sig_algorithms]
        try:
            return await asyncssh.get_server_host_key(address, port, tunnel=tunnel, server_host_key_algs=algs or (),
                                                     config=None)
        except Exception:  # noqa: BLE001 - the refusal stands without the fingerprint
            return None

    async def fetch_host_key(self, address: str, port: int, algorithms: list[str], *, via_jump: bool) -> asyncssh.SSHKey | None:
        """The key a host presents now (for `hostkeys accept`); the jump host itself is asked directly."""
        tunnel: Any = ()
        if via_jump and self.options.jump:
            tunnel = await self._jump_connection()
        elif via_jump and self.options.ssh_config:
            spec = self._from_ssh_config(address, None).proxy_jump
            tunnel = await self._config_jump(spec) if spec else ()
        return await asyncssh.get_server_host_key(address, port, tunnel=tunnel,
                                                 server_host_key_algs=algorithms or (), config=None)

    # -- channels ----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def channel(self, host: Host, *, spare: bool = False) -> AsyncIterator[None]:
        """Hold one of the host's channel slots (`spare`: the one kept for kills)."""
        table, size = (self._spare, 1) if spare else (self._slots, self.options.max_channels)
        async with table.setdefault(host.name, asyncio.Semaphore(size)):
            yield

    async def with_connection(self, host: Host, work: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        """Run `work` on the host's connection; if the link turns out dead before it starts, retry once on a new one.

        Only for work that is safe to repeat when the first attempt never reached the host
        (opening a channel, an SFTP request).
        """
        attempt, refused = 1, 0
        while True:
            conn = await self.connection(host)
            try:
                return await work(conn)
            except LINK_ERRORS as exc:
                self.discard(host, conn)
                if attempt == 2:
                    raise TransportError(f"{host.name}: connection lost: {_reason(exc)}") from exc
                attempt += 1
            except asyncssh.ChannelOpenError as exc:
                if not conn.is_closed():
                    # sshd frees a closed session in its loop after reading what came with the close, so an
                    # open sent right after another channel closed can be refused ("open failed") though we
                    # stay under MaxSessions. Nothing ran: try again shortly, a few times.
                    refused += 1
                    if refused > len(CHANNEL_RETRY_DELAYS):
                        raise TransportError(f"{host.name}: could not open an SSH channel: {exc.reason}") from exc
                    await asyncio.sleep(CHANNEL_RETRY_DELAYS[refused - 1])
                    continue
                self.discard(host, conn)
                if attempt == 2:
                    raise TransportError(f"{host.name}: connection lost: {exc.reason}") from exc
                attempt += 1

    async def with_sftp(self, host: Host, work: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        """Run `work` on the host's SFTP session (one per connection, opened on first use; retried like above)."""
        async def on(conn: asyncssh.SSHClientConnection) -> T:
            link = self._links.get(host.name)
            if link is None or link.conn is not conn:
                raise asyncssh.ConnectionLost("connection replaced")
            return await work(link.sftp or await _sftp_of(conn, link))

        return await self.with_connection(host, on)

    async def warm(self, host: Host) -> None:
        """Open the host's connection and its SFTP session ahead of their use (a rollout's next batch): through a
        jump host far away, the ~10 round trips of the login and the session open come off the host's deploy."""
        await self.with_sftp(host, _nothing)

    # -- port forwarding ---------------------------------------------------
    async def forward(self, host: Host, port: int, remote_host: str = "127.0.0.1") -> tuple[str, int]:
        """A local address that reaches `remote_host:port` as seen from `host` (HTTP probes behind a jump).

        The listener lives as long as the host's connection; a new connection gets a new one.
        """
        link = await self._link(host)
        listener = link.forwards.get((remote_host, port))
        if listener is None:
            listener = await link.conn.forward_local_port("127.0.0.1", 0, remote_host, port)
            link.forwards[(remote_host, port)] = listener
        return "127.0.0.1", listener.get_port()

    async def close(self) -> None:
        for name, link in list(self._links.items()):
            self._forget(name, link)
            await link.conn.wait_closed()
        for pty in self._jump_ptys:
            pty.close()
        self._jump_ptys.clear()
        jumps, self._jumps, self._hops = list(self._jumps.values()) + self._hops[::-1], {}, []
        for conn in jumps:  # a chain's last hop first: it runs inside the ones before it
            conn.close()
            await conn.wait_closed()


def _split_hop(hop: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` or `[user@][v6]:port`, as in ssh's -J and ProxyJump."""
    user, _, rest = hop.strip().rpartition("@")
    if rest.startswith("["):
        address, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        address, _, port_text = rest.partition(":")
    return user or None, address, int(port_text) if port_text.isdigit() else None


@dataclass(frozen=True)
class _SshConfigEntry:
    port: int
    proxy_jump: str | None


CHANNEL_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.4)  # seconds; ~0.8 s in all before a refusal is reported


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"login refused ({exc.reason}); check the user and key"
    if isinstance(exc, (asyncssh.DisconnectError, asyncssh.ChannelOpenError)):
        return exc.reason or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _nothing(sftp: asyncssh.SFTPClient) -> None:
    return None


async def _sftp_of(conn: asyncssh.SSHClientConnection, link: _Link) -> asyncssh.SFTPClient:
    """The link's SFTP session, started once: every caller waits on the same start. A caller cancelled meanwhile
    (a warm-up of a batch that will not run) leaves it to finish and be kept for the next use: given up
    half-open, its channel would stay open, one of the host's MaxSessions gone for good. A start that failed
    is tried anew by the next caller."""
    starting = link.sftp_start
    if starting is None or (starting.done() and (starting.cancelled() or starting.exception() is not None)):
        starting = link.sftp_start = asyncio.ensure_future(conn.start_sftp_client())
        starting.add_done_callback(lambda task: task.cancelled() or task.exception())  # (retrieved: said to the callers)
    link.sftp = await asyncio.shield(starting)
    return link.sftp
