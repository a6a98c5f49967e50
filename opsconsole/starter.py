"""What `opsconsole init` writes: a commented starting config for one's own fleet, and its playbooks.

The fleet is the usual small one: static SSH hosts behind a bastion — an app group, a db
host, a proxy host running HAProxy or the embedded proxy — and an app built from a git URL.

The config passes `opsconsole --check` as written. Its placeholders are addresses and names
reserved for documentation (192.0.2.0/24 of RFC 5737, example.org of RFC 2606), so nothing
reaches a real machine before the user has filled them in, and each line to fill in carries
`# FILL IN`; `fill_in_lines` lists them for `init` to print. We chose placeholders that check
over ones that fail the check so that every later edit is checked on its own: an error from
`--check` is then always about the line just changed.

The playbooks are the bundled ones (opsconsole/bundled.py), copied with their play's `hosts:`
set to the group that runs them here, so they stay the same files the tests run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from opsconsole.bundled import bundled_path

PROXY_DRIVERS = ("haproxy", "embedded")
CONFIG_NAME = "opsconsole.yaml"
FILL_IN = "# FILL IN"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

_COLLECTION = "collections/ansible_collections/opsconsole/builtin"
# written path -> (bundled playbook, the group its play runs on; None = keep the playbook's own `hosts:`)
PLAYBOOKS: dict[str, tuple[str, str | None]] = {
    "playbooks/app-server.yml": ("app-server.yml", "app"),
    "playbooks/database.yml": ("database.yml", "db"),
    "playbooks/proxy-host.yml": ("proxy-host.yml", "proxy"),
    "playbooks/deploy.yml": ("itrust-deploy.yml", None),  # `hosts: all`: opsconsole names the hosts
    "playbooks/templates/app.env.j2": ("templates/app.env.j2", None),
    "playbooks/templates/opsconsole-proxy.service.j2": ("templates/opsconsole-proxy.service.j2", None),
    # opsconsole's own modules as a collection next to the playbooks, where ansible-playbook finds it.
    **{f"playbooks/{_COLLECTION}/{name}": (f"{_COLLECTION}/{name}", None)
       for name in ("galaxy.yml", "README.md", "meta/runtime.yml", "plugins/modules/service.py",
                    "plugins/modules/health.py", "plugins/action/service.py", "plugins/callback/events.py")},
}
_PLAY_HOSTS = re.compile(r"^(  hosts: )\S+$", re.MULTILINE)

CONFIG_HEAD = """\
# opsconsole config for your own fleet, written by `opsconsole init`.
#
# Lines marked FILL IN hold placeholders: they pass `opsconsole --config opsconsole.yaml --check`,
# but 192.0.2.x (RFC 5737) and example.org (RFC 2606) reach no real machine. Replace them, then
# check again. Every key is described in config.example.yaml of the opsconsole repository.
# Paths are relative to this file. Durations: 2.5, 30s, 250ms, 1m30s.

project: @PROJECT@        # names the state dir (~/.local/state/opsconsole/@PROJECT@) and the journal
# state_dir: ~/.local/state/opsconsole/@PROJECT@
readonly: false           # true: the console refuses every command that changes something

heartbeat:
  interval: 2.5s          # how often every host's health is probed (through the bastion)
  timeout: 2s
  fall: 3                 # failures in a row before a host is down
  rise: 2                 # successes in a row before it is up again

groups:
  # The app servers. `port` is where the app answers on each host (health checks, proxy backends).
  app:
    provider: static
    role: app
    provision: playbooks/app-server.yml   # `provision app`: runtime, directories, restart a deployed release
    hosts:
      - {name: app-1, address: 192.0.2.11, port: 8080, user: deploy}   # FILL IN: address, port, SSH user
      - {name: app-2, address: 192.0.2.12, port: 8080, user: deploy}   # FILL IN

  # The database host: MariaDB, provisioned by playbooks/database.yml.
  db:
    provider: static
    role: db
    provision: playbooks/database.yml
    vars:
      db_client_hosts: [192.0.2.11, 192.0.2.12]    # FILL IN: the app hosts' addresses (the only ones let in)
      db_password_env: OPSCONSOLE_DB_PASSWORD      # the app user's password is read from this variable here
      # db_name: app
      # db_user: app
    hosts:
      - {name: db-1, address: 192.0.2.21, user: deploy}                # FILL IN

  # The proxy host: one leg public, one on the private network; clients come in here.
  proxy:
    provider: static
    role: proxy
    provision: playbooks/proxy-host.yml
    vars:
      proxy_listen: 0.0.0.0:80
      proxy_backends: [192.0.2.11:8080, 192.0.2.12:8080]   # FILL IN: the app hosts' address:port
@PROXY_GROUP_VARS@    hosts:
      - {name: proxy-1, address: 192.0.2.31, user: deploy}             # FILL IN

apps:
  app:
    group: app
    repo: https://git.example.org/you/app.git    # FILL IN: a git URL (https://, ssh://, git@host:path) or a path
    branch: production                           # pushes to this branch are built
    poll_interval: 30s
    build:
      # Run in a clean checkout of each commit on this machine; any failing command fails the build.
      commands: [sh build.sh]                    # FILL IN: your build
      artifact: dist/app.tar.gz                  # FILL IN: what the build leaves, unpacked on each host by deploy.yml
      timeout: 10m
    deploy:
      playbook: playbooks/deploy.yml
      on_build: none                             # none, rolling or canary: what a successful build starts
    service:
      name: app                                  # pid file name on each host (run/app.pid, log/app.log)
      command: python3 current/app.py --port {{ port }} --bind 0.0.0.0   # FILL IN: how your app starts
    health:
      path: /health                              # GET this on each host's port; 200 = healthy
      status: 200
      version_field: version                     # JSON field of the answer naming the deployed version
    vars: {}

# Every SSH connection goes through the bastion; host keys are checked for it and for every host
# (`opsconsole hostkeys accept bastion.example.org`, then each host's name).
jump:
  host: bastion.example.org                      # FILL IN
  port: 22
  user: deploy                                   # FILL IN
  # key: ~/.ssh/id_ed25519                       # else the identity files below and the SSH agent

ssh:
  known_hosts: ~/.ssh/known_hosts
  # identity_files: [~/.ssh/id_ed25519]
  agent: true                                    # use the keys in $SSH_AUTH_SOCK
  # ssh_config: true                             # honour ~/.ssh/config (User, Port, IdentityFile, ProxyJump)

"""

PROXY_HAPROXY = """\
# The traffic proxy in front of the app: HAProxy on the proxy host, steered over SSH through its
# runtime API (socat on the host). The console changes weights and drains backends there.
# HAProxy and socat come from the distribution's packages (apt-get install haproxy socat) if
# playbooks/proxy-host.yml does not install them.
proxy:
  driver: haproxy
  haproxy:
    host: proxy-1                                # the inventory host HAProxy runs on
    stats_socket: /run/haproxy/admin.sock        # HAProxy's runtime API socket on that host
    config: /etc/haproxy/haproxy.cfg
  apps:
    app:
      listen: 0.0.0.0:80                         # where clients connect, on the proxy host
      pools:
        stable: {group: app, weight: 100}
        # canary: {group: app-canary, weight: 0} # add a canary group to steer a canary
      health: {path: /health, interval: 2s, timeout: 2s, fall: 2, rise: 2}
"""

PROXY_EMBEDDED = """\
# The traffic proxy in front of the app: the embedded proxy, `opsconsole proxy --config opsconsole.yaml`,
# a separate process from the console (traffic keeps flowing when the console is closed).
# The console reaches its admin API on loopback: run it where the console runs, or forward the port.
proxy:
  driver: embedded
  admin:
    listen: 127.0.0.1:0                          # loopback only; 0 = pick a free port (see runtime_file)
    token_env: OPSCONSOLE_PROXY_TOKEN            # the admin API's bearer token, from this variable
  runtime_file: proxy.json                       # the proxy writes its pid, admin URL and ports here
  apps:
    app:
      listen: 0.0.0.0:80                         # where clients connect
      split: request                             # request (weighted round robin) or sticky (a cookie)
      pools:
        stable: {group: app, weight: 100}
        # canary: {group: app-canary, weight: 0} # add a canary group to steer a canary
      health: {path: /health, interval: 1s, timeout: 2s, fall: 2, rise: 2}
"""

PROXY_GROUP_VARS = {
    "haproxy": "",
    "embedded": "      # proxy_command: run on the proxy host at `provision proxy`, e.g.\n"
                "      # proxy_command: opsconsole proxy --config opsconsole.yaml\n",
}

CONFIG_TAIL = """
canary:
  step: 10                                       # +/- change the canary weight by this many percent
  steps: [5, 20, 50, 100]
  hold: 30s
  max_error_rate: 0.01
"""


@dataclass(frozen=True)
class StarterFile:
    path: str  # relative to the target directory
    text: str


def project_name(directory: Path) -> str:
    """The directory's name when it makes a valid project name, else `fleet`."""
    name = directory.resolve().name
    return name if _NAME.match(name) else "fleet"


def starter_config(project: str, proxy: str) -> str:
    if proxy not in PROXY_DRIVERS:
        raise ValueError(f"unknown proxy {proxy!r} (choose: {', '.join(PROXY_DRIVERS)})")
    if not _NAME.match(project):
        raise ValueError(f"{project!r} is not a valid project name (letters, digits, '_', '.', '-'; "
                         "starting with a letter)")
    head = (CONFIG_HEAD.replace("@PROJECT@", project)
            .replace("@PROXY_GROUP_VARS@", PROXY_GROUP_VARS[proxy]))
    return head + (PROXY_HAPROXY if proxy == "haproxy" else PROXY_EMBEDDED) + CONFIG_TAIL


def starter_playbook(bundled: str, group: str | None) -> str:
    text = bundled_path("playbooks", *bundled.split("/")).read_text()
    if group is None:
        return text
    text, found = _PLAY_HOSTS.subn(rf"\g<1>{group}", text)
    if found != 1:  # a bundled playbook grew a second play or lost its `hosts:`: this module must follow
        raise RuntimeError(f"bundled playbook {bundled} has {found} play `hosts:` lines, expected 1")
    return text


def starter_files(project: str, proxy: str) -> list[StarterFile]:
    """Everything `init` writes, config first."""
    files = [StarterFile(CONFIG_NAME, starter_config(project, proxy))]
    files += [StarterFile(path, starter_playbook(bundled, group)) for path, (bundled, group) in PLAYBOOKS.items()]
    return files


def fill_in_lines(config_text: str) -> list[tuple[int, str]]:
    """(line number, what to fill in) for each FILL IN line of the config."""
    found = []
    for number, line in enumerate(config_text.splitlines(), start=1):
        if FILL_IN in line:
            value, _, note = line.partition(FILL_IN)
            found.append((number, f"{value.strip()}  {note.lstrip(': ').strip()}".rstrip()))
    return found


def existing(directory: Path, files: list[StarterFile]) -> list[Path]:
    """The files of `files` that already exist under `directory` (a dangling symlink counts)."""
    return [directory / f.path for f in files if os.path.lexists(directory / f.path)]


def write_starter(directory: Path, files: list[StarterFile]) -> list[Path]:
    """Create every file; none may exist (O_EXCL: a file that appeared meanwhile is not overwritten).

    On any failure the files this call created are removed again, so it writes all or nothing.
    """
    created: list[Path] = []
    try:
        for f in files:
            path = directory / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as out:
                created.append(path)
                out.write(f.text)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return created


__all__ = ["CONFIG_NAME", "PROXY_DRIVERS", "StarterFile", "existing", "fill_in_lines", "project_name",
           "starter_config", "starter_files", "starter_playbook", "write_starter"]
