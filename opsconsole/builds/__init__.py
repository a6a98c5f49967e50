"""Builds: asking git for branch heads, building commits, keeping artifacts."""
