"""Create the demo git repository (the sample app on a `production` branch) on first run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from opsconsole.bundled import bundled_path

APP_SOURCE = bundled_path("demo", "app")
_IDENTITY = {"GIT_AUTHOR_NAME": "opsconsole demo", "GIT_AUTHOR_EMAIL": "demo@opsconsole.invalid",
             "GIT_COMMITTER_NAME": "opsconsole demo", "GIT_COMMITTER_EMAIL": "demo@opsconsole.invalid"}


def ensure_demo_repo(path: Path, branch: str = "production") -> bool:
    """Create `path` as a git repo with the sample app committed on `branch`. Returns True if created."""
    if (path / ".git").exists() or (path / "HEAD").exists():
        return False
    path.mkdir(parents=True, exist_ok=True)
    for item in APP_SOURCE.iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    (path / ".gitignore").write_text("dist/\nVERSION\n")
    env = {**os.environ, **_IDENTITY}
    run = lambda *args: subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)  # noqa: E731
    run("init", "--quiet", "--initial-branch", branch)
    # A non-bare repo whose checked-out branch can still take pushes keeps the demo simple:
    # operators may commit in it directly or push to it.
    run("config", "receive.denyCurrentBranch", "updateInstead")
    run("add", "-A")
    run("commit", "--quiet", "-m", "sample app: first version")
    return True
