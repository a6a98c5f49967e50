# opsconsole's window into ansible-playbook: one JSON line per task start and result on stdout,
# read by opsconsole/playbook/fallback.py and turned into events on the console's bus.
from __future__ import annotations

DOCUMENTATION = r"""
name: events
type: stdout
short_description: one JSON line per task start and result, for opsconsole
description: Used by opsconsole when a play runs with ansible-playbook; not meant to be read by people.
"""

import json
import sys

from ansible.plugins.callback import CallbackBase

PREFIX = "@opsconsole "


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "opsconsole.builtin.events"

    def _say(self, **fields: object) -> None:
        sys.stdout.write(PREFIX + json.dumps(fields, default=str) + "\n")
        sys.stdout.flush()

    def v2_runner_on_start(self, host, task) -> None:
        self._say(event="start", host=host.get_name(), task=task.get_name())

    def _end(self, result, status: str) -> None:
        r = result._result
        changed = bool(r.get("changed"))
        msg = r.get("msg") or r.get("stderr") or ""
        if status == "ok" and changed:
            status = "changed"
        self._say(event="end", host=result._host.get_name(), task=result._task.get_name(), status=status,
                  rc=r.get("rc"), msg=str(msg)[:2000], ignored=bool(getattr(result._task, "ignore_errors", False)))

    def v2_runner_on_ok(self, result) -> None:
        self._end(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._end(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._end(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._end(result, "unreachable")

    def v2_on_file_diff(self, result) -> None:
        # --diff: the before/after as ansible-playbook prints it (a no_log task's result holds no diff).
        r = result._result
        diffs = [x["diff"] for x in r.get("results", []) if x.get("diff") and x.get("changed")] \
            if "results" in r else ([r["diff"]] if r.get("diff") and r.get("changed") else [])
        for diff in diffs:
            self._say(event="diff", host=result._host.get_name(), task=result._task.get_name(),
                      text=self._get_diff(diff))

    def v2_playbook_on_stats(self, stats) -> None:
        hosts = sorted(stats.processed.keys())
        self._say(event="stats", hosts={h: stats.summarize(h) for h in hosts})
