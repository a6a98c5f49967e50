"""Transports run commands, copy files and manage services on one host: `base` (the interface), `local`, `ssh`.

This package re-exports nothing, so that no module of it closes an import circle through it.
"""
