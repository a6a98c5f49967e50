"""Transports run commands, copy files and manage services on one host."""

from opsconsole.transport.base import CommandResult, Transport, TransportError

__all__ = ["CommandResult", "Transport", "TransportError"]
