"""A network-namespace lab of real sshd hosts behind a jump host (see lab.py and net.py)."""

from .lab import Lab, LabConfig, LabHost
from .net import LabError

__all__ = ["Lab", "LabConfig", "LabError", "LabHost"]
