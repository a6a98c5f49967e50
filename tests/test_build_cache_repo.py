"""The build cache follows `repo:` as the config names it now.

Regression: the bare mirror used to fetch from its stored origin, so after `repo:` changed (or when another
checkout's demo had made the shared cache) builds came from the old repository, and a commit of the new one
was "not in" the cache.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from conftest import commit_file, git

from opsconsole.builds.git import update_cache


def _new_repo(path: Path, content: str) -> str:
    path.mkdir()
    git(path, "init", "-q", "-b", "production")
    (path / "app.txt").write_text(content)
    git(path, "add", "app.txt")
    git(path, "commit", "-q", "-m", f"first commit of {path.name}")
    return git(path, "rev-parse", "HEAD")


def _has_commit(cache: Path, sha: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=cache, capture_output=True).returncode == 0


def test_a_changed_repo_is_fetched_from_the_new_url(tmp_path: Path) -> None:
    old = tmp_path / "old"
    new = tmp_path / "new"
    cache = tmp_path / "cache" / "app.git"
    old_sha = _new_repo(old, "old")
    asyncio.run(update_cache(str(old), cache))
    assert _has_commit(cache, old_sha)

    new_sha = _new_repo(new, "new")
    asyncio.run(update_cache(str(new), cache))
    assert _has_commit(cache, new_sha), "the cache fetched from its stored origin, not from the repo the config names"
    assert git(cache, "rev-parse", "refs/heads/production") == new_sha


def test_a_new_commit_on_the_same_repo_is_fetched(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    cache = tmp_path / "cache" / "app.git"
    _new_repo(repo, "v1")
    asyncio.run(update_cache(str(repo), cache))
    second = commit_file(repo, "app.txt", "v2", "second")
    asyncio.run(update_cache(str(repo), cache))
    assert git(cache, "rev-parse", "refs/heads/production") == second
