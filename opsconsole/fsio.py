"""Writing state so that a crash or a power cut leaves the old version or the new one: never half
a file, never an empty one, never a rename that is lost although its caller went on.

- `write_atomic` replaces a whole file: a temp file beside it (random name, O_EXCL, the final
  mode from the start), written and fsynced, renamed over the target, then the directory
  fsynced so the rename is on disk too.
- `append_line` / `append_jsonl` add one line at the end (O_APPEND, so two writers never
  interleave within a line) and fsync it before returning: the journals and `releases.jsonl`
  are acted on right after they are written. `append_lines` / `append_jsonl_many` add several
  in one write and one fsync.
- `read_jsonl` reads such a file back, skipping a torn last line (a crash mid-append).
"""

from __future__ import annotations

import json
import errno
import os
import secrets
import shlex
import stat
from pathlib import Path
from typing import Any, Iterator


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> None:
    """Replace `path` with `data` (str is written as UTF-8); the file ends with exactly `mode`."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    _make_dirs(path.parent)
    while True:
        # A random name, created exclusively: never someone else's temp file, nor a link planted where ours would be.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o7777)
            break
        except FileExistsError:
            continue
    try:
        try:
            os.fchmod(fd, mode & 0o7777)  # os.open's mode went through the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def append_line(path: str | os.PathLike[str], line: str, mode: int = 0o600) -> None:
    """Append `line` and a newline to `path`, on disk when this returns (the file is created with `mode`)."""
    append_lines(path, [line], mode)


def append_lines(path: str | os.PathLike[str], lines: list[str], mode: int = 0o600) -> None:
    """Append each of `lines` with a newline, in one write and one fsync (a batch's steps cost one disk flush)."""
    path = Path(path)
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    _make_dirs(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o7777)
        created = True
    except FileExistsError:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        created = False
        wider = stat.S_IMODE(os.fstat(fd).st_mode) & ~mode & 0o7777
        if wider:  # a file an older version left wider than `mode` is tightened as it is opened
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~wider)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # after a torn last line: ours starts on a line of its own, whole
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)  # a new file's name is in its directory, which must reach the disk too


def append_jsonl(path: str | os.PathLike[str], entry: dict[str, Any]) -> None:
    """Append `entry` as one JSON line (keys sorted; what JSON cannot hold is written as str)."""
    append_line(path, json.dumps(entry, sort_keys=True, default=str))


def append_jsonl_many(path: str | os.PathLike[str], entries: list[dict[str, Any]]) -> None:
    """Append `entries` as JSON lines in one write and one fsync."""
    append_lines(path, [json.dumps(entry, sort_keys=True, default=str) for entry in entries])


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every JSON object line of `path`, in order; nothing when it does not exist.

    A line that is not a whole JSON object (a crash mid-append tears the last one) is skipped.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry
    except FileNotFoundError:
        return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_private(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of the secret file `path`, from one open file whose mode was checked (no window
    between the look and the read). ValueError when group or others have a permission on it (as OpenSSH
    refuses a private key), saying the command that fixes it, or when it is not UTF-8; OSError when it
    cannot be read."""
    with open(path, "rb") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(f"{path} is open to others (mode {mode:04o}); a secret file must be private: "
                             f"chmod 600 {shlex.quote(str(path))}")
        data = file.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def make_private_dir(directory: str | os.PathLike[str]) -> Path:
    """mkdir -p `directory` and make it 0700 (the state dir: logs, journal and builds are the operator's alone).

    A directory that was open to others (a state dir an older version made 0755, its files 0644) has
    everything in it closed to them too, once: after that it is 0700 and is not walked again."""
    directory = Path(directory)
    _make_dirs(directory)
    if stat.S_IMODE(os.lstat(directory).st_mode) & 0o077:
        _close_to_others(directory)
    os.chmod(directory, 0o700)
    return directory


def _close_to_others(directory: Path) -> None:
    """Take group and other permissions off everything under `directory` (links are left alone: a chmod
    would act on what they point to)."""
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
            except FileNotFoundError:
                pass  # gone meanwhile


def _make_dirs(directory: Path) -> None:
    """mkdir -p, each new directory 0700 and its name fsynced into its parent."""
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        if not directory.is_dir():  # a file (or a link to one) where a directory must be
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)) from None
        return
    _fsync_dir(directory.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["append_jsonl", "append_jsonl_many", "append_line", "append_lines", "make_private_dir", "read_jsonl", "write_atomic"]
