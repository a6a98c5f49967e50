"""The wheel and the clean venv test_install.py checks, built in the background from the start of the session.

Building them (pip wheel, a venv, pip install of every dependency from the index) takes about 40 s of
mostly one core; the suite's own tests are mostly one process, so on two cores the build runs beside
them instead of before test_install's first test. Started by tests/conftest.py only when a test of
test_install.py is selected; the result (or the build's error) is handed to its `installed` fixture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BUILD = pytest.StashKey["Future[Installed]"]()
_BASE = pytest.StashKey[Path]()


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user who has only the installed console: no dev venv, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "OPSCONSOLE_CONFIG")}
    env["XDG_STATE_HOME"] = str(home / "state")
    return env


class Installed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / "venv"
        self.bin = self.venv / "bin"
        self.work = base / "work"  # the user's directory: not the checkout
        self.work.mkdir(exist_ok=True)
        self.env = clean_env(base)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin / "opsconsole"), *args], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"opsconsole {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done


def copy_checkout(dest: Path) -> Path:
    """The files git knows (committed or not, minus ignored ones), so the build leaves the checkout clean."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    return dest


def build(base: Path) -> Installed:
    """Wheel from a copy of the checkout, a fresh venv without system site-packages, the wheel installed."""
    source = copy_checkout(base / "source")
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, cwd=base, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("opsconsole-*.whl")
    inst = Installed(base)
    subprocess.run([sys.executable, "-m", "venv", str(inst.venv)], check=True, timeout=120)
    # Dependencies come from the configured package index (the local mirror); the wheel is the file just built.
    subprocess.run([str(inst.bin / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                   check=True, cwd=base, env=inst.env, timeout=300, capture_output=True)
    shutil.rmtree(source)  # nothing may be found through the source tree after the install
    return inst


def start(config: pytest.Config) -> None:
    """Begin the build in a thread (once per session)."""
    if _BUILD in config.stash:
        return
    base = Path(tempfile.mkdtemp(prefix="opsconsole-install-"))
    future: Future[Installed] = Future()

    def work() -> None:
        try:
            future.set_result(build(base))
        except BaseException as exc:  # handed to the test, which reports it
            future.set_exception(exc)

    config.stash[_BASE] = base
    config.stash[_BUILD] = future
    threading.Thread(target=work, name="install-build", daemon=True).start()


def result(config: pytest.Config, timeout: float = 600) -> Installed:
    """The build started by start() (started now if it was not), once it is done."""
    start(config)
    try:
        return config.stash[_BUILD].result(timeout=timeout)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the install failed: {exc.cmd}\n{exc.stdout}\n{exc.stderr}", pytrace=False)


def finish(config: pytest.Config) -> None:
    """Remove the build's directory (after waiting for a build still running, so nothing writes into it)."""
    future = config.stash.get(_BUILD, None)
    if future is None:
        return
    try:
        future.exception(timeout=600)
    finally:
        shutil.rmtree(config.stash[_BASE], ignore_errors=True)
