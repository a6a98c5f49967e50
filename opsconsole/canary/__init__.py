"""Canary control: steering the split between stable and canary pools, and judging a canary."""
