"""The command line: `--config` on either side of every subcommand, help that says so, one module per subcommand."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

from opsconsole.cli.main import main
from tests.conftest import write_config

PKG = Path(__file__).resolve().parent.parent / "opsconsole"
SUBCOMMANDS = ("history", "heartbeat", "proxy", "hostkeys", "commands")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`opsconsole ARGV` in this process: exit code, stdout, stderr (argparse's exits included)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No ./opsconsole.yaml and no $OPSCONSOLE_CONFIG: a subcommand that works has read --config.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPSCONSOLE_CONFIG", raising=False)
    return write_config(tmp_path, count=2)


# subcommand argv, and what its output shows when it ran on the config
CASES = {
    "history": (["history", "--as-script"], lambda code, out, err: code == 0 and not err),
    "heartbeat": (["heartbeat", "--count", "1"],
                  lambda code, out, err: code == 0 and "itrust-1" in out and "itrust-2" in out),
    # `accept` looks the host up in the config's inventory: a local host is refused by name.
    "hostkeys": (["hostkeys", "accept", "itrust-1", "--fingerprint", "SHA256:x"],
                 lambda code, out, err: code == 2 and "'itrust-1' is not an SSH host of" in out),
    # The proxy reads the config and refuses it for having no `proxy:` section.
    "proxy": (["proxy"], lambda code, out, err: code == 2 and "no `proxy:` section" in err),
    "commands": (["commands"], lambda code, out, err: code == 0 and "roll APP" in out),
}


@pytest.mark.parametrize("name", SUBCOMMANDS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_config_goes_before_or_after_every_subcommand(name: str, where: str, cfg: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sub, ran = CASES[name]
    for flag in ("--config", "-c"):
        argv = [flag, str(cfg), *sub] if where == "before" else [*sub, flag, str(cfg)]
        code, out, err = run(argv, capsys)
        assert "unrecognized arguments" not in err, (argv, err)
        assert ran(code, out, err), (argv, code, out, err)


def test_config_after_a_nested_subcommand_word(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["hostkeys", "--config", str(cfg), "accept", "itrust-1"], capsys)
    assert code == 2 and "'itrust-1' is not an SSH host of" in out, (code, out, err)


def test_the_later_config_wins(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--config", str(tmp_path / "nosuch.yaml"), "history", "--config", str(cfg)], capsys)
    assert code == 0, err


def test_console_options_before_a_subcommand_are_refused_by_name(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--config", str(cfg), "--script", "x.ops", "heartbeat"], capsys)
    assert code == 2
    assert "--script" in err and "heartbeat" in err and "unrecognized" not in err
    code, out, err = run(["--watch", "history"], capsys)
    assert code == 2 and "--watch" in err and "history" in err


def test_a_missing_config_says_how_to_give_one(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg.unlink()
    code, out, err = run(["history"], capsys)
    assert code == 2 and "--config FILE" in err and "$OPSCONSOLE_CONFIG" in err


def test_help_lists_every_subcommand_and_where_config_goes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--help"], capsys)
    assert code == 0
    for name in SUBCOMMANDS:
        assert f"\n    {name} " in out or f"\n  {name} " in out, (name, out)
    assert "before or after" in out
    for name in ("history", "heartbeat", "hostkeys"):
        code, sub_out, err = run([name, "--help"], capsys)
        assert code == 0 and "--config" in sub_out and f"opsconsole {name}" in sub_out, (name, sub_out)
    # The proxy's own help, with its own options.
    code, proxy_out, err = run(["proxy", "--help"], capsys)
    assert code == 0 and "--runtime-file" in proxy_out


def _imports(path: Path) -> set[tuple[str, str]]:
    """(module, name) for every `from opsconsole… import name` and `import opsconsole…` in a file."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opsconsole"):
            found.update((node.module or "", alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update((alias.name, "") for alias in node.names if alias.name.startswith("opsconsole"))
    return found


def test_one_module_per_subcommand_and_parts_never_import_the_cli() -> None:
    cli = importlib.import_module("opsconsole.cli")
    assert hasattr(cli, "__path__"), "opsconsole.cli is a package"
    entry = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["project"]["scripts"]["opsconsole"]
    module, _, function = entry.partition(":")
    assert getattr(importlib.import_module(module), function) is main  # the entry point pyproject names
    for name in SUBCOMMANDS:
        assert (PKG / "cli" / f"{name}.py").is_file(), name
    # A subcommand never reaches into another's private helpers.
    for path in (PKG / "cli").glob("*.py"):
        private = [f"{mod}.{name}" for mod, name in _imports(path)
                   if mod.startswith("opsconsole.cli") and name.startswith("_")]
        assert not private, (path.name, private)
    # Parts never import a front end; the `heartbeat` front end lives in the cli, not in the heartbeat part.
    front_ends = {PKG / "cli", PKG / "ui", PKG / "headless.py", PKG / "__main__.py"}
    for path in PKG.rglob("*.py"):
        if any(path == f or f in path.parents for f in front_ends):
            continue
        bad = [mod for mod, _ in _imports(path) if mod == "opsconsole.cli" or mod.startswith("opsconsole.cli.")
               or (mod == "opsconsole" and _ == "cli")]
        assert not bad, (str(path.relative_to(PKG)), bad)


def test_the_proxy_reads_dot_opsconsole_yaml_by_default_as_every_front_end_does(
        cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It once said "the following arguments are required: --config" beside ./opsconsole.yaml."""
    cfg.rename(cfg.parent / "opsconsole.yaml")  # the fixture runs in its directory
    code, out, err = run(["proxy"], capsys)
    assert code == 2 and "no `proxy:` section" in err, err
