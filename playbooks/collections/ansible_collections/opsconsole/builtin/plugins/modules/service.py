#!/usr/bin/python
# opsconsole's service under ansible-playbook: the same meaning as in opsconsole's native runner
# (opsconsole/playbook/modules.py with the SSH transport's start_service/stop_service/service_pid),
# so a play leaves the same pid file, log and running process whichever runner ran it.
from __future__ import annotations

DOCUMENTATION = r"""
module: service
short_description: Start, stop or restart a command as a detached service, with a pid file
description:
  - The process runs detached in its own session, its pid in C(run/NAME.pid) and its output appended
    to C(log/NAME.log) under the host root (the inventory variable C(host_root), else the login's home).
  - C(started) does nothing when the pid file names a live process; C(restarted) stops it first;
    C(stopped) sends TERM to its process group, then KILL after 10 seconds.
options:
  name: {description: The service name (pid file and log names)., type: str, required: true}
  state: {description: What to make true., type: str, required: true, choices: [started, stopped, restarted]}
  command: {description: The shell command that runs the service (needed for started and restarted)., type: str}
  chdir: {description: Directory to start it in, relative to the host root., type: str}
  env: {description: Extra environment variables., type: dict}
  port: {description: The TCP port it listens on; a port another program holds is refused before the start., type: raw}
"""

import os
import re
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def alive(pid):
    """As the transports' `alive`: the pid is a live session leader (the service's setsid), not a zombie
    and not a recycled pid of some other program."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[3] == str(pid)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(pid_file):
    try:
        with open(pid_file) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and alive(int(text)) else None


def port_holder(port):
    """Whether something listens on TCP `port` (any address), from /proc/net/tcp*: the same check as
    opsconsole/transport/ports.py."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == "0A" and cols[1].endswith(suffix):
                return True
    return False


def listens_soon(child, port):
    """True as soon as something listens on `port` while `child` lives (looked at every 20 ms for ~0.2 s).
    Alive first, as natively: a child that died while another program took the port is no service up."""
    for _ in range(10):
        if child.poll() is not None:
            return False
        if port_holder(port):
            return True
        time.sleep(0.02)
    return False


def stop(pid_file, timeout=10.0):
    pid = running(pid_file)
    if pid is None:
        if os.path.exists(pid_file):
            os.unlink(pid_file)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not group_alive(pid):
            break
    os.unlink(pid_file)
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", required=True, choices=["started", "stopped", "restarted"]),
            command=dict(type="str"), chdir=dict(type="str"), env=dict(type="dict"), port=dict(type="raw"),
            _root=dict(type="str", default="~"),
        ),
        required_if=[("state", "started", ["command"]), ("state", "restarted", ["command"])],
        supports_check_mode=True,
    )
    p = module.params
    name, state = p["name"], p["state"]
    if not _NAME.match(name):
        module.fail_json(msg=f"bad service name {name!r}")
    root = os.path.expanduser(p["_root"])
    pid_file, log_file = os.path.join(root, "run", f"{name}.pid"), os.path.join(root, "log", f"{name}.log")
    port = None
    if p["port"] not in (None, ""):
        text = str(p["port"]).strip()
        if not text.isdigit() or not 0 < int(text) < 65536:
            module.fail_json(msg=f"service {name}: port {text!r} is not a TCP port (1-65535)")
        port = int(text)
    pid = running(pid_file)
    if state == "stopped":
        if module.check_mode or pid is None:
            module.exit_json(changed=pid is not None, msg="was not running" if pid is None else "stopped")
        stop(pid_file)
        module.exit_json(changed=True, msg="stopped")
    if state == "started" and pid is not None:
        module.exit_json(changed=False, pid=pid, msg=f"{name} already running (pid {pid})")
    if module.check_mode:
        module.exit_json(changed=True)
    if pid is not None:
        stop(pid_file)
    if port is not None and port_holder(port):
        module.fail_json(msg=f"cannot start {name}: port {port} on {os.uname().nodename} is already in use "
                             "by another program")
    for d in (os.path.dirname(pid_file), os.path.dirname(log_file)):
        os.makedirs(d, exist_ok=True)
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (p["env"] or {}).items() if _ENV_NAME.match(str(k))})
    workdir = os.path.join(root, p["chdir"]) if p["chdir"] else root
    # Its own session (setsid), so `stopped` kills its whole group and it outlives this module and ssh.
    with open(os.devnull, "rb") as devnull, open(log_file, "ab") as log:
        try:
            child = subprocess.Popen(["/bin/sh", "-c", p["command"]], cwd=workdir, env=env, stdin=devnull,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            module.fail_json(msg=f"could not start {name}: {exc}")
    tmp = f"{pid_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{child.pid}\n")
    os.replace(tmp, pid_file)
    # A service that dies at once (bad command, port taken) fails here, with its log, as natively. As natively
    # too, one that listens on its port within those 0.2 s is up at once: it is not waited out.
    if port is not None and listens_soon(child, port):
        module.exit_json(changed=True, pid=child.pid, msg=f"{name} running (pid {child.pid}), listening on {port}")
    if port is None:
        time.sleep(0.2)
    if child.poll() is not None or not alive(child.pid):
        try:
            with open(log_file, errors="replace") as f:
                tail = f.read().splitlines()[-10:]
        except OSError:
            tail = []
        module.fail_json(changed=True, msg=f"service {name} (pid {child.pid}) exited right after starting",
                         log=tail)
    module.exit_json(changed=True, pid=child.pid, msg=f"{name} running (pid {child.pid})")


if __name__ == "__main__":
    main()
