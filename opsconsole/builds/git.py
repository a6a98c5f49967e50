"""The git plumbing builds need, as async subprocess calls with clear errors."""

from __future__ import annotations

from opsconsole.errors import OperatorError
import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path


class GitError(OperatorError):
    """git failed; the message carries its own last words."""


# Never let git stop to ask for a password or host key in a console that nobody watches.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}


async def git(*args: str, cwd: str | Path | None = None, timeout: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **_GIT_ENV}, start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        # git runs helpers of its own (index-pack, upload-pack, ssh): kill the whole group, and never
        # wait long on it, or a cancelled build could hang on a helper that still holds a pipe.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(proc.wait())
        except TimeoutError:
            pass
        raise
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {message[-1] if message else f'exit code {proc.returncode}'}")
    return out.decode(errors="replace")


async def is_ancestor(repo_dir: Path, older: str, newer: str) -> bool | None:
    """Whether commit `older` comes before `newer` in its history (`git merge-base --is-ancestor`); None when
    git cannot tell (a commit it does not have)."""
    proc = await asyncio.create_subprocess_exec(
        "git", "merge-base", "--is-ancestor", older, newer, cwd=repo_dir, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, **_GIT_ENV})
    async with asyncio.timeout(30):
        code = await proc.wait()
    return True if code == 0 else False if code == 1 else None


async def branch_head(repo: str, branch: str) -> str:
    """The commit the remote's branch points at, asked cheaply with ls-remote."""
    out = await git("ls-remote", "--heads", repo, f"refs/heads/{branch}")
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    raise GitError(f"branch {branch!r} does not exist in {repo}")


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    subject: str


async def commit_info(repo_dir: Path, commit: str) -> CommitInfo:
    out = await git("show", "-s", "--format=%H%x00%an%x00%s", commit, cwd=repo_dir)
    sha, author, subject = out.strip().split("\x00", 2)
    return CommitInfo(sha=sha, author=author, subject=subject)


async def update_cache(repo: str, cache_dir: Path) -> None:
    """Keep a bare mirror of `repo` so each build fetches only what is new."""
    if (cache_dir / "HEAD").exists():
        # From `repo` as the config names it now, not the mirror's stored origin: after `repo:` changes (or
        # another checkout's demo repo made this cache), the old origin would be built from without a word.
        await git("fetch", "--prune", "--quiet", repo, "+refs/heads/*:refs/heads/*", cwd=cache_dir, timeout=600)
    else:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        await git("clone", "--bare", "--quiet", repo, str(cache_dir), timeout=600)


async def resolve_commit(cache_dir: Path, commit: str) -> str:
    out = await git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", cwd=cache_dir)
    return out.strip()


async def checkout_clean(cache_dir: Path, commit: str, work_dir: Path) -> None:
    """A fresh work tree holding exactly `commit`, nothing left from earlier builds."""
    if work_dir.exists():
        await _remove_tree(work_dir)
    await git("clone", "--quiet", "--shared", "--no-checkout", str(cache_dir), str(work_dir), timeout=600)
    await git("checkout", "--quiet", "--detach", commit, cwd=work_dir, timeout=600)


async def _remove_tree(path: Path) -> None:
    import shutil

    await asyncio.to_thread(shutil.rmtree, path, True)
