"""CPU clocks the benches read: the whole machine's, this process's, and its reaped children's."""

from __future__ import annotations

import os
import resource


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy, all cores (/proc/stat): the lab's hosts share its cores
    with the controller, so this is everything a roll costs, the apps it starts included."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq: steal (time the hypervisor gave elsewhere) is not ours
    return (sum(fields[:7]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that have been reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
