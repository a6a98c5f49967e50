"""wrk as a load generator for tests and the bench: keep-alive GET load, parsed into numbers.

    r = run_wrk("http://127.0.0.1:8080/", seconds=10, connections=200)
    r.requests, r.non2xx, r.socket_errors, r.failed, r.p99, r.rps

Every target is measured with the same flags (`-t1`, keep-alive, `--timeout 5s`, `--latency`), so figures
side by side compare. `failed` = non-2xx answers (wrk counts status >= 400) + socket errors (connect,
read, write, timeout). No third-party import: the bench imports this module too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass

TIMEOUT = "5s"  # wrk's per-request timeout, the same for every target


@dataclass
class WrkResult:
    url: str
    connections: int
    requests: int  # completed responses (any status)
    seconds: float
    rps: float
    non2xx: int
    connect: int
    read: int
    write: int
    timeout: int
    p99: float  # seconds
    output: str

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def failed(self) -> int:
        return self.non2xx + self.socket_errors

    def errors_text(self) -> str:
        return (f"non-2xx {self.non2xx}, connect {self.connect}, read {self.read}, write {self.write}, "
                f"timeout {self.timeout}")

    def summary(self) -> str:
        return (f"{self.rps:>9.0f} req/s  failed {self.failed:>6} ({self.errors_text()})  "
                f"p99 {self.p99 * 1000:>8.2f} ms  ({self.requests} requests in {self.seconds:.2f}s)")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(out: str, url: str = "", connections: int = 0) -> WrkResult:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", out)
    if not m:
        raise ValueError("wrk printed no result:\n" + out)
    requests, seconds = int(m.group(1)), float(m.group(2)) * _UNITS[m.group(3)]
    rps_m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99_m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    non2xx_m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock_m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeout = (int(x) for x in sock_m.groups()) if sock_m else (0, 0, 0, 0)
    return WrkResult(
        url=url, connections=connections, requests=requests, seconds=seconds,
        rps=float(rps_m.group(1)) if rps_m else 0.0,
        non2xx=int(non2xx_m.group(1)) if non2xx_m else 0,
        connect=connect, read=read, write=write, timeout=timeout,
        p99=float(p99_m.group(1)) * _UNITS[p99_m.group(2)] if p99_m else 0.0,
        output=out,
    )


def wrk_args(url: str, seconds: float, connections: int, *, threads: int = 1, cpu: str | None = None,
             script: str | None = None) -> list[str]:
    args = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--latency", "--timeout", TIMEOUT]
    if script:
        args += ["-s", script]
    args.append(url)
    if cpu is not None:
        args = ["taskset", "-c", cpu] + args
    return args


class WrkRun:
    """wrk running in the background: `start_wrk(...)`, do things meanwhile, then `.wait()` for the result."""

    def __init__(self, url: str, seconds: float, connections: int, *, threads: int = 1, cpu: str | None = None,
                 lua: str | None = None) -> None:
        self.url = url
        self.seconds = seconds
        self.connections = connections
        self._script = None
        if lua:
            f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
            f.write(lua)
            f.close()
            self._script = f.name
        self.proc = subprocess.Popen(wrk_args(url, seconds, connections, threads=threads, cpu=cpu, script=self._script),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> WrkResult:
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            if self._script:
                os.unlink(self._script)
                self._script = None
        return parse_wrk(out, self.url, self.connections)

    def finish(self) -> WrkResult:
        """End the run now (wrk stops on SIGINT and prints what it measured so far) and return its result."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_wrk(url: str, seconds: float, connections: int, **kw) -> WrkRun:
    return WrkRun(url, seconds, connections, **kw)


def run_wrk(url: str, seconds: float, connections: int, **kw) -> WrkResult:
    """One wrk run (keep-alive GET `url` for `seconds` over `connections` connections); its parsed result."""
    return WrkRun(url, seconds, connections, **kw).wait()


def missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def need(*tools: str) -> None:
    """Skip when a tool is missing — fail instead when CI is set (as the SSH lab tests do), so CI cannot go
    green without the load tests having run."""
    import pytest  # here, not at the top: the bench imports this module without pytest

    gone = missing(*tools)
    if gone:
        reason = f"needs {' and '.join(gone)} (apt-get install {' '.join(gone)})"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"{reason} (CI is set: the load tests must run, not skip)", pytrace=False)
        pytest.skip(reason)
