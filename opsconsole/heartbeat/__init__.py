"""Probing hosts' health endpoints."""
