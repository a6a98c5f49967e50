"""`--batch N` or `--batch N%`: the one rule for how many hosts a rollout takes at a time."""

from __future__ import annotations

import math

from opsconsole.errors import OperatorError
from opsconsole.units import is_count


class BatchError(OperatorError, ValueError):
    """A `--batch` value that is neither a number of hosts nor a share; the message says what to give."""


def check_batch(text: str) -> str:
    """`text` if it is a whole number of hosts (≥ 1) or a whole share (1%–100%); else BatchError."""
    number = text.removesuffix("%")
    if not is_count(number) or int(number) < 1 or (text.endswith("%") and int(number) > 100):
        raise BatchError(f"--batch {text!r}: give a number of hosts (e.g. 2) or a share (e.g. 25%)")
    return text


def batch_size(text: str | None, host_count: int) -> int:
    """`--batch 2` or `--batch 25%` → hosts per batch (at least 1); no `--batch`: one at a time."""
    if text is None:
        return 1
    check_batch(text)
    if text.endswith("%"):
        return max(1, math.floor(host_count * int(text[:-1]) / 100))
    return int(text)
