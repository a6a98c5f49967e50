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

    def wait_gone(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while text in (screen := self.screen()):
            assert time.monotonic() < deadline, f"{text!r} still on screen after {timeout}s; screen was:\n{screen}"
            time.sleep(0.2)
        return screen

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



def slow_config(tmp_path: Path, pause: float) -> Path:
    """The test config with a slow task in the deploy playbook: a rollout long enough to abort and quit."""
    from conftest import PLAYBOOKS

    (tmp_path / "templates").symlink_to(PLAYBOOKS / "templates")
    playbook = tmp_path / "slow-deploy.yml"
    slow = f"    - name: take a while\n      shell: sleep {pause}\n\n    - name: release directory\n"
    playbook.write_text((PLAYBOOKS / "itrust-deploy.yml").read_text().replace("    - name: release directory\n", slow, 1))
    cfg = write_config(tmp_path, count=3)
    cfg.write_text(cfg.read_text().replace(str(PLAYBOOKS / "itrust-deploy.yml"), str(playbook)))
    return cfg


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_the_operators_walk_in_tmux(tmp_path: Path, tmux: Tmux, size: tuple[int, int]) -> None:
    """Issue 15: the same tasks at 80x24 and 200x50, read back from the terminal: a command's output in a
    result view, roll and abort with the way on, zoom, the event log's kind filter, quit while a rollout
    runs with the summary printed after the console has closed."""
    width, height = size
    cfg = slow_config(tmp_path, pause=4.0)
    # COLUMNS/LINES from the test's environment would pin Textual to that size whatever the terminal is.
    command = f"env -u COLUMNS -u LINES {BINARY} --config {cfg}; echo CONSOLE-EXITED $?; sleep 60"

    def keys(*names: str) -> None:
        tmux("send-keys", "-t", "console", *names)

    def typed(text: str) -> None:
        tmux("send-keys", "-t", "console", "-l", text)

    def roll_until_deploying() -> None:
        keys("r")
        tmux.wait_for("(y)")
        keys("y")
        tmux.wait_for("⟳ deploy", timeout=90)

    def fits(screen: str) -> None:
        lines = screen.splitlines()
        assert len(lines) <= height and max(len(line) for line in lines) <= width, screen

    try:
        tmux("new-session", "-d", "-s", "console", "-x", str(width), "-y", str(height), command)
        # A detached session keeps the server's default size (80x24) unless told otherwise.
        tmux("resize-window", "-t", "console", "-x", str(width), "-y", str(height))
        screen = tmux.wait_for("Canary split")
        deadline = time.monotonic() + 20
        while max(len(line) for line in screen.splitlines()) < width - 2:  # laid out at the full width
            assert time.monotonic() < deadline, screen
            time.sleep(0.2)
            screen = tmux.screen()
        fits(screen)

        # A command's output on screen, not a one-line summary: every host's line of `status itrust`.
        typed(":")
        tmux.wait_for("tab completes")  # the command line is open: what follows is typed into it
        typed("status itrust")
        keys("Enter")
        screen = tmux.wait_for("✔ status itrust")
        assert all(f"itrust-{i}" in screen for i in (1, 2, 3)) and "Fleet (1)" not in screen, screen
        keys("Escape")
        tmux.wait_for("Fleet (1)")

        # Roll, then abort midway: the way on is on the status line.
        roll_until_deploying()
        keys("a")
        tmux.wait_for("abort roll itrust")
        keys("y")
        screen = tmux.wait_for("aborted roll itrust", timeout=60)
        fits(screen)
        if width >= 200:
            assert "`roll resume itrust` finishes" in screen, screen

        # Zoom: at 80 columns the fleet's cut columns come into view.
        keys("z")
        tmux.wait_gone("Heartbeat log")
        screen = tmux.wait_for("itrust/app")
        assert "group/role" in screen, screen
        keys("z")
        tmux.wait_for("Heartbeat log")

        # The selection's logs: `l` on the fleet's host is that host's lines.
        keys("l")
        screen = tmux.wait_for("Events of host")
        keys("Escape")
        tmux.wait_for("Fleet (1)")
        # The event log (`l` where nothing is selected: the heartbeat pane), narrowed to commands with `k`.
        keys("3", "l")
        screen = tmux.wait_for("k kind")
        assert "drained" in screen, screen  # every kind: the rollout's steps too
        keys("k")
        tmux.wait_gone("drained")
        # The kind's lines are drawn a moment after the others go (a blank frame between, on a busy machine:
        # CI's parallel phase caught one); they must come, and the rollout's steps must stay away.
        screen = tmux.wait_for("▶ roll itrust")
        assert "▶ abort" in screen and "drained" not in screen, screen
        keys("Escape")
        tmux.wait_for("Fleet (1)")

        # Quit while a rollout runs: the dialog says per host what happens; the summary outlives the screen.
        roll_until_deploying()
        keys("q")
        screen = tmux.wait_for("work is running")
        assert "resumable" in screen, screen
        keys("y")
        screen = tmux.wait_for("CONSOLE-EXITED", timeout=60)
        assert "CONSOLE-EXITED 0" in screen, screen
        assert "opsconsole: quit while work ran; stopped: roll itrust" in screen, screen
        flat = screen.replace("\n", "")  # the shell wraps long lines at the terminal's width
        assert "`roll resume itrust` finishes" in flat and "untouched" in flat, screen
    finally:
        kill_services(tmp_path / "state")
