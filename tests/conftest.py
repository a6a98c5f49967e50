"""Shared fixtures: a demo-like config in a temp dir, and cleanup of every service it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"


def write_config(tmp: Path, *, count: int = 3, extra: str = "") -> Path:
    """A config like config.example.yaml, with its state and demo repo inside `tmp`."""
    cfg = tmp / "opsconsole.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: test
        state_dir: {tmp / 'state'}
        heartbeat:
          interval: 0.5s
        groups:
          itrust:
            provider: local
            role: app
            count: {count}
        apps:
          itrust:
            group: itrust
            repo: {tmp / 'repo'}
            demo_repo: true
            branch: production
            build:
              commands: [sh build.sh]
              artifact: dist/app.tar.gz
              timeout: 60s
            deploy:
              playbook: {PLAYBOOKS / 'itrust-deploy.yml'}
            service:
              command: {sys.executable} current/app.py --port {{{{ port }}}}
            health:
              path: /health
            vars:
              health_timeout: 3s
        """) + extra)
    return cfg


def write_secret(path: Path, text: str) -> Path:
    """A secret file as an operator makes one (`umask 077`): the console and the proxy refuse one open to others."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def kill_services(state_dir: Path) -> None:
    """Stop every process a test left running from a pid file under `state_dir`."""
    for pid_file in state_dir.glob("hosts/*/run/*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)


def kill_strays(root: Path, program: str | None = None) -> None:
    """SIGKILL every process (running `program` only, if given) whose working directory is under `root`:
    the commands of a console a test killed live on, orphaned, and would outlast the test."""
    root = root.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue  # gone, or not ours to look at
        if (cwd == root or root in cwd.parents) and program in (None, Path(argv0).name):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def one_load_at_a_time():
    """Hold /tmp/opsconsole-load.lock for a load-test module (`pytestmark = pytest.mark.usefixtures(...)`); the
    benches run under `flock` of it, so two load runs on one machine take turns instead of skewing each other."""
    import fcntl

    with open("/tmp/opsconsole-load.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        yield


@pytest.fixture
def demo_config(tmp_path: Path):
    cfg = write_config(tmp_path)
    yield cfg
    kill_services(tmp_path / "state")


def git(repo: Path, *args: str) -> str:
    import subprocess

    env = {**os.environ, "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def commit_file(repo: Path, name: str, content: str, message: str, branch: str = "production") -> str:
    """Commit a change on `branch` of a working repo (the demo repo has it checked out); returns the sha."""
    current = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    if current != branch:
        try:
            git(repo, "checkout", "-q", branch)
        except Exception:
            git(repo, "checkout", "-q", "-b", branch)
    (repo / name).write_text(content)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    sha = git(repo, "rev-parse", "HEAD")
    if current != branch:
        git(repo, "checkout", "-q", current)
    return sha


async def roll_then_abort(engine, ready: Callable[[], bool], command: str = "roll itrust"):  # type: ignore[no-untyped-def]
    """Run `command` on `engine`, `abort` it once `ready()` holds (within 60 s), and return the roll's outcome."""
    roll = asyncio.ensure_future(engine.execute(engine.parse(command)))
    async with asyncio.timeout(60):
        while not ready():
            await asyncio.sleep(0.05)
    aborted = await engine.execute(engine.parse("abort"))
    assert aborted.ok, aborted.message
    return await roll


def process_gone(pid: int, within: float = 3.0) -> bool:
    """True once `pid` no longer runs (gone, or a zombie nobody reaped yet: it runs no code)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def pytest_collection_finish(session: pytest.Session) -> None:
    # The install test's wheel and venv take ~40 s to build: start now, beside the other tests.
    # Not in a pytest-xdist worker (each collects every test): there the other workers run beside the build.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(item.nodeid.startswith("tests/test_install.py") for item in session.items):
        from tests import install_build

        install_build.start(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests import install_build

    install_build.finish(config)


# Load and timing tests that need the machine to themselves: `make test` runs them after the parallel phase.
EXCLUSIVE_MODULES = ("test_proxy_overload", "test_contract_crowd", "test_traffic_contract", "test_zero_drop", "test_canary_console")


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker and before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.lab.fixtures import uses_lab

    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else item.nodeid
        if module in EXCLUSIVE_MODULES:
            item.add_marker(pytest.mark.exclusive)
        # One worker per module (its module fixtures are built once) and one for the SSH lab (one lab per
        # machine: its lock is held by the process that built it).
        item.add_marker(pytest.mark.xdist_group("lab" if uses_lab(item) else module))
