"""Bad config files are refused with file, line and key path, exit code 2, and nothing runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.yamlsource import SourceError
from tests.conftest import ROOT, write_config


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "config.example.yaml")
    assert config.heartbeat.interval == 2.5
    assert config.groups["itrust"].count == 5
    assert config.apps["itrust"].branch == "production"
    assert config.apps["itrust"].deploy_playbook.name == "itrust-deploy.yml"


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("groups:\n  web:\n    provider: local\n    count: 2\n")
    config = load_config(cfg)
    assert config.state_dir == tmp_path / "xdg" / "opsconsole" / "opsconsole"
    assert config.heartbeat.interval == 2.5 and config.heartbeat.fall == 3 and config.heartbeat.rise == 2


def test_rollout_timing_defaults_and_custom_values(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    timing = load_config(cfg).apps["itrust"].rollout
    assert (timing.health_timeout, timing.drain_timeout, timing.lock_ttl, timing.lock_renew) == (60.0, 30.0, 60.0, 10.0)
    _replace(cfg, "    vars:\n", "    rollout:\n      health_timeout: 1500ms\n      drain_timeout: 2s\n"
                                  "      lock_ttl: 20s\n      lock_renew: 4s\n    vars:\n")
    timing = load_config(cfg).apps["itrust"].rollout
    assert (timing.health_timeout, timing.drain_timeout, timing.lock_ttl, timing.lock_renew) == (1.5, 2.0, 20.0, 4.0)


def _replace(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new, 1))


def _line_of(cfg: Path, needle: str) -> int:
    for number, line in enumerate(cfg.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


BAD_CASES = {
    # name: (old, new, expected key path, expected words, line needle)
    "yaml_syntax": ("branch: production", "branch: [production", "", "YAML syntax error", None),
    "unknown_key": ("branch: production", "branch: production\n    helth: {}", "apps.itrust.helth", "unknown key", "helth:"),
    "wrong_type": ("path: /health", "path: /health\n      status: ok", "apps.itrust.health.status", "must be a whole number", "status: ok"),
    "missing_required": ("    group: itrust\n", "", "apps.itrust.group", "required key is missing", "  itrust:\n"),
    "missing_playbook": ("itrust-deploy.yml", "no-such-playbook.yml", "apps.itrust.deploy.playbook", "does not exist", "no-such-playbook.yml"),
    "port_out_of_range": ("count: 3", "count: 3\n    base_port: 70000", "groups.itrust.base_port", "out of range", "base_port"),
    # Each host listens on base_port + i: the last one once got port 65536, `status` and the heartbeat broke.
    "ports_run_past_65535": ("count: 3", "count: 3\n    base_port: 65534", "groups.itrust.base_port",
                             "runs past port 65535", "base_port"),
    "unknown_group": ("group: itrust", "group: nosuch", "apps.itrust.group", "no host group named", "group: nosuch"),
    "bad_duration": ("interval: 0.5s", "interval: soon", "heartbeat.interval", "not a duration", "interval: soon"),
    "rollout_bad_duration": ("    vars:\n", "    rollout:\n      drain_timeout: soon\n    vars:\n",
                             "apps.itrust.rollout.drain_timeout", "not a duration", "drain_timeout: soon"),
    "rollout_too_short": ("    vars:\n", "    rollout:\n      health_timeout: 0s\n    vars:\n",
                          "apps.itrust.rollout.health_timeout", "must be at least", "health_timeout: 0s"),
    "rollout_unknown_key": ("    vars:\n", "    rollout:\n      drain: 5s\n    vars:\n",
                            "apps.itrust.rollout.drain", "unknown key", "drain: 5s"),
    "rollout_renew_not_below_ttl": ("    vars:\n", "    rollout:\n      lock_ttl: 5s\n      lock_renew: 5s\n    vars:\n",
                                    "apps.itrust.rollout.lock_renew", "must be shorter than lock_ttl", "lock_renew: 5s"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_config_names_file_line_and_key(tmp_path: Path, case: str) -> None:
    old, new, key, words, needle = BAD_CASES[case]
    cfg = write_config(tmp_path)
    _replace(cfg, old, new)
    with pytest.raises(SourceError) as info:
        load_config(cfg)
    err = info.value
    assert err.file == str(cfg)
    assert words in str(err)
    if key:
        assert err.path == key
    if needle == "  itrust:\n":
        # a missing key is reported at the mapping that lacks it: apps.itrust
        text = cfg.read_text()
        assert err.line == text[: text.index("apps:")].count("\n") + 2
    elif needle:
        assert err.line == _line_of(cfg, needle)
        assert str(err).startswith(f"{cfg}:{err.line}: {err.path}: ")
    else:
        # PyYAML notices an unclosed flow list at the first token after it
        assert err.line in (_line_of(cfg, "branch: [production"), _line_of(cfg, "branch: [production") + 1)


@pytest.mark.parametrize("case", ["unknown_key", "missing_playbook", "yaml_syntax"])
def test_bad_config_exits_2_and_runs_nothing(tmp_path: Path, case: str) -> None:
    old, new, key, words, _ = BAD_CASES[case]
    cfg = write_config(tmp_path)
    _replace(cfg, old, new)
    script = tmp_path / "s.ops"
    script.write_text("deploy itrust\n")
    proc = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--script", str(script)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert str(cfg) in proc.stderr and words in proc.stderr
    assert key in proc.stderr
    assert not (tmp_path / "state" / "journal.jsonl").exists()
    assert not (tmp_path / "state" / "hosts").exists()
    assert not (tmp_path / "repo").exists()


def test_static_hosts_and_placeholders(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""\
        state_dir: state
        groups:
          db:
            provider: static
            role: db
            hosts:
              - name: db1
                address: 10.99.0.5
                ssh_port: 2222
        jump:
          host: bastion
          port: 22
        """))
    config = load_config(cfg)
    assert config.groups["db"].hosts[0].ssh_port == 2222
    assert config.jump is not None and config.jump.host == "bastion"
    cfg.write_text(cfg.read_text().replace("jump:", "  cloud:\n    provider: ec2\n    count: 2\njump:"))
    with pytest.raises(SourceError, match=r"groups.cloud: a group with `provider: ec2` needs an `ec2:` section"):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace("  cloud:\n    provider: ec2\n    count: 2\n", ""))
    _replace(cfg, "port: 22\n", "port: 0\n")
    with pytest.raises(SourceError, match=r"jump.port: port 0 is out of range"):
        load_config(cfg)


@pytest.mark.parametrize("where", ["a_file", "under_a_file", "in_proc", "a_dangling_link"])
def test_a_state_dir_that_cannot_be_one_is_a_config_error_naming_the_key(tmp_path: Path, where: str) -> None:
    """A file there, or a place nobody may create it: a traceback from deep in the engine before. `--check`
    tries the place without making anything there, and must still see each (a dangling link passed it)."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "alink").symlink_to(tmp_path / "nowhere" / "state")
    state = {"a_file": tmp_path / "afile", "under_a_file": tmp_path / "afile" / "state",
             "in_proc": Path("/proc/no-such-dir/state"), "a_dangling_link": tmp_path / "alink"}[where]
    cfg = write_config(tmp_path)
    _replace(cfg, f"state_dir: {tmp_path / 'state'}", f"state_dir: {state}")
    proc = subprocess.run([sys.executable, "-m", "opsconsole", "--config", str(cfg), "--check"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: state_dir: {state} cannot be the state directory" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
