"""The engine: commands in, events out. Imports no UI library."""

from opsconsole.engine.commands import Command, CommandError, parse_command
from opsconsole.engine.engine import CommandFailed, Engine, Outcome

__all__ = ["Command", "CommandError", "CommandFailed", "Engine", "Outcome", "parse_command"]
