"""A plain stdlib backend, the way small real apps look: `http.server.ThreadingHTTPServer`, one thread per
connection, the DEFAULT listen backlog (`request_queue_size` 5 — deliberately not raised), HTTP/1.1 keep-alive.

Run as a script it is one member:

    python tests/stdlib_backend.py NAME [PORT] [--delay-ms N]

prints its port on stdout, then serves until killed:

- `GET /health` → 200 `ok` (never delayed);
- `GET /inflight` → 200 with the number of other answers being made right now (never delayed): a test asks
  the member itself whether a proxy that called it drained told the truth;
- any other GET/HEAD/POST → 200 with a small JSON body naming the member and a header `X-Member: NAME`;
- `?ms=N` delays that answer N ms; `--delay-ms N` delays EVERY answer but /health by N ms (a slow member).

Each answer is written in one `wfile.write` (head and body built as one bytes object) with Nagle off, so it
leaves in one segment at once (~1 ms), not after the ~40 ms delayed-ACK/Nagle dance.

The helpers `start_backends` / `stop_backends` start members as subprocesses (a test can SIGKILL one) and
stop them again. No third-party import here: the bench imports this module too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve()


# -- the server (in the subprocess) -----------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True
    server_version = "stdlib-backend"
    member = "backend"  # set per process
    delay_ms = 0
    inflight = 0  # answers being made now (not /health, not /inflight), across the connection threads
    inflight_lock = threading.Lock()

    def log_message(self, format, *args):  # noqa: A002 (the stdlib's name) — quiet
        pass

    def _answer(self, *, head_only: bool) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # a POST body: read it so the next request on the connection parses
        if url.path == "/health":
            body = b"ok\n"
            ctype = b"text/plain"
        elif url.path == "/inflight":
            body = b"%d\n" % _Handler.inflight
            ctype = b"text/plain"
        else:
            with _Handler.inflight_lock:
                _Handler.inflight += 1
            try:
                body = self._member_answer(url)
            finally:
                with _Handler.inflight_lock:
                    _Handler.inflight -= 1
            ctype = b"application/json"
        conn = b""
        if self.close_connection:
            conn = b"Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            conn = b"Connection: keep-alive\r\n"  # a 1.0 client that asked for keep-alive
        head = (b"HTTP/1.1 200 OK\r\nServer: stdlib-backend\r\nContent-Type: %b\r\nX-Member: %b\r\n"
                b"Content-Length: %d\r\n%b\r\n" % (ctype, self.member.encode(), len(body), conn))
        self.wfile.write(head if head_only else head + body)  # one write: one segment, no Nagle wait

    def _member_answer(self, url) -> bytes:  # type: ignore[no-untyped-def]
        delay = self.delay_ms
        q = parse_qs(url.query)
        if "ms" in q:
            try:
                delay = max(delay, int(q["ms"][0]))
            except ValueError:
                pass
        if delay:
            time.sleep(delay / 1000)
        return json.dumps({"member": self.member, "method": self.command, "path": self.path,
                           "pid": os.getpid()}).encode()

    def do_GET(self):
        self._answer(head_only=False)

    def do_POST(self):
        self._answer(head_only=False)

    def do_HEAD(self):
        self._answer(head_only=True)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Quiet: clients (wrk at its end, a proxy closing idle connections) reset connections all the time.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def serve(name: str, port: int, delay_ms: int) -> None:
    handler = type("Handler", (_Handler,), {"member": name, "delay_ms": delay_ms})
    server = _Server(("127.0.0.1", port), handler)  # request_queue_size stays 5: the point
    assert server.request_queue_size == 5
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


# -- helpers for tests and the bench (in the parent process) ----------------------------------------------

@dataclass
class StdlibBackend:
    """One member process. Duck-compatible with test_proxy_support.Backend (name, port, proc, kill)."""

    name: str
    proc: subprocess.Popen
    port: int
    delay_ms: int = 0

    def kill(self) -> None:
        """SIGKILL (a crash: no goodbye to anyone) and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    stop = kill

    def inflight(self) -> int:
        """How many answers the member is making now, asked of the member itself (not through a proxy)."""
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{self.port}/inflight", timeout=5) as r:
            return int(r.read())


def start_backend(name: str, *, port: int = 0, delay_ms: int = 0, cpu: str | None = None) -> StdlibBackend:
    """Start one member (optionally pinned with `taskset -c cpu`) and return once it listens."""
    args = [sys.executable, str(HERE), name, str(port)]
    if delay_ms:
        args += ["--delay-ms", str(delay_ms)]
    if cpu is not None:
        args = ["taskset", "-c", cpu] + args
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"stdlib backend {name} did not start (printed {line!r})")
    return StdlibBackend(name, proc, int(line), delay_ms)


def start_backends(names, *, delay_ms: dict[str, int] | None = None, cpu: str | None = None) -> list[StdlibBackend]:
    """Start one member per name; `delay_ms` maps a name to its --delay-ms. All stopped again on failure."""
    started: list[StdlibBackend] = []
    try:
        for n in names:
            started.append(start_backend(n, delay_ms=(delay_ms or {}).get(n, 0), cpu=cpu))
    except BaseException:
        stop_backends(started)
        raise
    return started


def stop_backends(backends) -> None:
    for b in backends:
        try:
            b.kill()
        except Exception:  # noqa: BLE001 — stopping the rest matters more
            pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="a stdlib ThreadingHTTPServer member (backlog 5, keep-alive)")
    ap.add_argument("name")
    ap.add_argument("port", nargs="?", type=int, default=0)
    ap.add_argument("--delay-ms", type=int, default=0, help="every answer but /health takes this long")
    args = ap.parse_args(argv)
    serve(args.name, args.port, args.delay_ms)


if __name__ == "__main__":
    main()
