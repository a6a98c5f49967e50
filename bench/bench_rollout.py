"""Benchmark: the same rolling update of the lab's app hosts, by ansible-playbook and by opsconsole.

Both go through the lab's jump host, one host at a time (`serial: 1`), and do the
same per host: upload the artifact, unpack it, switch `current`, restart the app,
wait until its health endpoint answers 200. opsconsole's `roll` also runs its
health gate (healthy and reporting the new version) for every host. Prints both
wall times from one run and their ratio.

    sudo .venv/bin/python bench/bench_rollout.py [--attach]
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ssh import lab_bench, run_ansible_play  # noqa: E402
from bench.cpu import machine_cpu  # noqa: E402
from bench.delay import FarJump  # noqa: E402
from opsconsole.config.loader import load_config  # noqa: E402
from opsconsole.engine.engine import Engine  # noqa: E402
from opsconsole.events import Event, RolloutStep, TaskFinished  # noqa: E402
from tests.lab import Lab  # noqa: E402
from tests.lab.config import write_lab_config  # noqa: E402

PORT = 8080
PLAY = """\
- name: rolling update
  hosts: app
  serial: 1
  gather_facts: false
  tasks:
    - name: release directory
      file: {{path: "/srv/opsconsole/releases/{version}", state: directory}}
    - name: upload the artifact
      copy: {{src: "{artifact}", dest: "/srv/opsconsole/releases/{version}/app.tar.gz"}}
    - name: unpack
      shell: tar xzf app.tar.gz
      args: {{chdir: "/srv/opsconsole/releases/{version}"}}
    - name: point current at the release
      file: {{path: /srv/opsconsole/current, src: "/srv/opsconsole/releases/{version}", state: link}}
    - name: restart the app
      shell: |
        cd /srv/opsconsole; mkdir -p run log
        [ -f run/itrust.pid ] && kill -TERM -$(cat run/itrust.pid) 2>/dev/null; sleep 0.2
        setsid sh -c 'exec python3 current/app.py --port {port} --bind 0.0.0.0' >>log/itrust.log 2>&1 < /dev/null &
        echo $! > run/itrust.pid
    - name: health check
      uri: {{url: "http://127.0.0.1:{port}/health", status_code: 200}}
      register: health
      retries: 50
      delay: 0.2
      until: health.status == 200
"""


def build_artifact(work: Path, version: str) -> Path:
    src = work / f"app-{version}"
    shutil.copytree(ROOT / "opsconsole" / "demo" / "app", src)
    subprocess.run(["sh", "build.sh"], cwd=src, check=True, capture_output=True,
                   env={"OPSCONSOLE_VERSION": version, "PATH": "/usr/bin:/bin"})
    return src / "dist" / "app.tar.gz"


def run_ansible(lab: Lab, work: Path, far: FarJump | None = None) -> float:
    """The play, `serial: 1`; `far`: through bench/delay.py's slow link to the jump host."""
    artifact = build_artifact(work, "ansible1")
    return run_ansible_play(lab, work, PLAY.format(version="ansible1", artifact=artifact, port=PORT), "roll.yml",
                            ssh_config=far.ssh_config if far else None)


# Where a host's time goes: the deploy playbook's tasks by name (its first command opens the connection),
# and the rollout's own steps around it.
PHASES = {"release directory": "connect", "upload the artifact": "upload", "unpack": "unpack",
          "restart the app": "restart", "health check": "health check (playbook)"}
BREAKDOWN: dict[str, dict[str, float]] = {}
MACHINE_CPU: list[float] = []  # each opsconsole roll's machine_cpu(), in order


def breakdown(events: list[Event]) -> dict[str, dict[str, float]]:
    """Per host: seconds in drain, connect (+ first task), upload, unpack, restart, the playbook's health
    check, the rest of the playbook, and the rollout's health gate (healthy, reporting the new version)."""
    hosts: dict[str, dict[str, float]] = {}
    steps: dict[str, dict[str, float]] = {}
    for e in events:
        if isinstance(e, TaskFinished) and e.host:
            phase = PHASES.get(e.task, "other tasks")
            hosts.setdefault(e.host, {}).setdefault(phase, 0.0)
            hosts[e.host][phase] += e.duration
        elif isinstance(e, RolloutStep) and e.host:
            steps.setdefault(e.host, {}).setdefault(e.state, e.at)
    for host, at in steps.items():
        row = hosts.setdefault(host, {})
        row["drain"] = at["deploying"] - at["draining"]
        row["deploy (playbook)"] = at["gating"] - at["deploying"]
        row["health gate"] = at["done"] - at["gating"]
    return hosts


def print_breakdown(rows: dict[str, dict[str, float]]) -> None:
    columns = ["drain", "connect", "upload", "unpack", "restart", "health check (playbook)", "other tasks",
               "deploy (playbook)", "health gate"]
    print("where opsconsole's time goes, per host (s; connect = the first task, which opens the connection):")
    print("  " + f"{'host':8}" + "".join(f"{c.split(' (')[0][:12]:>13}" for c in columns))
    for host, row in rows.items():
        print("  " + f"{host:8}" + "".join(f"{row.get(c, 0.0):13.3f}" for c in columns))


async def run_opsconsole(lab: Lab, work: Path, roll_args: str = "", far: FarJump | None = None) -> float:
    """`roll itrust` (with `roll_args`, e.g. `--batch 10%`) over the lab's app hosts; returns its wall time.
    `far`: through bench/delay.py's slow link to the jump host."""
    engine = Engine(load_config(write_lab_config(work, lab, jump=(far.address, far.port) if far else None,
                                                 known_hosts=far.known_hosts if far else None)))
    engine.prepare()
    events: list[Event] = []
    engine.bus.subscribe(lambda e: events.append(e) if isinstance(e, (TaskFinished, RolloutStep)) else None)
    try:
        # build first, outside the timing: ansible gets a ready artifact too
        record = await engine.artifact_for(engine.config.apps["itrust"], None)
        start, cpu = time.perf_counter(), machine_cpu()
        outcome = await engine.execute(engine.parse(f"roll itrust --version {record.commit} {roll_args}".strip()))
        elapsed = time.perf_counter() - start
        MACHINE_CPU.append(machine_cpu() - cpu)
        if not outcome.ok:
            raise SystemExit(f"opsconsole roll over {len(lab.apps)} hosts failed: {outcome.message}")
        behind = [h.name for h in lab.apps if (Path(h.files) / "current").readlink().name != record.short]
        if behind:
            raise SystemExit(f"opsconsole roll said done but {', '.join(behind)} do not run {record.short}")
        BREAKDOWN.update(breakdown(events))
        return elapsed
    finally:
        await engine.execute(engine.parse("stop itrust"))
        await engine.close()


def main() -> int:
    def measure(lab: Lab, work: Path) -> tuple[float, float]:
        return run_ansible(lab, work), asyncio.run(run_opsconsole(lab, work))

    def report(lab: Lab, ansible: float, ours: float) -> None:
        print(f"rolling update of {len(lab.apps)} lab hosts, serial: 1, through the jump host")
        print(f"ansible-playbook:      {ansible:7.3f} s")
        print(f"opsconsole roll:       {ours:7.3f} s   (plus drain/health gate/version check per host)")
        print(f"ratio ansible/ours:    {ansible / ours:7.1f}x")
        print_breakdown(BREAKDOWN)

    return lab_bench("bench_rollout", measure, report)


if __name__ == "__main__":
    sys.exit(main())
