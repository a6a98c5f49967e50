"""What a playbook would do on a fleet, told before (or instead of) running it: `playbook run --check`."""

from __future__ import annotations

from typing import Iterable, Sequence

from opsconsole.hosts import Host
from opsconsole.playbook.model import Playbook, PlaybookResult, Task
from opsconsole.playbook.runner import select_hosts


def limit_hosts(terms: Iterable[str], hosts: Sequence[Host]) -> list[str]:
    """The host names `--limit` means: host names and group names (and `all`), as in a play's `hosts:`."""
    return [h.name for h in select_hosts(",".join(terms), hosts)]


def describe(playbook: Playbook, hosts: Sequence[Host], limit: Sequence[str] | None) -> str:
    """Each play: the hosts it selects (after --limit) and its tasks, blocks shown with their parts."""
    candidates = [h for h in hosts if limit is None or h.name in limit]
    lines = [f"{playbook.path}: {len(playbook.plays)} play(s); nothing was run"]
    for number, play in enumerate(playbook.plays, 1):
        chosen = [h.name for h in select_hosts(play.hosts, candidates)]
        serial = f", serial {play.serial}" if play.serial else ""
        how = "runs natively" if play.runner == "native" else play.why.split(": ", 1)[-1] + f" ({play.why.split(':')[0]})"
        lines.append(f"play {number} {play.name!r} on {', '.join(chosen) or 'no host'} "
                     f"(hosts: {play.hosts}{serial}): {how}")
        lines += _tasks(play.tasks, "  ")
        if play.handlers:
            lines.append("  handlers (when notified): " + ", ".join(h.name for h in play.handlers))
    return "\n".join(lines)


def _tasks(tasks: Sequence[Task], indent: str) -> list[str]:
    lines = []
    for task in tasks:
        if task.module == "block":
            lines.append(f"{indent}block {task.name!r}")
            for part in ("block", "rescue", "always"):
                if getattr(task, part):
                    lines.append(f"{indent}  {part}:")
                    lines += _tasks(getattr(task, part), indent + "    ")
            continue
        extra = f" [tags: {', '.join(task.tags)}]" if task.tags else ""
        lines.append(f"{indent}{task.name} ({task.module}){extra}")
    return lines


def check_lines(result: PlaybookResult, indent: str = "  ") -> list[str]:
    """What a --check run found, one line per host: the tasks that would change, those check mode could
    not tell about, or why the host could not be checked (unreachable, a task that failed)."""
    lines = []
    for host, status in result.host_status.items():
        if status == "failed":
            why = result.failures.get(host, "failed").splitlines()[0]
            lines.append(f"{indent}{host}: could not check: {why}")
            continue
        if status == "skipped":
            lines.append(f"{indent}{host}: not checked (an earlier host failed)")
            continue
        changes = result.changed_tasks.get(host, [])
        told = f"would change {len(changes)} task(s): {', '.join(changes)}" if changes else "nothing would change"
        unknown = result.check_skipped.get(host, [])
        if unknown:
            told += f"; not run in check mode (cannot tell): {', '.join(unknown)}"
        lines.append(f"{indent}{host}: {told}")
    return lines


__all__ = ["check_lines", "describe", "limit_hosts"]
