"""What a rolling update costs on this machine whatever tool runs it: the floor under bench_scale's figures.

Every deploy tool pays, per host, for the app's own stop and start (here a Python app: ~50 ms of CPU) and for
sshd's side of one SSH connection (a fork and re-exec of sshd, the key exchange, the login). On a machine
whose cores run the lab's hosts and the controller alike, the fastest a roll of N hosts can go is that
floor's CPU spread over every core, with no tool work at all. bench_scale prints it beside the measured
times, so a ratio target can be judged against what the machine allows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import children_cpu, machine_cpu, own_cpu
from bench.procs import free_port, stop, wait_port
from opsconsole.config.loader import load_config
from opsconsole.engine.engine import Engine
from opsconsole.hosts import Host
from tests.lab import Lab
from tests.lab.config import write_lab_config

# What the lab's sessions find as `python3` (sshd's default PATH), so the app starts as it does on a host.
SESSION_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Floor:
    app_ms: float  # CPU of one stop and start of the app (started `parallel` at once, like a batch)
    connect_ms: float  # CPU of one SSH connection opened through the jump host and closed, but for the client's
    client_ms: float  # the client's own (ours: asyncssh), not in the floor: another tool has another client
    cores: int

    @property
    def per_host_ms(self) -> float:
        return self.app_ms + self.connect_ms

    def best_wall(self, hosts: int) -> float:
        """Seconds the floor alone takes for `hosts` on every core, busy all the time."""
        return self.per_host_ms * hosts / 1000 / self.cores


def app_cpu(artifact: Path, work: Path, *, parallel: int = 10, rounds: int = 3) -> float:
    """Milliseconds of CPU one start-then-stop of the app costs: `parallel` copies started at once (a batch),
    each waited for until it listens, then sent TERM and reaped, `rounds` times."""
    unpacked = work / "floor-app"
    unpacked.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(artifact)], cwd=unpacked, check=True)  # as the hosts unpack it
    python = shutil.which("python3", path=SESSION_PATH)
    if python is None:
        raise SystemExit("python3 is not on the lab sessions' PATH")
    before = children_cpu()
    for _ in range(rounds):
        ports = [free_port() for _ in range(parallel)]
        procs = [subprocess.Popen([python, "app.py", "--port", str(port), "--bind", "127.0.0.1"], cwd=unpacked,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for port in ports]
        try:
            for port, proc in zip(ports, procs):
                wait_port(port, proc, "the app")
        finally:
            for proc in procs:
                stop(proc)
    return (children_cpu() - before) * 1000 / (rounds * parallel)


async def connect_cpu(lab: Lab, work: Path, *, parallel: int = 10) -> tuple[float, float]:
    """Milliseconds of CPU one SSH connection to an app host costs, opened through the jump host (as the rolls
    do, `parallel` at a time) and closed: the machine's but this process's (sshd's fork, re-exec, key
    exchange and login, the jump host's relaying), and this process's (the client). The jump connection is
    opened before the count starts: a roll opens it once, not per host."""
    work.mkdir(parents=True, exist_ok=True)
    engine = Engine(load_config(write_lab_config(work, lab)))
    engine.prepare()
    try:
        hosts = [host for host in map(engine.inventory.get, (h.name for h in lab.apps)) if host is not None]
        pool = engine.fleet.ssh_pool
        await pool.connection(hosts[0])  # the jump connection, and this host's
        pool.discard(hosts[0])
        gate = asyncio.Semaphore(parallel)

        async def once(host: Host) -> None:
            async with gate:
                await pool.connection(host)

        start, client = machine_cpu(), own_cpu()
        await asyncio.gather(*(once(h) for h in hosts))
        for host in hosts:
            pool.discard(host)
        await asyncio.sleep(1.0)  # sshd's side ends once the close reaches it: counted too
        client = own_cpu() - client
        return ((machine_cpu() - start - client) * 1000 / len(hosts), client * 1000 / len(hosts))
    finally:
        await engine.close()


def measure(lab: Lab, artifact: Path, work: Path) -> Floor:
    connect_ms, client_ms = asyncio.run(connect_cpu(lab, work / "floor-connect"))
    return Floor(app_ms=app_cpu(artifact, work), connect_ms=connect_ms, client_ms=client_ms,
                 cores=os.cpu_count() or 1)
