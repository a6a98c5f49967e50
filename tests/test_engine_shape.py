"""The engine's shape: services built once and injected (none holds the engine), a handler table that
covers every command type, and one error base for everything the engine reports to an operator.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from opsconsole.config.loader import load_config
from opsconsole.engine import commands as C
from opsconsole.engine.engine import Engine, check_handlers
from opsconsole.errors import CommandFailed, OperatorError
from tests.conftest import write_config

PKG = Path(__file__).resolve().parent.parent / "opsconsole"
SERVICES = ("fleet", "deployer", "traffic", "monitor", "rollouts", "canary_desk", "cloud", "previews")
# Errors that never leave their part: each is caught there and turned into a result or an answer.
INTERNAL_TO_THEIR_PART = {
    "opsconsole.proxy.admin.ApiError": "the proxy's admin API answers it as an HTTP status",
    "opsconsole.heartbeat.rawhttp.BadAnswer": "a probe reports it as a failed sample",
    "opsconsole.playbook.modules.ModuleFailure": "the playbook runner reports it as a failed task",
}


def test_every_command_type_has_a_handler(tmp_path: Path) -> None:
    engine = Engine(load_config(write_config(tmp_path)))
    assert set(engine.handlers) == set(C.command_classes())


def test_a_command_type_without_a_handler_stops_the_engine_from_being_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Bogus(C.Command):
        verb = "bogus"

    config = load_config(write_config(tmp_path))
    # Registered in the command language the way every command is, but given no handler.
    monkeypatch.setitem(C._PARSERS, "bogus", (Bogus, lambda args, names: Bogus()))
    with pytest.raises(TypeError, match="no handler for Bogus"):
        Engine(config)
    monkeypatch.delitem(C._PARSERS, "bogus")
    engine = Engine(config)
    with pytest.raises(TypeError, match="a handler for unknown Bogus"):
        check_handlers({**engine.handlers, Bogus: engine.handlers[C.Help]}, C.command_classes())


def test_no_service_holds_the_engine(tmp_path: Path) -> None:
    engine = Engine(load_config(write_config(tmp_path)))
    for name in SERVICES:
        service = getattr(engine, name)
        held = [attr for attr, value in vars(service).items() if value is engine]
        assert not held, f"engine.{name} holds the engine as {held}"
    # … nor could it: no service module imports the engine module, not even for type checking.
    for path in (PKG / "engine").glob("*.py"):
        if path.name in ("engine.py", "__init__.py"):
            continue
        tree = ast.parse(path.read_text())
        named = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "opsconsole.engine.engine" not in named, path.name


def _error_classes() -> dict[str, type[BaseException]]:
    found = {}
    for path in PKG.rglob("*.py"):
        if "__pycache__" in path.parts or path.stem == "__main__":
            continue
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return found


def test_every_error_of_the_package_is_an_operator_error_or_stays_in_its_part() -> None:
    classes = _error_classes()
    # The reader found the errors the engine reports (a guard: it cannot pass by reading nothing).
    assert {"opsconsole.rollouts.lock.LockBusy", "opsconsole.yamlsource.SourceError",
            "opsconsole.ec2.errors.Ec2Error", "opsconsole.traffic.base.TrafficError"} <= set(classes)
    stray = [name for name, cls in classes.items()
             if not issubclass(cls, OperatorError) and name not in INTERNAL_TO_THEIR_PART]
    assert not stray, f"errors that would be reported as internal errors: {stray}"
    from opsconsole.rollouts.lock import LockError, LockUnavailable
    from opsconsole.transport.base import TransportError

    # The lock host not answering is the lock's error, not a transport's.
    assert issubclass(LockUnavailable, LockError) and not issubclass(LockUnavailable, TransportError)


async def test_an_operator_error_is_the_commands_failure_and_anything_else_an_internal_error(tmp_path: Path) -> None:
    engine = Engine(load_config(write_config(tmp_path)))

    def raising(exc: BaseException):  # the handler of `sleep`, for this test
        async def handler(command: C.Command) -> str:
            raise exc
        return handler

    try:
        engine.handlers[C.Sleep] = raising(CommandFailed("itrust-2 did not answer", hint="see `status itrust`"))
        outcome = await engine.execute(engine.parse("sleep 0s"))
        assert not outcome.ok and outcome.message == "itrust-2 did not answer (see `status itrust`)"
        assert not (tmp_path / "state" / "errors").exists()

        engine.handlers[C.Sleep] = raising(KeyError("nope"))
        outcome = await engine.execute(engine.parse("sleep 0s"))
        assert not outcome.ok and outcome.message.startswith("internal error (KeyError: 'nope'); traceback in ")
        traceback_file = Path(outcome.message.rpartition("traceback in ")[2])
        assert traceback_file.parent == tmp_path / "state" / "errors"
        text = traceback_file.read_text()
        assert text.startswith("sleep 0s\n") and "KeyError: 'nope'" in text and "Traceback" in text
    finally:
        await engine.close()


async def test_engine_open_prepares_and_starts_only_what_was_asked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    engine = Engine.open(load_config(cfg))  # a plain --script: nothing always-on
    assert "itrust" in engine.playbooks  # prepared: the deploy playbook parsed
    async with engine:
        assert not engine._background
    assert engine._closed
    engine = Engine.open(load_config(cfg), heartbeat=True)  # `opsconsole heartbeat`: the monitor only
    async with engine:
        assert [t.get_coro().__qualname__ for t in engine._background] == ["HeartbeatMonitor.run"]


def test_every_front_end_starts_the_engine_one_way() -> None:
    """Front ends open the engine with `Engine.open(...)`; none builds, prepares or starts one by its own steps."""
    front_ends = [*(PKG / "cli").glob("*.py"), *(PKG / "ui").rglob("*.py"), PKG / "headless.py"]
    opened = []
    for path in front_ends:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id == "Engine":
                pytest.fail(f"{path.relative_to(PKG)}:{node.lineno} builds an Engine itself")
            if isinstance(func, ast.Attribute) and func.attr in ("prepare", "start_background", "start_monitor"):
                pytest.fail(f"{path.relative_to(PKG)}:{node.lineno} calls {func.attr}() itself")
            if isinstance(func, ast.Attribute) and func.attr == "open" and \
                    isinstance(func.value, ast.Name) and func.value.id == "Engine":
                opened.append(path.name)
    assert sorted(opened) == ["console.py", "heartbeat.py"]  # the console run (TUI, --script, --watch), the monitor
