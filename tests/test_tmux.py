"""The real `opsconsole` binary in a real terminal (tmux) at 80x24: the four panes show, `q` quits.

This is the closest we get to an operator in an SSH session: a real pty, a real
TERM (tmux's own), keys sent as bytes. Each test runs its own tmux server on a
private socket and kills it afterwards, whatever happens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import kill_services, write_config

BINARY = Path(sys.executable).with_name("opsconsole")

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self) -> None:
        self.base = ["tmux", "-L", f"opsconsole-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "console")

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on screen after {timeout}s; screen was:\n{screen}")

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@pytest.fixture
def tmux():
    session = Tmux()
    yield session
    session.kill()


def test_console_at_80x24_in_tmux_shows_panes_and_quits(tmp_path: Path, tmux: Tmux) -> None:
    cfg = write_config(tmp_path, count=3)
    # The shell line after the console prints how it ended, so we can see `q` really quit it.
    command = f"{BINARY} --config {cfg}; echo CONSOLE-EXITED $?; sleep 60"
    try:
        tmux("new-session", "-d", "-s", "console", "-x", "80", "-y", "24", command)
        screen = tmux.wait_for("Canary split")
        for title in ("Fleet", "Build queue", "Heartbeat log", "Canary split"):
            assert title in screen
        rows = [line for line in screen.splitlines() if "itrust-1" in line]
        assert rows and "idle" in rows[0], screen
        assert len(screen.splitlines()) <= 24 and max(len(line) for line in screen.splitlines()) <= 80
        tmux("send-keys", "-t", "console", "q")
        screen = tmux.wait_for("CONSOLE-EXITED", timeout=20)
        assert "CONSOLE-EXITED 0" in screen
    finally:
        kill_services(tmp_path / "state")

