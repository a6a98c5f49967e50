"""One real OpenSSH sshd per lab host, each in its own network and mount namespace.

The mount namespace is where the lab keeps the machine untouched: a private
tmpfs on /run (sshd's privilege-separation dir /run/sshd lives there),
private writable overlays (their changes on that tmpfs) of /etc, the package
database, apt's lists and cache, /var/log, /opt, /home and /var/mail, so a
play's useradd or apt install stays on the host, the lab user `ocl` in its copies of /etc/passwd, /etc/group
and /etc/shadow (sudo's PAM account check wants a shadow entry), its own hostname, a sudoers
drop-in for it on a private /etc/sudoers.d, and a light /root so a root login
does not source the machine's heavy ~/.bashrc, and the host's own files dir
seen at /srv/opsconsole (the inventory's default host root), as on a real fleet. Every session sshd starts
inherits these mounts, so a lab host looks like a small separate server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .net import LabError

SSHD = "/usr/sbin/sshd"

SSHD_CONFIG = """\
# sshd for lab host {name}; written by tests/lab for one lab run
Port 22
Port 2222
ListenAddress {listen}
HostKey {host_key}
PidFile {state}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
AllowTcpForwarding yes
MaxSessions 10
MaxStartups 100:30:200
ClientAliveInterval 0
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""

# Runs as `sh -c` inside the new mount namespace, then becomes sshd (same pid).
MOUNT_AND_EXEC = """\
set -e
mount -t tmpfs -o mode=0755 ocl-run /run
mkdir -m 0755 /run/sshd
# Private writable copies (overlays whose changes live on this host's /run tmpfs) of what a play may
# change on a server: /etc (useradd replaces /etc/passwd by a rename, which a bind-mounted file refuses
# with EBUSY), the package database and apt's lists and cache, the logs dpkg and apt write, /opt. What a
# play does to users, groups and packages stays on this host, never reaches the machine. Without
# overlayfs, the old bind mounts for the lab user: the lab runs, only a play that changes accounts or
# packages cannot (tests that do check for the overlays first).
private() {{
  upper=/run/ocl-private$(echo "$1" | tr / _)
  mkdir -p "$upper/upper" "$upper/work"
  mount -t overlay -o "lowerdir=$1,upperdir=$upper/upper,workdir=$upper/work" ocl-private "$1"
}}
if private /etc; then
  cat "$LAB/etc/passwd" > /etc/passwd
  cat "$LAB/etc/group" > /etc/group
  cat "$LAB/etc/shadow" > /etc/shadow
  for dir in {private_dirs}; do [ ! -d "$dir" ] || private "$dir"; done
else
  mount --bind "$LAB/etc/passwd" /etc/passwd
  mount --bind "$LAB/etc/group" /etc/group
  mount --bind "$LAB/etc/shadow" /etc/shadow
fi
mount --bind "$LAB/etc/hosts" /etc/hosts
hostname "$LAB_HOSTNAME"
mount -t tmpfs -o mode=0755 ocl-sudoers /etc/sudoers.d
printf '%s ALL=(ALL) NOPASSWD: ALL\\n' "$LAB_USER" > /etc/sudoers.d/ocl-lab
chmod 0440 /etc/sudoers.d/ocl-lab
mount --bind "$LAB/home/root" /root
mount -t tmpfs -o mode=0755 ocl-srv /srv
mkdir /srv/opsconsole
mount --bind "$HOST_FILES" /srv/opsconsole
exec {sshd} -D -e -f "$CONFIG"
"""
# Besides /etc, the directories each lab host has its own writable copy of (see MOUNT_AND_EXEC).
# /home and /var/mail: useradd's default home and userdel -r's mail spool, for a play that names neither.
PRIVATE_DIRS = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt", "/var/log", "/opt", "/home", "/var/mail")


def keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def write_config(name: str, listen: str, state: Path, authorized_keys: Path) -> Path:
    config = state / "sshd_config"
    config.write_text(SSHD_CONFIG.format(name=name, listen=listen, host_key=state / "ssh_host_ed25519_key",
                                         state=state, authorized_keys=authorized_keys))
    return config


def start(ns: str, lab_dir: Path, state: Path, user: str, hostname: str, timeout: float = 10.0) -> int:
    """Start sshd for one host and wait until it listens; returns its pid."""
    log = state / "sshd.log"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LAB": str(lab_dir), "LAB_USER": user,
           "CONFIG": str(state / "sshd_config"), "LAB_HOSTNAME": hostname,
           "HOST_FILES": str(state / "root")}
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        # A new session so the sshd outlives `python -m tests.lab up` and a Ctrl-C at the terminal.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--propagation", "private", "--",
             "sh", "-c", MOUNT_AND_EXEC.format(sshd=SSHD, private_dirs=" ".join(PRIVATE_DIRS))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_bytes()[offset:].decode(errors="replace")
        if "Server listening on" in text:
            return proc.pid
        if proc.poll() is not None:
            raise LabError(f"sshd in {ns} exited with {proc.returncode}: {text.strip()[-500:]}")
        time.sleep(0.02)
    proc.kill()
    raise LabError(f"sshd in {ns} did not listen within {timeout:g}s (log {log})")


def stop(pid: int | None, sessions: bool = True) -> None:
    """Stop the listening sshd; with `sessions`, also every connection it serves (a host going down)."""
    if not pid:
        return
    victims = [pid] + (_descendants(pid) if sessions else [])
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def drop_sessions(pid: int) -> int:
    """Kill the per-connection sshd processes (and what they run) but keep the listener: a dropped link."""
    victims = _descendants(pid)
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(victims)


def _children(pid: int) -> list[int]:
    result = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            result += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return result


def _descendants(pid: int) -> list[int]:
    found, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(_children(p))
    return found


def _reap(pid: int, timeout: float = 10.0) -> None:
    """Until the killed sshd is dead (its port free for the next one); reaped if it is our child. A KILLed
    process lives on while the kernel tears it down, longer on a busy machine: giving up early (this waited
    1 s and said nothing) let a new sshd race the old one for port 22."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child (started by another process): a zombie is dead enough
            if not alive(pid):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd {pid} still alive {timeout:g}s after SIGKILL")
        time.sleep(0.01)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
