"""playbooks/database.yml on the lab's db host: MariaDB with its own datadir, app hosts in, jump host out, no password in logs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from opsconsole.event_lines import format_event
from opsconsole.playbook.loader import load_playbook
from opsconsole.transport.pool import SshPool
from tests.lab import Lab
from tests.lab.inventory import lab_host, lab_runner

pytest_plugins = ["tests.lab.fixtures"]

PLAYBOOK = Path(__file__).resolve().parent.parent / "playbooks" / "database.yml"


def sql_as(lab: Lab, host: str, password: str, sql: str, server: str | None = None) -> subprocess.CompletedProcess[str]:
    """The mariadb client from inside a lab host's network namespace, as the app user (to the db host's server
    unless `server` names another address)."""
    return subprocess.run(
        ["ip", "netns", "exec", lab.hosts[host].ns, "mariadb", "-h", server or lab.db.address, "-u", "itrust",
         "--connect-timeout=5", "-N", "-e", sql],
        capture_output=True, text=True, timeout=30, env={**os.environ, "MYSQL_PWD": password})


async def test_database_playbook(lab: Lab, pool: SshPool, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.lab.fixtures import skip_or_fail

    if shutil.which("mariadb") is None or not Path("/usr/sbin/mariadbd").exists():
        skip_or_fail("the database test needs MariaDB (apt-get install mariadb-server mariadb-client)")
    password = f"pw'{uuid.uuid4().hex}\"x"  # quotes on purpose: the SQL must survive them
    monkeypatch.setenv("OPSCONSOLE_DB_PASSWORD", password)
    runner, events = lab_runner(pool)
    # The group the shipped playbook names (`hosts: database`), as a fleet config would have it.
    db = runner.transport_for(dataclasses.replace(lab_host(lab, "db"), group="database"))

    async def play() -> None:
        result = await runner.run(load_playbook(PLAYBOOK), [db.host],
                                  extra_vars={"db_client_hosts": [h.address for h in lab.apps]})
        assert result.ok, result.failure_text()

    try:
        await play()
        assert await db.service_pid("mariadb") is not None
        # Its own data directory, under the db host's root.
        files = Path(lab.db.files)
        assert (files / "mariadb" / "data" / "mysql").is_dir()
        assert (files / "mariadb" / "secrets" / "app.pw").stat().st_mode & 0o777 == 0o600
        # Every app host gets in with the app user ...
        for app in lab.apps:
            got = sql_as(lab, app.name, password, "SELECT CURRENT_USER(); SHOW DATABASES LIKE 'itrust'")
            assert got.returncode == 0, got.stderr
            assert got.stdout.split() == [f"itrust@{app.address}", "itrust"]
        # ... the jump host does not, password or not.
        refused = sql_as(lab, "jump", password, "SELECT 1")
        assert refused.returncode != 0 and f"Host '{lab.jump.lan_address}' is not allowed to connect" in refused.stderr
        assert sql_as(lab, "app-1", "wrong", "SELECT 1").returncode != 0
        # Running it again changes nothing that matters and still works (idempotent).
        await play()
        assert sql_as(lab, "app-2", password, "SELECT 1").returncode == 0
        # The password is in no event (every field: the rendered commands, output lines, messages; what the
        # console, the journal and --json show), no file under the host's log dir, no sshd log.
        logs = "\n".join([*map(repr, events), *filter(None, map(format_event, events))])
        for log_file in [*(files / "log").glob("*"), *Path(lab.dir).glob("*/sshd.log")]:
            logs += log_file.read_text(errors="replace")
        assert password not in logs and password.split("'")[1] not in logs
        assert "'app database and user, for the app hosts only'" in logs  # the task's events were searched too
    finally:
        await db.stop_service("mariadb", timeout=20)
