"""Benchmark: a rolling update at fleet size, opsconsole `roll --batch 10%` against ansible-playbook `serial: "10%"`.

Brings up a lab of 100 app hosts (network namespaces, one real sshd each, behind the jump host; the size is
`--hosts`), then runs the same rolling update on every host — upload the artifact, unpack, point `current`
at it, restart the app, health check — with:

- `opsconsole roll --batch 10%`, which runs the app's deploy playbook (playbooks/itrust-deploy.yml) on each
  host and then its per-host health gate (healthy and reporting the new version), at 10, 50 and 100 hosts,
  so the growth per batch shows;
- ansible-playbook, `serial: "10%"`, forks 10, pipelining and SSH ControlPersist on (a fair Ansible), twice:
  on that very playbook (the same tasks on every host; our service and health modules run as the shipped
  Ansible collection has them), and on a lean play of six tasks that does less than the playbook (no
  unpack marker, env file nor release record; a restart that kills, sleeps 0.2 s and starts unchecked).

Prints the wall times at full size, both ratios, and opsconsole's time per size, then the floor any tool
pays on this machine (bench/floor.py: the app's stop and start, sshd's side of a connection) and the best
ratio it leaves. Tears the lab down at
the end, on failure and on Ctrl-C/SIGTERM. Holds the machine-wide lab lock while the lab is up.

    sudo flock /tmp/opsconsole-load.lock .venv/bin/python bench/bench_scale.py [--hosts 100] [--sizes 10,50,100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from bench.bench_rollout import BREAKDOWN, MACHINE_CPU, PLAY, PORT, build_artifact, run_opsconsole  # noqa: E402
from bench.bench_ssh import ansible_playbook, run_ansible_play, time_ansible  # noqa: E402
from bench.cpu import own_cpu  # noqa: E402
from opsconsole.bundled import bundled_path  # noqa: E402
from opsconsole.config.loader import load_config  # noqa: E402
from opsconsole.engine.engine import Engine  # noqa: E402
from opsconsole.playbook.fallback import inventory  # noqa: E402
from opsconsole.transport.pool import SshPool  # noqa: E402
from opsconsole.transport.ssh import SshTransport  # noqa: E402
from opsconsole.pids import stat_fields  # noqa: E402
from tests.lab import Lab, LabConfig  # noqa: E402
from tests.lab.config import write_lab_config  # noqa: E402
from tests.lab.fixtures import _take_lab_lock  # noqa: E402  (the lab tests' machine-wide lock)
from tests.lab.inventory import lab_host  # noqa: E402
from tests.lab.inventory import ssh_options  # noqa: E402

PLAYBOOKS = ROOT / "playbooks"

# A fair Ansible: as many parallel connections as a batch has hosts, no temp-file round trips, kept connections.
ANSIBLE_ENV = {"ANSIBLE_FORKS": "10", "ANSIBLE_PIPELINING": "True",
               "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s"}


def first(lab: Lab, count: int) -> Lab:
    """The same lab seen with only its first `count` app hosts (jump, db and proxy stay)."""
    keep = {f"app-{i}" for i in range(1, count + 1)}
    return dataclasses.replace(lab, hosts={n: h for n, h in lab.hosts.items() if h.role != "app" or n in keep})


def run_ansible(lab: Lab, work: Path) -> float:
    """The lean play (bench_rollout's PLAY, six tasks), `serial: "10%"`: less than `roll` does on a host."""
    artifact = build_artifact(work, "ansible1")
    play = PLAY.format(version="ansible1", artifact=artifact, port=PORT).replace("serial: 1", 'serial: "10%"')
    return run_ansible_play(lab, work, play, "roll-scale.yml", env=ANSIBLE_ENV)


def run_ansible_shipped(lab: Lab, work: Path) -> float:
    """The very playbook `roll` runs on each host (playbooks/itrust-deploy.yml: its `serial: 1` made "10%"), by
    ansible-playbook with the vars opsconsole gives it and our two modules as the shipped Ansible collection
    has them: the same tasks on every host. Only the rollout's own gate (rise 2, the version) is ours alone."""
    work.mkdir(parents=True)
    version = "ansible2"
    artifact = build_artifact(work, version)
    text = (PLAYBOOKS / "itrust-deploy.yml").read_text()
    if "\n  serial: 1\n" not in text:
        raise SystemExit("playbooks/itrust-deploy.yml no longer says `serial: 1`: bench_scale must be told its batch")
    (work / "deploy.yml").write_text(text.replace("\n  serial: 1\n", '\n  serial: "10%"\n'))
    shutil.copytree(PLAYBOOKS / "templates", work / "templates")
    options = ssh_options(lab)
    pool = SshPool(options)  # the transports only say each host's root: nothing connects
    hosts = [lab_host(lab, h.name, port=PORT) for h in lab.apps]
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory(
        hosts, lambda h: SshTransport(h, pool), options,
        lambda h: {"ansible_python_interpreter": "/usr/bin/python3", "port": PORT, "health_timeout": "10s"})))
    extra = {"app": "itrust", "version": version, "commit": version, "artifact": str(artifact),
             "service_name": "itrust", "service_command": f"python3 current/app.py --port {PORT} --bind 0.0.0.0"}
    (work / "extra.json").write_text(json.dumps(extra))
    elapsed = time_ansible(["-i", str(work / "inventory.yml"), "-e", f"@{work / 'extra.json'}", str(work / "deploy.yml")],
                           work, {**ANSIBLE_ENV, "ANSIBLE_COLLECTIONS_PATH": str(bundled_path("playbooks", "collections"))})
    behind = [h.name for h in lab.apps if (Path(h.files) / "current").readlink().name != version]
    if behind:
        raise SystemExit(f"ansible-playbook said done but {', '.join(behind)} do not run {version}")
    return elapsed


async def stop_apps(lab: Lab, work: Path) -> None:
    """Every app host's app stopped (`stop itrust`), so the next tool starts from where ours did."""
    work.mkdir(parents=True)
    engine = Engine(load_config(write_lab_config(work, lab)))
    engine.prepare()
    try:
        outcome = await engine.execute(engine.parse("stop itrust"))
        if not outcome.ok:
            raise SystemExit(f"stop itrust between the runs failed: {outcome.message}")
    finally:
        await engine.close()


async def roll_batches(lab: Lab, work: Path) -> tuple[float, int]:
    """`roll itrust --batch 10%` over the lab's app hosts; returns (wall time, number of batches)."""
    work.mkdir(parents=True)
    elapsed = await run_opsconsole(lab, work, "--batch 10%")
    per_batch = max(1, len(lab.apps) // 10)
    return elapsed, -(-len(lab.apps) // per_batch)


def sshd_cpu(lab: Lab, role: str | None = None) -> float:
    """CPU seconds of the lab's sshds (of `role` only, if given) and of the sessions and commands they reaped:
    the hosts' side of a roll once its connections are closed (the app servers, started in their own
    session and reparented, are not in it)."""
    ticks = 0
    for host in lab.hosts.values():
        fields = stat_fields(host.sshd_pid) if host.sshd_pid and role in (None, host.role) else None
        if fields:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _tasks(playbook: Path) -> int:
    return sum(len(play.get("tasks") or []) for play in yaml.safe_load(playbook.read_text()))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100, help="app hosts in the lab (default 100)")
    parser.add_argument("--sizes", default="10,50,100", help="opsconsole roll sizes, comma separated")
    parser.add_argument("--no-ansible", action="store_true", help="only opsconsole's growth")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_scale needs root (the lab uses network namespaces)", file=sys.stderr)
        return 1
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {args.hosts})
    if not args.no_ansible:
        # installed before anything is timed, and started once: neither run below pays a cold start
        subprocess.run([str(ansible_playbook()), "--version"], capture_output=True, check=True)
    # SIGTERM unwinds like Ctrl-C, so the finally below tears the lab down either way.
    signal.signal(signal.SIGTERM, _interrupt)
    _take_lab_lock()  # the lab tests' machine-wide lock: a suite and this bench take turns (held to exit)
    lab = Lab(LabConfig.fleet(args.hosts))
    try:
        t0 = time.perf_counter()
        lab.up()
        print(f"lab of {len(lab.apps)} app hosts up in {time.perf_counter() - t0:.1f}s", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
            work = Path(tmp)
            ours: dict[int, tuple[float, int]] = {}
            cpu: dict[int, tuple[float, float, float, float]] = {}
            for size in sizes:
                before = own_cpu(), sshd_cpu(lab), sshd_cpu(lab, "jump")
                ours[size] = asyncio.run(roll_batches(first(lab, size), work / f"oc-{size}"))
                # the engine closed its connections: their sshd sessions have ended and been reaped
                cpu[size] = (own_cpu() - before[0], sshd_cpu(lab) - before[1], sshd_cpu(lab, "jump") - before[2],
                             MACHINE_CPU[-1])
                print(f"opsconsole roll, {size} hosts: {ours[size][0]:8.2f} s", flush=True)
            least = floor.measure(lab, build_artifact(work, "floor"), work)
            # Ansible after ours: its ControlPersist sessions end up to 120 s after its run, and their sshd
            # CPU would otherwise land in our rolls' figures.
            ansible = shipped = None
            if not args.no_ansible:
                shipped = run_ansible_shipped(lab, work / "ansible-shipped")
                print(f"ansible-playbook, the shipped playbook, {args.hosts} hosts: {shipped:8.2f} s", flush=True)
                asyncio.run(stop_apps(lab, work / "stop"))
                (work / "ansible").mkdir()
                ansible = run_ansible(lab, work / "ansible")
                print(f"ansible-playbook, the lean play, {args.hosts} hosts: {ansible:8.2f} s", flush=True)
    finally:
        t0 = time.perf_counter()
        lab.down()
        print(f"lab torn down in {time.perf_counter() - t0:.1f}s", flush=True)
    print()
    print("rolling update (upload, unpack, switch, restart, health check), batches of 10%, through the jump host")
    if ansible is not None and shipped is not None:
        full = ours[args.hosts][0]
        print("ansible-playbook: serial 10%, forks 10, pipelining, ControlPersist")
        print(f"  the shipped playbook (the same {_tasks(PLAYBOOKS / 'itrust-deploy.yml')} tasks roll runs):"
              f"   {shipped:8.2f} s")
        print(f"  the lean play (6 tasks: no unpack marker, env file, release record; restart unchecked):"
              f"   {ansible:8.2f} s")
        print(f"opsconsole roll --batch 10% (the shipped playbook + per-host gate: healthy, new version): {full:8.2f} s")
        print(f"ratio ansible/ours at {args.hosts} hosts: the same playbook {shipped / full:6.1f}x, "
              f"Ansible on the lean play {ansible / full:6.1f}x   (target >= 20x)")
    print("opsconsole's growth:")
    for size, (took, batches) in ours.items():
        print(f"  {size:4d} hosts: {took:7.2f} s  {batches:3d} batches of {max(1, size // 10):3d}  "
              f"{took / batches:5.2f} s per batch")
    if BREAKDOWN:  # the last roll's (the full size's): where a host's time goes, as a mean and the slowest
        phases = sorted({p for row in BREAKDOWN.values() for p in row})
        print(f"where a host's time goes at {args.hosts} hosts (s): phase, mean, slowest host")
        for phase in phases:
            took = [row.get(phase, 0.0) for row in BREAKDOWN.values()]
            print(f"  {phase:24} {sum(took) / len(took):6.3f} {max(took):6.3f}")
    print("CPU per host (s): the whole machine during the roll (the apps it started included), and, "
          "the stop after it included, the controller (this process), the lab's sshds and what they ran (of which "
          "the jump host):")
    for size, (controller, hosts, jump, machine) in cpu.items():
        print(f"  {size:4d} hosts: machine {machine / size:6.3f}  controller {controller / size:6.3f}  "
              f"sshds {hosts / size:6.3f}  (jump {jump / size:6.3f})")
    full_cpu = cpu[args.hosts][3] / args.hosts * 1000
    print(f"the floor any tool pays per host on this machine (bench/floor.py), CPU ms: the app's stop and start "
          f"{least.app_ms:.1f}, the servers' side of an SSH connection {least.connect_ms:.1f} (ours, the client's, "
          f"{least.client_ms:.1f} more): {least.per_host_ms:.1f}; opsconsole's whole roll {full_cpu:.1f}, so "
          f"{full_cpu - least.per_host_ms:.1f} beyond the floor")
    best = least.best_wall(args.hosts)
    print(f"the floor alone for {args.hosts} hosts on {least.cores} cores, all busy, no tool work: {best:.2f} s"
          + (f"; ansible/floor: the same playbook {shipped / best:.1f}x, the lean play {ansible / best:.1f}x, the most "
             f"any tool could show here" if ansible and shipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
