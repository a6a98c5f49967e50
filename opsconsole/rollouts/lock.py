"""The deploy lock, held on the fleet side so two consoles on two machines exclude each other.

The lock is a small JSON file on a lock host (the group's first host, or the
jump host), written through the transport. Taking it is atomic on that host:
a shell `mkdir` of a lock directory serialises concurrent takers, and inside
it we check the current holder. The holder renews it while working; a lock
whose last renewal is older than its TTL is *stale* — its console died — and
may be taken over (and the takeover is reported, with the old holder's name).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from dataclasses import asdict, dataclass, replace

from opsconsole.transport.base import Transport

LOCK_DIR = "locks"


class LockHeld(Exception):
    """Someone else holds the lock; the message says who, since when and why."""

    def __init__(self, info: "LockInfo") -> None:
        self.info = info
        super().__init__(f"the deploy lock of {info.app} is held by {info.holder} since "
                         f"{time.strftime('%H:%M:%S', time.localtime(info.since))} ({info.reason}); "
                         f"see `lock status {info.app}`, or `lock release {info.app}` if you are sure")


@dataclass(frozen=True)
class LockInfo:
    app: str
    holder: str
    since: float
    renewed: float
    ttl: float
    reason: str
    token: str  # unique per acquisition, so a renewal can tell "still mine" from "taken over"

    def stale(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.renewed > self.ttl

    def describe(self) -> str:
        age = time.time() - self.renewed
        state = f"STALE (last renewed {age:.0f}s ago, ttl {self.ttl:g}s)" if self.stale() else f"renewed {age:.0f}s ago"
        return (f"{self.app}: held by {self.holder} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"
                f" for {self.reason!r}; {state}")


# Runs on the lock host. $1 = lock file, $2 = new content, $3 = mode (take|renew|release|force),
# $4 = our token, $5 = now, stdout = the lock's content before the change. The mkdir mutex makes
# read-check-write atomic against another console doing the same at the same moment.
_SCRIPT = r'''
set -u
f="$1"; new="$2"; mode="$3"; token="$4"; now="$5"
mkdir -p "$(dirname "$f")"
i=0
until mkdir "$f.mutex" 2>/dev/null; do
  i=$((i+1)); [ $i -gt 100 ] && { echo "lock mutex busy: $f.mutex" >&2; exit 3; }
  sleep 0.05
done
trap 'rmdir "$f.mutex"' EXIT
cur=""; [ -f "$f" ] && cur=$(cat "$f")
printf '%s\n' "$cur"
case "$mode" in
  take)
    if [ -n "$cur" ]; then
      renewed=$(printf '%s' "$cur" | sed -n 's/.*"renewed": *\([0-9.]*\).*/\1/p')
      ttl=$(printf '%s' "$cur" | sed -n 's/.*"ttl": *\([0-9.]*\).*/\1/p')
      curtok=$(printf '%s' "$cur" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
      if [ "$curtok" != "$token" ] && awk -v n="$now" -v r="${renewed:-0}" -v t="${ttl:-0}" 'BEGIN{exit !(n - r <= t)}'; then
        exit 10
      fi
    fi
    printf '%s' "$new" > "$f.tmp" && mv "$f.tmp" "$f" ;;
  renew)
    curtok=$(printf '%s' "$cur" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
    [ "$curtok" = "$token" ] || exit 11
    printf '%s' "$new" > "$f.tmp" && mv "$f.tmp" "$f" ;;
  release)
    curtok=$(printf '%s' "$cur" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
    [ -z "$cur" ] || [ "$curtok" = "$token" ] || exit 11
    rm -f "$f" ;;
  force)
    rm -f "$f" ;;
  show) ;;
esac
'''


class LockLost(Exception):
    """Our lock was taken over (we were too slow to renew) or removed by `lock release`."""


class FleetLock:
    def __init__(self, transport: Transport, app: str, holder: str, ttl: float = 60.0) -> None:
        self.transport = transport
        self.app = app
        self.holder = holder
        self.ttl = ttl
        self.path = f"{LOCK_DIR}/{app}.lock"
        # The token names this process, so a console on the same machine can tell a dead holder from a live one.
        self.token = f"{holder}:{os.getpid()}:{time.time_ns()}"
        self.since = 0.0
        self.reason = ""

    async def _call(self, mode: str, content: str = "") -> tuple[int | None, LockInfo | None]:
        now = f"{time.time():.3f}"
        command = " ".join(shlex.quote(a) for a in ["sh", "-c", _SCRIPT, "lock", self.path, content, mode, self.token, now])
        result = await self.transport.run(command, timeout=30)
        before = _parse(result.stdout)
        if result.rc not in (0, 10, 11):
            raise RuntimeError(f"lock on {self.transport.root}: {result.describe()}: {' | '.join(result.tail)}")
        return result.rc, before

    def _content(self, renewed: float) -> str:
        info = LockInfo(app=self.app, holder=self.holder, since=self.since, renewed=renewed, ttl=self.ttl,
                        reason=self.reason, token=self.token)
        return json.dumps(asdict(info), sort_keys=True)

    async def acquire(self, reason: str) -> LockInfo | None:
        """Take the lock. Returns the stale lock taken over, if any; raises LockHeld if it is live."""
        self.since = time.time()
        self.reason = reason
        current = await self.status()
        if current is not None and current.token != self.token and _holder_died_here(current):
            # Its console was killed on this very machine: no need to wait out the TTL.
            await self.force_release()
            current = replace(current, renewed=0.0)
            self.since = time.time()
            await self._call("take", self._content(self.since))
            return current
        rc, before = await self._call("take", self._content(self.since))
        if rc == 10 and before is not None:
            raise LockHeld(before)
        if before is not None and before.token != self.token:
            return before  # a stale lock, taken over
        return None

    async def renew(self) -> None:
        rc, _ = await self._call("renew", self._content(time.time()))
        if rc == 11:
            raise LockLost(f"the deploy lock of {self.app} is no longer ours")

    async def release(self) -> None:
        await self._call("release")

    async def status(self) -> LockInfo | None:
        _, before = await self._call("show")
        return before

    async def force_release(self) -> LockInfo | None:
        _, before = await self._call("force")
        return before


def _holder_died_here(info: LockInfo) -> bool:
    """True when the lock's holder was a process on this machine that no longer runs."""
    parts = info.token.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    holder, pid = parts[0], int(parts[1])
    if holder.rpartition("@")[2] != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _parse(stdout: str) -> LockInfo | None:
    text = stdout.strip()
    if not text:
        return None
    try:
        return LockInfo(**json.loads(text.splitlines()[0]))
    except (ValueError, TypeError):
        return None
