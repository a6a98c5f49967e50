"""The deploy lock, held on the fleet side so two consoles on two machines exclude each other.

The lock is a small JSON file on a lock host (the group's first host, or the
app's `rollout.lock_host`), written through the transport. Taking it is atomic on that host:
a shell `mkdir` of a lock directory serialises concurrent takers, and inside
it we check the current holder. The holder renews it while working; a lock
whose last renewal is older than its TTL is *stale* — its console died — and
may be taken over (and the takeover is reported, with the old holder's name).

The mutex has an age limit too. A console SIGKILLed while it holds the mutex skips the script's
trap and leaves the directory behind, which would fail every later lock call, `lock release`
included. No lock call runs longer than CALL_TIMEOUT, so a mutex older than MUTEX_MAX_AGE has no
live holder: the next lock call breaks it, and says so.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
import asyncio
import json
import math
import os
import posixpath
import shlex
import socket
import time
from dataclasses import asdict, dataclass, replace
from typing import Awaitable, Callable, TypeVar

from opsconsole.config.model import RolloutConfig
from opsconsole.hostkeys import HostKeyError
from opsconsole.pids import pid_alive
from opsconsole.transport.base import Transport, TransportError

T = TypeVar("T")

LOCK_DIR = "locks"
_NOTICE = "opsconsole-lock:"  # marks the script's lines for us on stderr: `opsconsole-lock: WHAT SECONDS`


class LockError(OperatorError):
    """What the deploy lock reports to an operator; the message says what to do."""


class LockHeld(LockError):
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
        if self.renewed == 0.0:  # acquire() found its holder dead on this machine (and said so by zeroing it)
            state = "STALE (its console on this machine is gone)"
        elif self.stale():
            state = f"STALE (last renewed {age:.0f}s ago, ttl {self.ttl:g}s)"
        else:
            state = f"renewed {age:.0f}s ago"
        return (f"{self.app}: held by {self.holder} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"
                f" for {self.reason!r}; {state}")


# Runs on the lock host. $1 = lock file, $2 = new content, $3 = mode (take|renew|release|force|show),
# $4 = our token, $5 = now, $6 = tries at a busy mutex (0.05 s apart), $7 = the mutex's age limit
# in seconds; stdout = the lock's content before the change. The mkdir mutex makes read-check-write
# atomic against another console doing the same at the same moment.
#
# Breaking a mutex past its age limit: a claim directory named after the mutex's identity (inode
# and mtime) lets one breaker at a time at that mutex, and it removes the mutex only if it still
# has that identity, so a live mutex that replaced the stale one is never removed. A claim left
# by a breaker killed in that very moment is removed in its turn once past the age limit.
_SCRIPT = r"""
set -u
f="$1"; new="$2"; mode="$3"; token="$4"; now="$5"; tries="$6"; max_age="$7"
m="$f.mutex"
mkdir -p "$(dirname "$f")"
ident() { stat -c '%i %Y' "$1" 2>/dev/null || stat -f '%i %m' "$1" 2>/dev/null; }  # GNU/busybox, BSD
age_of() {  # seconds since the mtime in ident $1
  case "$1" in *[!0-9\ ]*|"") return 1 ;; esac
  echo $(( $(date +%s) - ${1#* } ))
}
i=0; age=0
until mkdir "$m" 2>/dev/null; do
  if id=$(ident "$m") && age=$(age_of "$id") && [ "$age" -gt "$max_age" ]; then
    claim="$m.break.${id% *}.${id#* }"
    if mkdir "$claim" 2>/dev/null; then
      broke=no
      [ "$(ident "$m")" = "$id" ] && rmdir "$m" 2>/dev/null && broke=yes
      rmdir "$claim"
      [ $broke = yes ] && { echo "@NOTICE@ broke-mutex $age" >&2; continue; }
    elif cid=$(ident "$claim") && cage=$(age_of "$cid") && [ "$cage" -gt "$max_age" ]; then
      rmdir "$claim" 2>/dev/null
    fi
  fi
  i=$((i+1)); [ $i -gt "$tries" ] && { echo "@NOTICE@ mutex-busy ${age:-0}" >&2; exit 3; }
  sleep 0.05
done
trap 'rmdir "$m"' EXIT
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
""".replace("@NOTICE@", _NOTICE)


class LockLost(LockError):
    """Our lock was taken over (we were too slow to renew) or removed by `lock release`."""


class LockUnavailable(LockError):
    """The lock script could not do its work on the lock host (unreachable, or the script failed)."""


class LockBusy(LockUnavailable):
    """The mutex on the lock host stayed taken for all of MUTEX_WAIT."""


class FleetLock:
    CALL_TIMEOUT = 30.0  # a lock call still running after this long is killed
    MUTEX_WAIT = 5.0  # how long a call waits for a busy mutex before it gives up
    MUTEX_MAX_AGE = CALL_TIMEOUT + 5  # older than any live call can be (+ 5: the host's clock, whole seconds)

    def __init__(self, transport: Transport, app: str, holder: str, ttl: float = RolloutConfig.lock_ttl,
                 on_notice: Callable[[str], None] | None = None, where: str = "") -> None:
        """`on_notice` hears what the operator should know that is no failure: a stale mutex broken. `where`
        says which host keeps the lock and how it was chosen, for the message when it cannot be reached."""
        self.transport = transport
        self.where = where or "its lock host"
        self.app = app
        self.holder = holder
        self.ttl = ttl
        self.on_notice = on_notice
        self.path = f"{LOCK_DIR}/{app}.lock"
        # The token names this process, so a console on the same machine can tell a dead holder from a live one.
        self.token = f"{holder}:{os.getpid()}:{time.time_ns()}"
        self.since = 0.0
        self.reason = ""

    async def _call(self, mode: str, content: str = "") -> tuple[int | None, LockInfo | None]:
        now = f"{time.time():.3f}"
        tries = max(1, math.ceil(self.MUTEX_WAIT / 0.05))
        command = " ".join(shlex.quote(a) for a in ["sh", "-c", _SCRIPT, "lock", self.path, content, mode, self.token,
                                                    now, str(tries), str(int(self.MUTEX_MAX_AGE))])
        try:
            result = await _to_the_end(self.transport.run(command, timeout=self.CALL_TIMEOUT))
        except HostKeyError:
            raise  # the host answered with a key we do not trust: its own message says what to check
        except TransportError as exc:
            raise LockUnavailable(f"the deploy lock of {self.app} is kept on {self.where}, which could not be "
                                  f"reached: {exc}") from exc
        said: dict[str, int] = {}
        for line in result.tail:
            if line.startswith(_NOTICE):
                what, _, seconds = line[len(_NOTICE):].strip().partition(" ")
                said[what] = int(seconds) if seconds.lstrip("-").isdigit() else 0
        mutex = posixpath.join(self.transport.root, self.path + ".mutex")
        if "broke-mutex" in said and self.on_notice is not None:
            self.on_notice(f"broke a stale lock mutex {mutex} ({said['broke-mutex']}s old, over its "
                           f"{self.MUTEX_MAX_AGE:g}s limit): a console was killed while it held it")
        if result.rc == 3 and "mutex-busy" in said:
            raise LockBusy(f"the deploy lock of {self.app} is busy: its mutex {mutex} stayed taken for "
                           f"{self.MUTEX_WAIT:g}s (it is {said['mutex-busy']}s old). Try again in a moment; a mutex "
                           f"left by a killed console is broken by the first lock call after it is "
                           f"{self.MUTEX_MAX_AGE:g}s old")
        if result.rc not in (0, 10, 11):
            raise LockUnavailable(f"the deploy lock of {self.app} on {self.transport.root}: the lock script "
                                  f"failed ({result.describe()}): {' | '.join(result.tail) or 'no output'}")
        return result.rc, _parse(result.stdout)

    def _content(self, renewed: float) -> str:
        info = LockInfo(app=self.app, holder=self.holder, since=self.since, renewed=renewed, ttl=self.ttl,
                        reason=self.reason, token=self.token)
        return json.dumps(asdict(info), sort_keys=True)

    async def acquire(self, reason: str) -> LockInfo | None:
        """Take the lock. Returns the stale lock taken over, if any; raises LockHeld if it is live.

        Cancelled meanwhile (an `abort` right after a deploy began), the take may have gone through all the
        same: what may be ours is given back (release checks the token), or it would hold every console
        out for lock_ttl."""
        try:
            return await self._acquire(reason)
        except asyncio.CancelledError:
            await asyncio.shield(self.release())
            raise

    async def _acquire(self, reason: str) -> LockInfo | None:
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

    async def keep_renewed(self, every: float, owner: asyncio.Task | None,
                           on_lost: Callable[[Exception], None]) -> None:
        """Renew the lock every `every` seconds until cancelled. A renewal that fails (LockLost: taken over
        or released; or the lock host unreachable) means the work under the lock must stop at once:
        `on_lost` hears why, then `owner`, the task doing that work, is cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except Exception as exc:  # any failure: a lock we cannot renew protects nothing
                on_lost(exc)
                if owner is not None:
                    owner.cancel()
                return

    async def release(self) -> None:
        await self._call("release")

    async def status(self) -> LockInfo | None:
        _, before = await self._call("show")
        return before

    async def force_release(self) -> LockInfo | None:
        _, before = await self._call("force")
        return before


async def _to_the_end(call: Awaitable[T]) -> T:
    """`call`'s result; cancelled meanwhile, it is let finish first, then the cancellation goes on.

    A lock script killed half-way (cancelling a transport's run kills its command, and a kill runs no EXIT
    trap) leaves the mutex taken, and every lock call fails as busy until it is MUTEX_MAX_AGE old: a roll
    that cancels its renewer and then releases hit exactly that. The script is short and bounded by
    CALL_TIMEOUT, so waiting for it costs the canceller milliseconds.
    """
    work = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait({work})
        if not work.cancelled():
            work.exception()  # retrieved: the caller is going away, whatever the call said is moot
        raise


def _holder_died_here(info: LockInfo) -> bool:
    """True when the lock's holder was a process on this machine that no longer runs."""
    parts = info.token.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    holder, pid = parts[0], int(parts[1])
    if holder.rpartition("@")[2] != socket.gethostname():
        return False
    return not pid_alive(pid)


def _parse(stdout: str) -> LockInfo | None:
    text = stdout.strip()
    if not text:
        return None
    try:
        return LockInfo(**json.loads(text.splitlines()[0]))
    except (ValueError, TypeError):
        return None
