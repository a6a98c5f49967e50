"""The SSH test lab: a jump host, N app hosts, a db host and a proxy host, each a real sshd in a namespace.

`Lab.up()` first removes whatever a killed run left (everything is named with
the prefix), then guards the range with an unreachable route, then builds. Its
state is written to `<dir>/lab.json` so `python -m tests.lab status|down` in
another process sees the same lab.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import net, sshd
from .net import PRIVATE, PROXY_PUBLIC, PUBLIC, LabError, Subnets

LAB_USER, LAB_UID = "ocl", 4242
MAX_APPS = 240  # app-N is host 10+N on the private /24
HOST_ROOT = "/srv/opsconsole"  # every lab host sees its own files dir here (a bind mount in its namespace)


@dataclass(frozen=True)
class LabConfig:
    cidr: str = "10.213.0.0/16"
    apps: int = 3
    prefix: str = "ocl-"
    dir: str = "/tmp/opsconsole-lab"

    @classmethod
    def fleet(cls, apps: int) -> "LabConfig":
        """A lab of `apps` app hosts that can stand beside the default one: its own names, range and dir.

        For fleet-size tests and benches (20 in the suite, 100 in bench_scale); the range is
        OPSCONSOLE_FLEET_LAB_CIDR (default 10.214.0.0/16).
        """
        return cls(cidr=os.environ.get("OPSCONSOLE_FLEET_LAB_CIDR", "10.214.0.0/16"), apps=apps, prefix="ocf-",
                   dir=os.environ.get("OPSCONSOLE_FLEET_LAB_DIR", "/tmp/opsconsole-fleet-lab"))

    @classmethod
    def from_env(cls) -> "LabConfig":
        e = os.environ
        return cls(cidr=e.get("OPSCONSOLE_LAB_CIDR", cls.cidr), apps=int(e.get("OPSCONSOLE_LAB_APPS", cls.apps)),
                   dir=e.get("OPSCONSOLE_LAB_DIR", cls.dir))


@dataclass
class LabHost:
    name: str  # jump, app-1 … app-N, db, proxy
    role: str
    ns: str
    address: str  # where sshd listens (public address for the jump, private for the rest)
    files: str  # the host's files dir, as this machine sees it
    root: str = HOST_ROOT  # the same dir as the host sees it (its opsconsole host root)
    public_address: str | None = None  # jump and proxy: the address the root namespace can reach
    lan_address: str = ""  # its address on the private network (for the jump host, not where sshd listens)
    sshd_pid: int | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.files).parent


@dataclass
class Lab:
    config: LabConfig = field(default_factory=LabConfig)
    hosts: dict[str, LabHost] = field(default_factory=dict)

    # -- paths -------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return Path(self.config.dir)

    @property
    def client_key(self) -> Path:
        return self.dir / "keys" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def user(self) -> str:
        return LAB_USER

    @property
    def jump(self) -> LabHost:
        return self.hosts["jump"]

    @property
    def apps(self) -> list[LabHost]:
        return [h for h in self.hosts.values() if h.role == "app"]

    @property
    def db(self) -> LabHost:
        return self.hosts["db"]

    @property
    def proxy(self) -> LabHost:
        return self.hosts["proxy"]

    # -- life cycle --------------------------------------------------------
    def up(self) -> "Lab":
        if not 1 <= self.config.apps <= MAX_APPS:
            raise LabError(f"lab size {self.config.apps}: give 1 to {MAX_APPS} app hosts (they share one /24)")
        self.down()  # stale namespaces, links, route and files of a killed run
        nets = Subnets.parse(self.config.cidr)
        conflicts = net.range_conflicts(nets.cidr, self.config.prefix)
        if conflicts:
            raise LabError(f"lab range {nets.cidr} is in use here ({'; '.join(conflicts)}); "
                           f"set OPSCONSOLE_LAB_CIDR to a free range")
        self._write_state(building=True)  # so a crash from here on is found and undone by the next down()
        net.add_guard_route(nets.cidr)
        try:
            numbers = {"jump": 1, "proxy": 4, "db": 5, **{f"app-{i}": 10 + i for i in range(1, self.config.apps + 1)}}
            self.hosts = {}
            for name, number in numbers.items():
                role = "app" if name.startswith("app-") else name
                self.hosts[name] = LabHost(
                    name=name, role=role, ns=f"{self.config.prefix}{name}", address=nets.addr(PRIVATE, number),
                    files=str(self.dir / name / "root"), lan_address=nets.addr(PRIVATE, number))
            self.jump.address = self.jump.public_address = nets.addr(PUBLIC, 2)
            self.proxy.public_address = nets.addr(PROXY_PUBLIC, 2)
            net.build(self.config.prefix, nets, numbers)
            self._files()
            for host in self.hosts.values():
                host.sshd_pid = sshd.start(host.ns, self.dir, host.state_dir, LAB_USER, host.name)
            self._write_state()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> list[str]:
        """Tear everything down; safe to call any number of times. Returns what was removed."""
        state = self._read_state()
        removed = net.destroy(self.config.prefix)
        for cidr in {self.config.cidr, state.get("config", {}).get("cidr", self.config.cidr)}:
            net.remove_guard_route(cidr)
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            removed.append(str(self.dir))
        self.hosts = {}
        return removed

    def status(self) -> dict[str, object]:
        state = self._read_state()
        hosts = state.get("hosts", {})
        return {
            "up": bool(hosts) and not state.get("building"),
            "namespaces": net.namespaces(self.config.prefix),
            "hosts": {n: {**h, "sshd": "running" if sshd.alive(h.get("sshd_pid")) else "stopped"} for n, h in hosts.items()},
            "ssh": f"ssh -F {self.ssh_config} app-1" if hosts else None,
        }

    @classmethod
    def attach(cls, config: LabConfig | None = None) -> "Lab":
        """The lab another process brought up (`make lab`), from its state file."""
        lab = cls(config or LabConfig.from_env())
        state = lab._read_state()
        if not state.get("hosts") or state.get("building"):
            raise LabError(f"no lab is up (no complete {lab.dir / 'lab.json'}); run `python -m tests.lab up`")
        lab.config = LabConfig(**state["config"])
        lab.hosts = {n: LabHost(**h) for n, h in state["hosts"].items()}
        return lab

    # -- faults and keys, for tests ---------------------------------------
    def stop_sshd(self, name: str, sessions: bool = True) -> None:
        """Stop a host's sshd; with `sessions` its open connections die too (the host is gone)."""
        host = self.hosts[name]
        sshd.stop(host.sshd_pid, sessions=sessions)
        host.sshd_pid = None
        self._write_state()

    def start_sshd(self, name: str) -> None:
        host = self.hosts[name]
        if not sshd.alive(host.sshd_pid):
            host.sshd_pid = sshd.start(host.ns, self.dir, host.state_dir, LAB_USER, host.name)
            self._write_state()

    def cut_link(self, name: str, up: bool = False) -> None:
        """Take a host's network link down (`up` brings it back): open connections hang, new ones time out."""
        net.ip("-n", self.hosts[name].ns, "link", "set", "lan", "up" if up else "down")

    def drop_connections(self, name: str) -> int:
        """Cut every SSH connection to a host (its sshd keeps listening); returns how many processes died."""
        return sshd.drop_sessions(self.hosts[name].sshd_pid or 0)

    def host_key(self, name: str) -> Path:
        return self.hosts[name].state_dir / "ssh_host_ed25519_key.pub"

    def host_fingerprint(self, name: str) -> str:
        return sshd.fingerprint(self.host_key(name))

    def rotate_host_key(self, name: str) -> str:
        """Give a host a new host key (restarting its sshd) — the 'changed key' case. Returns the new fingerprint."""
        host = self.hosts[name]
        sshd.stop(host.sshd_pid, sessions=True)
        sshd.keygen(host.state_dir / "ssh_host_ed25519_key", f"lab {name} rotated")
        host.sshd_pid = sshd.start(host.ns, self.dir, host.state_dir, LAB_USER, host.name)
        self._write_state()
        # The lab's own known_hosts follows, so other tests keep trusting the host; a test that wants
        # the "changed" case copies known_hosts before rotating.
        self.known_hosts.write_text("".join(self.known_hosts_line(n) + "\n" for n in self.hosts))
        return self.host_fingerprint(name)

    def known_hosts_line(self, name: str) -> str:
        key_type, key = self.host_key(name).read_text().split()[:2]
        return f"{self.hosts[name].address} {key_type} {key}"

    def exec(self, name: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in a host's network namespace (not over SSH): for assertions from the outside."""
        return net.in_ns(self.hosts[name].ns, *argv, check=check, timeout=timeout)

    def connect_direct(self, name: str, port: int = 22, timeout: float = 3.0) -> None:
        """Open a TCP connection from this (root) namespace; raises OSError when there is no route."""
        with socket.create_connection((self.hosts[name].address, port), timeout=timeout):
            pass

    # -- files -------------------------------------------------------------
    def _files(self) -> None:
        for sub in ("keys", "etc", "home/root", f"home/{LAB_USER}"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        sshd.keygen(self.client_key, "opsconsole-lab client")
        authorized = self.dir / "keys" / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        (self.dir / "etc" / "passwd").write_text(
            Path("/etc/passwd").read_text()
            + f"{LAB_USER}:x:{LAB_UID}:{LAB_UID}:opsconsole lab:{self.dir / 'home' / LAB_USER}:/bin/sh\n")
        (self.dir / "etc" / "group").write_text(Path("/etc/group").read_text() + f"{LAB_USER}:x:{LAB_UID}:\n")
        shadow = self.dir / "etc" / "shadow"
        shadow.write_text(Path("/etc/shadow").read_text() + f"{LAB_USER}:*:19000:0:99999:7:::\n")
        shutil.copymode("/etc/shadow", shadow)
        st = os.stat("/etc/shadow")
        os.chown(shadow, st.st_uid, st.st_gid)
        os.chown(self.dir / "home" / LAB_USER, LAB_UID, LAB_UID)
        known, ssh_cfg = [], [f"# ssh -F {self.ssh_config} HOST — written by tests/lab\n"]
        for host in self.hosts.values():
            host.state_dir.mkdir(parents=True, exist_ok=True)
            Path(host.files).mkdir(parents=True, exist_ok=True)
            os.chown(host.files, LAB_UID, LAB_UID)
            sshd.keygen(host.state_dir / "ssh_host_ed25519_key", f"lab {host.name}")
            sshd.write_config(host.name, host.address, host.state_dir, authorized)
            known.append(self.known_hosts_line(host.name))
            ssh_cfg.append(
                f"Host {host.name}\n  HostName {host.address}\n  User {LAB_USER}\n  IdentityFile {self.client_key}\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
                + ("" if host.name == "jump" else "  ProxyJump jump\n"))
        (self.dir / "etc" / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{h.address} {h.name}\n" for h in self.hosts.values()))
        self.known_hosts.write_text("\n".join(known) + "\n")
        self.ssh_config.write_text("\n".join(ssh_cfg))

    def _write_state(self, building: bool = False) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {"config": asdict(self.config), "building": building,
                 "hosts": {n: asdict(h) for n, h in self.hosts.items()},
                 "client_key": str(self.client_key), "known_hosts": str(self.known_hosts), "user": LAB_USER}
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.dir / "lab.json")

    def _read_state(self) -> dict:
        try:
            return json.loads((self.dir / "lab.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
