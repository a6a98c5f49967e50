"""One line of text per event: what the headless printer prints and the console's event log shows.

A part of its own (not a front end's helper), so every front end renders an event the same way.
"""

from __future__ import annotations

import time

from opsconsole.events import (
    BuildUpdate,
    CanaryState,
    CommandFinished,
    CommandStarted,
    Event,
    HealthChanged,
    HealthSample,
    HeartbeatCycle,
    HostState,
    Message,
    OutputLine,
    PlayFinished,
    PlayStarted,
    RolloutProgress,
    RolloutStep,
    TaskFinished,
    TaskStarted,
)


def format_event(event: Event) -> str | None:
    """The human line for an event, or None for events too chatty for a log."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    match event:
        case CommandStarted(text=text):
            return f"{stamp} ▶ {text}"
        case CommandFinished(text=text, ok=ok, message=message, duration=duration):
            mark = "✔" if ok else "✘"
            return f"{stamp} {mark} {text} ({duration:.1f}s){': ' + message if message else ''}"
        case Message(text=text, level=level, host=host):
            prefix = f"{host:<16} " if host else ""
            tag = "" if level == "info" else f"{level.upper()}: "
            return f"{stamp} {prefix}{tag}{text}"
        case PlayStarted(play=play, hosts=hosts):
            return f"{stamp} play {play!r} on {', '.join(hosts)}"
        case PlayFinished(play=play, ok_hosts=ok, failed_hosts=failed, skipped_hosts=skipped):
            return f"{stamp} play {play!r} done: ok={len(ok)} failed={len(failed)} skipped={len(skipped)}"
        case TaskStarted():
            return None
        case TaskFinished(host=host, task=task, status=status, message=message, duration=duration):
            extra = f": {message}" if status in ("failed", "cancelled") and message else ""
            return f"{stamp} {host:<16} {status:<7} {task} ({duration:.2f}s){extra}"
        case OutputLine(host=host, line=line):
            return f"{stamp} {host:<16} | {line}"
        case HostState(host=host, activity=activity, version=version, detail=detail):
            return f"{stamp} {host:<16} {activity}{' ' + version if version else ''}{' — ' + detail if detail and activity == 'failed' else ''}"
        case HealthSample():
            return None
        case HealthChanged(host=host, healthy=healthy, reason=reason):
            return f"{stamp} {host:<16} is {'UP' if healthy else 'DOWN'}{': ' + reason if reason else ''}"
        case HeartbeatCycle() | CanaryState():
            return None  # every cycle, every poll: the panes show them; an alert or panic is said as it turns
        case RolloutStep(rollout_id=rid, host=host, state=state, detail=detail):
            who = f"{host:<16}" if host else f"rollout {rid}"
            return f"{stamp} {who} {state}{': ' + detail if detail else ''}"
        case RolloutProgress(app=app):
            return f"{stamp} rollout {app}: {event.line()}"
        case BuildUpdate(build_id=bid, commit=commit, status=status, message=message):
            return f"{stamp} build {bid} {commit[:7]} {status}{': ' + message if message else ''}"
    return f"{stamp} {event.kind}"
