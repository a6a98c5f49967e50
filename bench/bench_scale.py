"""Benchmark: a rolling update at fleet size, opsconsole `roll --batch 10%` against ansible-playbook `serial: "10%"`.

Brings up a lab of 100 app hosts (network namespaces, one real sshd each, behind the jump host; the size is
`--hosts`), then runs the same rolling update on every host — upload the artifact, unpack, point `current`
at it, restart the app, health check — with:

- ansible-playbook, `serial: "10%"`, forks 10, pipelining and SSH ControlPersist on (a fair Ansible);
- `opsconsole roll --batch 10%` (which also runs its per-host health gate: healthy and reporting the
  new version), at 10, 50 and 100 hosts, so the growth per batch shows.

Prints both wall times at full size, their ratio, and opsconsole's time per size, then the floor any tool
pays on this machine (bench/floor.py: the app's stop and start, sshd's side of a connection) and the best
ratio it leaves. Tears the lab down at
the end, on failure and on Ctrl-C/SIGTERM. Holds the machine-wide lab lock while the lab is up.

    sudo flock /tmp/opsconsole-load.lock .venv/bin/python bench/bench_scale.py [--hosts 100] [--sizes 10,50,100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from bench.bench_rollout import BREAKDOWN, MACHINE_CPU, PLAY, PORT, build_artifact, run_opsconsole  # noqa: E402
from bench.bench_ssh import ansible_playbook, run_ansible_play  # noqa: E402
from bench.cpu import own_cpu  # noqa: E402
from opsconsole.pids import stat_fields  # noqa: E402
from tests.lab import Lab, LabConfig  # noqa: E402
from tests.lab.fixtures import _take_lab_lock  # noqa: E402  (the lab tests' machine-wide lock)

# A fair Ansible: as many parallel connections as a batch has hosts, no temp-file round trips, kept connections.
ANSIBLE_ENV = {"ANSIBLE_FORKS": "10", "ANSIBLE_PIPELINING": "True",
               "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s"}


def first(lab: Lab, count: int) -> Lab:
    """The same lab seen with only its first `count` app hosts (jump, db and proxy stay)."""
    keep = {f"app-{i}" for i in range(1, count + 1)}
    return dataclasses.replace(lab, hosts={n: h for n, h in lab.hosts.items() if h.role != "app" or n in keep})


def run_ansible(lab: Lab, work: Path) -> float:
    artifact = build_artifact(work, "ansible1")
    play = PLAY.format(version="ansible1", artifact=artifact, port=PORT).replace("serial: 1", 'serial: "10%"')
    return run_ansible_play(lab, work, play, "roll-scale.yml", env=ANSIBLE_ENV)


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
        ansible_playbook()  # installed before anything is timed
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
            ansible = None
            if not args.no_ansible:
                (work / "ansible").mkdir()
                ansible = run_ansible(lab, work / "ansible")
                print(f"ansible-playbook, {args.hosts} hosts: {ansible:8.2f} s", flush=True)
    finally:
        t0 = time.perf_counter()
        lab.down()
        print(f"lab torn down in {time.perf_counter() - t0:.1f}s", flush=True)
    print()
    print("rolling update (upload, unpack, switch, restart, health check), batches of 10%, through the jump host")
    if ansible is not None:
        full = ours[args.hosts][0]
        print(f"ansible-playbook  serial 10%, forks 10, pipelining, ControlPersist: {ansible:8.2f} s")
        print(f"opsconsole roll   --batch 10% (+ per-host gate: healthy, new version): {full:8.2f} s")
        print(f"ratio ansible/ours at {args.hosts} hosts: {ansible / full:6.1f}x   (target >= 20x)")
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
          + (f"; ansible/floor: {ansible / best:.1f}x, the most any tool could show here" if ansible else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
