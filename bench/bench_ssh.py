"""Benchmark: the same 3-task play, `serial: 1`, over the lab's app hosts through the jump host,
with ansible-playbook and with opsconsole. Prints both wall times and their ratio from one run.

    sudo .venv/bin/python bench/bench_ssh.py            # brings the lab up and down itself
    sudo .venv/bin/python bench/bench_ssh.py --attach   # use a lab from `python -m tests.lab up`

ansible-core is installed into its own environment (BENCH_VENV, default
~/.cache/opsconsole-bench/venv) on first use, so it never enters opsconsole's.
Both sides start cold: Ansible with its default SSH multiplexing, opsconsole
with a fresh connection pool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsconsole.events import EventBus  # noqa: E402
from opsconsole.playbook.loader import load_playbook  # noqa: E402
from opsconsole.playbook.runner import PlaybookRunner  # noqa: E402
from opsconsole.transport.pool import SshPool  # noqa: E402
from opsconsole.transport.ssh import SshTransport  # noqa: E402
from tests.lab import Lab, LabConfig  # noqa: E402
from tests.lab.fixtures import _take_lab_lock  # noqa: E402  (the lab tests' machine-wide lock)
from tests.lab.inventory import lab_host, ssh_options  # noqa: E402

BENCH_VENV = Path(os.environ.get("BENCH_VENV", Path.home() / ".cache" / "opsconsole-bench" / "venv"))

PLAY = """\
- name: bench
  hosts: app
  serial: 1
  gather_facts: false
  tasks:
    - name: who
      command: hostname
    - name: a file
      copy:
        content: "bench {{ inventory_hostname }}\\n"
        dest: /srv/opsconsole/bench.txt
    - name: read it
      shell: cat /srv/opsconsole/bench.txt
"""


def ansible_playbook() -> Path:
    exe = BENCH_VENV / "bin" / "ansible-playbook"
    if not exe.exists():
        print(f"installing ansible-core into {BENCH_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return exe


def run_ansible_play(lab: Lab, work: Path, play: str, name: str = "play.yml", env: dict[str, str] | None = None,
                     ssh_config: Path | None = None) -> float:
    """Run `play` over the lab's app hosts (group `app`) through the jump host; returns the wall time.

    `env`: more ANSIBLE_* settings (forks, pipelining …) on top of the defaults below. `ssh_config`: another
    than the lab's (bench/delay.py's, to a jump host far away).
    """
    (work / name).write_text(play)
    hosts = "\n".join(f"{h.name}" for h in lab.apps)
    (work / "inventory.ini").write_text(textwrap.dedent(f"""\
        [app]
        {hosts}
        [app:vars]
        ansible_user={lab.user}
        ansible_python_interpreter=/usr/bin/python3
        ansible_ssh_common_args=-F {ssh_config or lab.ssh_config}
        """))
    return time_ansible(["-i", str(work / "inventory.ini"), str(work / name)], work, env)


ANSIBLE_LIMIT = 1800.0  # seconds: a run that hangs (a lab host that stopped answering) ends the bench, said


def time_ansible(args: list[str], work: Path, env: dict[str, str] | None = None) -> float:
    """The wall time of one `ansible-playbook ARGS` run in `work` (its temp files and ControlPersist sockets
    there; `env`: more ANSIBLE_* settings). A failed run ends the bench with its output; so does one past
    ANSIBLE_LIMIT, rather than hold the lab lock for ever. The masters it leaves are ended after the timing."""
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(work / "tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"), **(env or {})}
    argv = [str(ansible_playbook()), *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, timeout=ANSIBLE_LIMIT)
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"ansible-playbook did not finish within {ANSIBLE_LIMIT:g}s: {(exc.stdout or b'')[-2000:]!r}") from None
    finally:
        elapsed = time.perf_counter() - start
        close_masters(Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"]))
    if proc.returncode != 0 or "failed=0" not in proc.stdout:
        raise SystemExit(f"ansible-playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return elapsed


def close_masters(control_dir: Path) -> None:
    """End the ControlPersist masters a run left in `control_dir` (they would outlive it by up to 120 s, with the
    ProxyCommand ssh each holds)."""
    for sock in control_dir.glob("*") if control_dir.is_dir() else ():
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab-host"], capture_output=True, timeout=30)


def run_ansible(lab: Lab, work: Path) -> float:
    return run_ansible_play(lab, work, PLAY)


async def run_opsconsole(lab: Lab, work: Path) -> float:
    """The same play through opsconsole's PlaybookRunner over the pooled SSH transport."""
    start = time.perf_counter()
    pool = SshPool(ssh_options(lab))
    try:
        hosts = [lab_host(lab, h.name) for h in lab.apps]
        (work / "play-oc.yml").write_text(PLAY.replace("  gather_facts: false\n", "").replace("hosts: app", "hosts: itrust"))
        transports: dict[str, SshTransport] = {}
        runner = PlaybookRunner(EventBus(), lambda h: transports.setdefault(h.name, SshTransport(h, pool)))
        result = await runner.run(load_playbook(work / "play-oc.yml"), hosts, extra_vars={})
        assert result.ok, result
    finally:
        await pool.close()
    return time.perf_counter() - start


async def run_fallback(lab: Lab, work: Path) -> float:
    """The same play through opsconsole's ansible-playbook fallback (its inventory, callback and events)."""
    import yaml  # noqa: PLC0415

    from opsconsole.playbook.fallback import run_play  # noqa: PLC0415

    play = yaml.safe_load(PLAY.replace("hosts: app", "hosts: itrust"))[0]
    pool = SshPool(ssh_options(lab))
    try:
        hosts = [lab_host(lab, h.name) for h in lab.apps]
        transports: dict[str, SshTransport] = {}
        start = time.perf_counter()
        status, failures = await run_play(EventBus(), work, play, hosts,
                                          lambda h: transports.setdefault(h.name, SshTransport(h, pool)),
                                          ssh_options(lab), {}, lambda h: {})
        elapsed = time.perf_counter() - start
        assert not failures and set(status.values()) == {"ok"}, failures
    finally:
        await pool.close()
    return elapsed


def lab_bench(name: str, measure: Callable[[Lab, Path], tuple[float, float]], report: Callable[[Lab, float, float], None],
              parser: argparse.ArgumentParser | None = None) -> int:
    """Bring the lab up (or attach with --attach), measure ansible and opsconsole in one run, report, tear down.
    `parser`: the bench's own options (their values from parser.parse_args()); --attach is added to it."""
    parser = parser or argparse.ArgumentParser(description=f"{name}: ansible-playbook vs opsconsole over the SSH lab")
    parser.add_argument("--attach", action="store_true", help="use the lab that is already up")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(f"{name} needs root (the lab uses network namespaces)", file=sys.stderr)
        return 1
    ansible_playbook()  # install before timing anything
    if not args.attach:
        # up() first tears down whatever lab has the same names: wait for a test suite using one to finish.
        _take_lab_lock()
    lab = Lab.attach() if args.attach else Lab(LabConfig.from_env()).up()
    try:
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
            ansible, ours = measure(lab, Path(tmp))
        report(lab, ansible, ours)
    finally:
        if not args.attach:
            lab.down()
    return 0


def main() -> int:
    fallback: list[float] = []

    def measure(lab: Lab, work: Path) -> tuple[float, float]:
        ansible, ours = run_ansible(lab, work), asyncio.run(run_opsconsole(lab, work))
        fallback.append(asyncio.run(run_fallback(lab, work)))
        return ansible, ours

    def report(lab: Lab, ansible: float, ours: float) -> None:
        print(f"3 tasks x {len(lab.apps)} hosts, serial: 1, through the jump host")
        print(f"ansible-playbook: {ansible:7.3f} s")
        print(f"opsconsole:       {ours:7.3f} s   (PlaybookRunner)")
        print(f"ratio:            {ansible / ours:7.1f}x")
        print(f"fallback:         {fallback[0]:7.3f} s   (the same play with ansible-playbook through opsconsole: "
              f"{(fallback[0] / ansible - 1) * 100:+.0f}% against plain ansible-playbook)")

    return lab_bench("bench_ssh", measure, report)


if __name__ == "__main__":
    sys.exit(main())
