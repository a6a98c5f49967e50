"""`opsconsole init [DIR]`: a starting config for one's own fleet that checks as written, and never overwrites."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from opsconsole.config.loader import load_config
from opsconsole.inventory import build_inventory
from opsconsole.playbook.loader import load_playbook
from opsconsole.playbook.runner import select_hosts

WRITTEN = ("opsconsole.yaml", "playbooks/app-server.yml", "playbooks/database.yml", "playbooks/proxy-host.yml",
           "playbooks/deploy.yml", "playbooks/templates/app.env.j2",
           "playbooks/templates/opsconsole-proxy.service.j2",
           *(f"playbooks/collections/ansible_collections/opsconsole/builtin/{name}"
             for name in ("galaxy.yml", "README.md", "meta/runtime.yml", "plugins/modules/service.py",
                          "plugins/modules/health.py", "plugins/action/service.py", "plugins/callback/events.py")))


def opsconsole(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg-state")}  # --check must not touch ~/.local
    env.pop("OPSCONSOLE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "opsconsole", *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=env)


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("proxy", ["haproxy", "embedded"])
def test_init_writes_a_config_that_checks_as_written_with_its_playbooks(tmp_path: Path, proxy: str) -> None:
    target = tmp_path / "ops"
    done = opsconsole(tmp_path, "init", "--proxy", proxy, str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(snapshot(target)) == sorted(WRITTEN)
    cfg = target / "opsconsole.yaml"
    # Every line to fill in is listed, by file and line.
    fill = [line for line in cfg.read_text().splitlines() if "# FILL IN" in line]
    assert len(fill) >= 8
    numbers = [i for i, line in enumerate(cfg.read_text().splitlines(), 1) if "# FILL IN" in line]
    for n in numbers:
        assert f"{cfg}:{n}: " in done.stdout
    check = opsconsole(tmp_path, "--config", str(cfg), "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{cfg} is valid" in check.stdout

    config = load_config(cfg)
    assert config.project == "ops" and config.proxy is not None and config.proxy.driver == proxy
    assert config.jump is not None and config.jump.host == "bastion.example.org"
    groups = config.groups
    assert {g: groups[g].provider for g in groups} == {"app": "static", "db": "static", "proxy": "static"}
    assert "://" in config.apps["app"].repo
    inventory = build_inventory(config)
    hosts = [inventory.get(n) for n in ("app-1", "app-2", "db-1", "proxy-1")]
    assert all(h is not None and h.transport == "ssh" for h in hosts)
    # The written playbooks load with our loader, and each group's play runs on that group's hosts.
    for group in ("app", "db", "proxy"):
        playbook = load_playbook(groups[group].provision)
        assert playbook.path.parent == target / "playbooks"
        chosen = select_hosts(playbook.plays[0].hosts, inventory.hosts)
        assert [h.name for h in chosen] == [h.name for h in inventory.group(group)], group
    deploy = load_playbook(config.apps["app"].deploy_playbook)
    assert deploy.path == target / "playbooks" / "deploy.yml"
    # The copies are the bundled playbooks, the play's `hosts:` aside.
    shipped = (ROOT / "playbooks" / "database.yml").read_text().replace("hosts: database", "hosts: db")
    assert (target / "playbooks" / "database.yml").read_text() == shipped


def test_an_edit_that_breaks_the_written_config_is_named_by_check(tmp_path: Path) -> None:
    assert opsconsole(tmp_path, "init", str(tmp_path / "ops")).returncode == 0
    cfg = tmp_path / "ops" / "opsconsole.yaml"
    text = cfg.read_text()
    line = text.splitlines().index("    group: app") + 1
    cfg.write_text(text.replace("    group: app\n", "    group: apps\n", 1))
    check = opsconsole(tmp_path, "--config", str(cfg), "--check")
    assert check.returncode == 2
    assert f"{cfg}:{line}" in check.stderr and "no host group named 'apps'" in check.stderr


def test_a_second_init_refuses_names_the_files_and_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ops"
    assert opsconsole(tmp_path, "init", str(target)).returncode == 0
    (target / "playbooks" / "deploy.yml").write_text("# my own deploy\n")
    before = snapshot(target)
    again = opsconsole(tmp_path, "init", "--proxy", "embedded", str(target))
    assert again.returncode == 2
    assert f"{target / 'opsconsole.yaml'}" in again.stderr and "nothing was written" in again.stderr
    assert snapshot(target) == before


def test_one_existing_file_is_enough_to_refuse_and_nothing_else_is_written(tmp_path: Path) -> None:
    target = tmp_path / "ops"
    (target / "playbooks").mkdir(parents=True)
    (target / "playbooks" / "database.yml").write_text("# mine\n")
    refused = opsconsole(tmp_path, "init", str(target))
    assert refused.returncode == 2
    assert f"{target / 'playbooks' / 'database.yml'} already exists; nothing was written" in refused.stderr
    assert snapshot(target) == {"playbooks/database.yml": hashlib.sha256(b"# mine\n").hexdigest()}


def test_init_into_the_current_directory_and_a_bad_project_name(tmp_path: Path) -> None:
    here = tmp_path / "my-fleet"
    here.mkdir()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    done = subprocess.run([sys.executable, "-m", "opsconsole", "init"], capture_output=True, text=True,
                          timeout=60, cwd=here, env=env)
    assert done.returncode == 0, done.stderr
    assert load_config(here / "opsconsole.yaml").project == "my-fleet"
    bad = opsconsole(tmp_path, "init", "--project", "9 lives", str(tmp_path / "other"))
    assert bad.returncode == 2 and "'9 lives' is not a valid project name" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_init_help_says_what_it_writes_and_what_comes_next(tmp_path: Path) -> None:
    text = opsconsole(tmp_path, "init", "--help").stdout
    for words in ("opsconsole.yaml", "bastion", "--proxy {haproxy,embedded}", "FILL IN", "overwritten",
                  "--check", "next steps"):
        assert words in text, words
    assert "init" in opsconsole(tmp_path, "--help").stdout
