"""pytest wiring for the SSH lab: one lab per session, always torn down.

tests/conftest.py pulls these in with

    from tests.lab.fixtures import *  # noqa: F401,F403  (SSH lab: `lab` fixture, CI skip→fail)

Without root (a newcomer's laptop) lab tests skip with a one-line reason; with
CI=true a skipped lab test is reported as failed, so CI cannot go green
without the lab having run.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterator, NoReturn

import pytest

from .lab import Lab, LabConfig

__all__ = ["lab", "fleet_lab", "pool", "lab_unavailable", "skip_or_fail", "pytest_runtest_makereport", "pytest_collection_modifyitems"]


LAB_FIXTURES = ("lab", "fleet_lab")  # a test using any of these needs the machine-wide lab lock


def uses_lab(item: pytest.Item) -> bool:
    """The test needs the SSH lab: one of LAB_FIXTURES as defined here (directly or through another fixture).

    By definition, not by name: several modules have a `lab` fixture of their own (a local proxy rig, a mock
    Kubernetes API) that needs no lab; counted by name, ~70 s of them were queued behind the SSH lab's worker.
    """
    info = getattr(item, "_fixtureinfo", None)  # (pytest's, not public: without it, decide by name as before)
    if info is None:
        return any(name in getattr(item, "fixturenames", ()) for name in LAB_FIXTURES)
    for name in LAB_FIXTURES:
        # The last definition is the one the test gets; one that asks for its own name extends the one before.
        for fixturedef in reversed(info.name2fixturedefs.get(name) or ()):
            if fixturedef.func.__module__ == __name__:
                return True
            if name not in fixturedef.argnames:
                break
    return False


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "SSH lab tests need root (network namespaces); run as root or in CI"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            return f"SSH lab needs `{tool}` (apt-get install {package})"
    if not Path("/usr/sbin/sshd").exists():
        return "SSH lab needs /usr/sbin/sshd (apt-get install openssh-server)"
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a lab test with a one-line reason — or fail it under CI."""
    if _ci():
        pytest.fail(f"{reason} (CI=true: lab tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


_LOCK_PATH = "/tmp/opsconsole-lab.lock"
_holder = None  # the open lock file while this process holds the lab; released when the process ends


def _take_lab_lock():  # type: ignore[no-untyped-def]
    """Hold the machine-wide lab lock (waiting for another suite to finish with the lab), once per process."""
    global _holder
    if _holder is None:
        holder = open(_LOCK_PATH, "a")
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"\n(waiting for the SSH lab: another suite on this machine holds {_LOCK_PATH})", flush=True)
            fcntl.flock(holder, fcntl.LOCK_EX)
        _holder = holder
    return _holder


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only a run that keeps a lab test waits for the lab
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Wait for the lab here, before any test's timeout runs, rather than inside the first lab test's setup.
    # Not in a pytest-xdist worker: every worker collects every test, and only the one given the lab's
    # group may hold the lock (the lab fixture takes it there).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(uses_lab(item) for item in items) and lab_unavailable() is None:
        _take_lab_lock()


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield from _lab_up(LabConfig.from_env())


@pytest.fixture
async def pool(lab: Lab):  # type: ignore[no-untyped-def]
    """An SshPool to the session's lab (its options: the jump host, the lab's known_hosts and key), closed after."""
    from opsconsole.transport.pool import SshPool
    from .inventory import ssh_options
    p = SshPool(ssh_options(lab))
    yield p
    await p.close()


FLEET_LAB_APPS = int(os.environ.get("OPSCONSOLE_FLEET_LAB_APPS", "20"))


@pytest.fixture(scope="module")
def fleet_lab() -> Iterator[Lab]:
    """A lab of FLEET_LAB_APPS app hosts (default 20) beside the session's `lab`, for fleet-size rollouts.

    Module scope: its 20+ sshds live only while the module that asked for them runs.
    """
    yield from _lab_up(LabConfig.fleet(FLEET_LAB_APPS))


def _lab_up(config: LabConfig) -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason:
        skip_or_fail(reason)
    # The lab has fixed names (its dir, namespaces with its prefix, one address range): two suites on one
    # machine (two checkouts, a helper's worktree) take turns instead of tearing each other's lab down.
    _take_lab_lock()
    instance = Lab(config)
    # atexit covers an interpreter that exits without running fixture teardown (e.g. os._exit is not
    # covered, SIGKILL neither: the next up() removes what such a run left).
    atexit.register(instance.down)
    try:
        instance.up()
        yield instance
    finally:
        instance.down()
        atexit.unregister(instance.down)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    # A skip raised anywhere in a lab test (importorskip, a missing tool) must not turn CI green.
    if report.skipped and _ci() and uses_lab(item) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"lab test skipped under CI=true: {reason}"
