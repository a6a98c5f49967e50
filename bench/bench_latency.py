"""Benchmark: bench_rollout's rolling update with the console far from its fleet, against ansible-playbook.

The lab's app hosts, `serial: 1`, through the jump host, as bench_rollout; but the link between the console
and the jump host holds every chunk `--delay-ms` each way (bench/delay.py: a relay in user space, this kernel
has no netem). Each tool rolls the hosts over the direct link and over the slow one, in one run. Prints
both tools' times, their ratio at each delay, and the round trips each tool waits per host:
(time over the slow link - time over the direct one) / hosts / round-trip time. On a slow link those
waits are what a rollout is made of, so they are what to bring down.

    sudo flock /tmp/opsconsole-load.lock .venv/bin/python bench/bench_latency.py [--delay-ms 10] [--attach]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_rollout import BREAKDOWN, print_breakdown, run_ansible, run_opsconsole  # noqa: E402
from bench.bench_ssh import lab_bench  # noqa: E402
from bench.delay import DelayedLink, FarJump, far_jump  # noqa: E402
from tests.lab import Lab  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=10.0,
                        help="held each way on the slow link, in ms (default 10: a round trip of 20 ms)")
    delay = parser.parse_args().delay_ms / 1000
    direct: dict[str, float] = {}
    far_breakdown: dict[str, dict[str, float]] = {}

    def both(lab: Lab, work: Path, far: FarJump | None) -> tuple[float, float]:
        where = "far" if far else "near"
        (work / f"ansible-{where}").mkdir()
        (work / f"ours-{where}").mkdir()
        return (run_ansible(lab, work / f"ansible-{where}", far),
                asyncio.run(run_opsconsole(lab, work / f"ours-{where}", far=far)))

    def measure(lab: Lab, work: Path) -> tuple[float, float]:
        direct["ansible"], direct["ours"] = both(lab, work, None)
        BREAKDOWN.clear()  # the direct roll's
        with DelayedLink((lab.jump.address, 22), delay) as link:
            far = both(lab, work, far_jump(lab, link, work))
        far_breakdown.update(BREAKDOWN)
        return far

    def report(lab: Lab, ansible: float, ours: float) -> None:
        hosts, rtt = len(lab.apps), 2 * delay
        print(f"rolling update of {hosts} lab hosts, serial: 1, through the jump host (bench_rollout's)")
        print(f"{'link to the jump host':32} {'ansible-playbook':>17} {'opsconsole':>11} {'ratio':>7}")
        print(f"{'direct':32} {direct['ansible']:15.2f} s {direct['ours']:9.2f} s "
              f"{direct['ansible'] / direct['ours']:6.1f}x")
        print(f"{f'{delay * 1000:g} ms each way (RTT {rtt * 1000:g} ms)':32} {ansible:15.2f} s {ours:9.2f} s "
              f"{ansible / ours:6.1f}x")
        print("round trips waited per host (the slow link's extra time / hosts / RTT): "
              f"ansible-playbook {(ansible - direct['ansible']) / hosts / rtt:.0f}, "
              f"opsconsole {(ours - direct['ours']) / hosts / rtt:.0f}")
        print("over the slow link:")
        print_breakdown(far_breakdown)

    return lab_bench("bench_latency", measure, report, parser)


if __name__ == "__main__":
    sys.exit(main())
