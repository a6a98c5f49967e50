"""opsconsole: a terminal operations console for fleets, builds, rollouts, heartbeat and canary."""

__version__ = "0.1.0"
