"""A real install: the wheel, built from the checkout, installed into a fresh venv outside it.

An editable install (the dev venv) sees every file of the checkout, so it hides runtime
files that are not package data; this test is the one that catches them. The venv has
no system site-packages (they could hide a missing dependency) and nothing runs from
the checkout: the working directory, the config and the state are all in a temp dir,
and the test checks that `opsconsole` is imported from the venv.

One wheel and one venv serve the whole module (building them is the slow part).
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from test_tmux import Tmux
from tests import install_build
from tests.install_build import Installed

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def installed(request: pytest.FixtureRequest) -> Installed:
    return install_build.result(request.config)  # started at collection time by conftest.py


def test_the_console_is_imported_from_the_venv(installed: Installed) -> None:
    where = subprocess.run([str(installed.bin / "python"), "-c", "import opsconsole; print(opsconsole.__file__)"],
                           cwd=installed.work, env=installed.env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(installed.venv), where
    assert not Path(where.strip()).is_relative_to(ROOT)


def test_installed_wheel_has_its_runtime_files(installed: Installed) -> None:
    site = next(installed.venv.glob("lib/python*/site-packages"))
    package = site / "opsconsole"
    for name in ("py.typed", "themes/base.tcss", "themes/dark.tcss", "themes/light.tcss", "themes/mono.tcss",
                 "playbooks/app-server.yml", "playbooks/database.yml", "playbooks/proxy-host.yml",
                 "playbooks/itrust-deploy.yml", "playbooks/templates/app.env.j2", "demo/app/app.py"):
        assert (package / name).is_file(), f"{name} is missing from the installed package"
    # Nothing lands beside the package in site-packages (the old `site-packages/themes` mistake).
    assert not (site / "themes").exists() and not (site / "playbooks").exists()


def test_help_and_check_work_from_the_install(installed: Installed) -> None:
    help_text = installed.run("--help").stdout
    assert "subcommands" in help_text and "--check" in help_text
    cfg = _local_config(installed.work)
    assert "is valid" in installed.run("--config", str(cfg), "--check").stdout


def test_init_from_the_install_writes_a_fleet_that_checks(installed: Installed) -> None:
    """`init` copies the bundled playbooks: they must be in the wheel, and `--check` parses them."""
    fleet = installed.work / "fleet"
    assert "fill in" in installed.run("init", "--proxy", "embedded", str(fleet)).stdout
    for name in ("app-server.yml", "database.yml", "proxy-host.yml", "deploy.yml", "templates/app.env.j2"):
        assert (fleet / "playbooks" / name).is_file(), name
    assert f"{fleet / 'opsconsole.yaml'} is valid" in installed.run("--config", str(fleet / "opsconsole.yaml"),
                                                                    "--check").stdout


def test_the_installed_console_opens_in_tmux_and_quits(installed: Installed) -> None:
    cfg = _local_config(installed.work)
    tmux = Tmux()
    env_prefix = f"cd {installed.work} && env -u VIRTUAL_ENV -u PYTHONPATH XDG_STATE_HOME={installed.base / 'state'}"
    command = f"{env_prefix} {installed.bin / 'opsconsole'} --config {cfg}; echo CONSOLE-EXITED $?; sleep 60"
    try:
        tmux("new-session", "-d", "-s", "console", "-x", "100", "-y", "30", command)
        screen = tmux.wait_for("Canary split", timeout=60)
        for title in ("Fleet", "Build queue", "Heartbeat log", "Canary split"):
            assert title in screen
        assert "web-1" in screen
        tmux("send-keys", "-t", "console", "q")
        screen = tmux.wait_for("CONSOLE-EXITED", timeout=20)
        assert "CONSOLE-EXITED 0" in screen, screen
    finally:
        tmux.kill()


def _local_config(work: Path) -> Path:
    """A fleet of two local instances and no apps: nothing to build, nothing from the checkout."""
    cfg = work / "local.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        project: installed
        state_dir: {work / 'state'}
        groups:
          web:
            provider: local
            role: app
            count: 2
        """))
    return cfg
