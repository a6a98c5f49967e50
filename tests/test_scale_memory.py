"""`scale G N` is remembered in the state dir until the config's `count` changes (opsconsole/engine/cloud.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from opsconsole.config.model import GroupConfig
from opsconsole.engine.cloud import ScaleMemory


def group(count: int) -> GroupConfig:
    return GroupConfig(name="itrust", provider="ec2", count=count)


def test_a_scaled_count_outlives_the_process_and_is_private(tmp_path: Path) -> None:
    ScaleMemory(tmp_path).remember("itrust", 5, 3)
    again = ScaleMemory(tmp_path)  # another console, or the next start
    assert again.count(group(3)) == 5 and again.scaled(group(3)) == 5
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o600


def test_a_changed_config_count_wins_and_forgets_the_scale(tmp_path: Path) -> None:
    memory = ScaleMemory(tmp_path)
    memory.remember("itrust", 5, 3)
    memory.remember("db", 2, 1)
    assert memory.count(group(4)) == 4  # the operator edited count: 3 → 4
    assert json.loads(memory.path.read_text()) == {"db": {"config_count": 1, "count": 2}}
    assert memory.count(group(3)) == 3  # forgotten for good, even if the config goes back


def test_scaling_back_to_the_config_count_or_nothing_remembered(tmp_path: Path) -> None:
    memory = ScaleMemory(tmp_path)
    assert memory.scaled(group(3)) is None and memory.count(group(3)) == 3
    memory.remember("itrust", 5, 3)
    memory.remember("itrust", 3, 3)
    assert memory.scaled(group(3)) is None


def test_an_unreadable_file_falls_back_to_the_config(tmp_path: Path) -> None:
    memory = ScaleMemory(tmp_path)
    memory.path.parent.mkdir(parents=True)
    memory.path.write_text("{not json")
    assert memory.count(group(3)) == 3
