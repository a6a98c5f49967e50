"""Quitting while work runs: what the dialog promises, and what is printed once the console has closed.

Quitting stops the running commands the way `abort` does: a rollout's hosts not yet reached stay untouched,
the host the stop catches stays where it is (drained; the engine does not roll it back), and the rollout
is left resumable. The dialog says so before, per host; the exit summary says what really happened after,
reading the rollout journal and probing each host the stop caught, so a host that did switch to the new
version is reported as such instead of being promised away.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from opsconsole.rollouts.record import DONE, PENDING

if TYPE_CHECKING:
    from opsconsole.engine.engine import Engine

PROBE_SECONDS = 3.0  # a caught host that does not answer by then is reported as not answering


def quit_question(engine: "Engine") -> str:
    """The quit dialog's text: what runs, and exactly what quitting does to it."""
    running = [c.text() for c in engine.running()]
    lines = [f"{'; '.join(running)} {'is' if len(running) == 1 else 'are'} running.", ""]
    for app, runner in sorted(engine.rollouts.live.items()):
        hosts = runner.state.hosts
        done = [h for h, s in hosts.items() if s == DONE]
        untouched = [h for h, s in hosts.items() if s == PENDING]
        caught = _caught(hosts)
        lines.append(f"roll {app} to {runner.plan.version}:")
        if done:
            lines.append(f"  done, stay on {runner.plan.version}: {', '.join(done)}")
        if caught:
            lines.append(f"  stopped where they are, drained, not rolled back: {', '.join(caught)}")
        if untouched:
            lines.append(f"  never reached, left untouched: {', '.join(untouched)}")
        lines.append(f"  the rollout stays resumable: `roll resume {app}` finishes it, `rollback {app}` undoes it")
    lines += ["", "Quitting stops it like `abort`; the journal records where it stopped, and what happened "
              "is printed when the console has closed."]
    return "\n".join(lines)


def _caught(hosts: dict[str, str]) -> list[str]:
    """The hosts a stop caught mid-way: neither done nor untouched."""
    return [h for h, s in hosts.items() if s not in (DONE, PENDING)]


def rollout_apps(engine: "Engine") -> list[str]:
    """Apps whose rollout runs now: the ones the exit summary reports on host by host."""
    return sorted(engine.rollouts.live)


async def exit_summary(engine: "Engine", stopped: list[str], apps: list[str]) -> list[str]:
    """After the stop, before the engine closes: what each stopped command left, read back from the journal."""
    lines = [f"opsconsole: quit while work ran; stopped: {'; '.join(stopped)}"]
    for app in apps:
        state = engine.rollouts.journal.latest(app)
        if state is None:
            continue
        version = state.plan.version
        lines.append(f"roll {app} to {version}: {state.status}")
        caught = _caught(state.hosts)
        answers = dict(zip(caught, await asyncio.gather(*(_version_now(engine, h) for h in caught))))
        for host, s in state.hosts.items():
            if s == DONE:
                lines.append(f"  {host}: done, on {version}")
            elif s == PENDING:
                lines.append(f"  {host}: untouched (still {state.plan.from_versions.get(host) or 'no version'})")
            else:
                lines.append(f"  {host}: stopped while {s}, left drained; {answers[host]}")
        if (way_on := engine.rollouts.way_on(app)) is not None:
            lines.append(f"  {way_on}")
    return lines


async def _version_now(engine: "Engine", host: str) -> str:
    """What the host runs now, by asking it: the journal cannot know how far a stopped deploy got."""
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            sample = await engine.monitor.probe(host)
    except (asyncio.TimeoutError, KeyError) as exc:
        return f"did not answer a probe ({type(exc).__name__})"
    if not sample.ok:
        return f"does not answer: {sample.error or sample.status}"
    return f"answers with version {sample.version or 'unknown'}"
