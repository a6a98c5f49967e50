#!/usr/bin/env python3
"""The sample web app opsconsole's demo deploys (stands in for the seed's iTrust).

It reports the version it was built from (the VERSION file next to it) on `/`
and `/health`, and needs nothing but the Python standard library, so it runs on
any host with python3.
"""

import argparse
import io
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip() if (HERE / "VERSION").exists() else "dev"
# A build can mark itself broken to show a failed health gate: set HEALTHY to "no".
HEALTHY = (HERE / "HEALTHY").read_text().strip() != "no" if (HERE / "HEALTHY").exists() else True
MESSAGE = (HERE / "message.txt").read_text().strip() if (HERE / "message.txt").exists() else "hello"


class Handler(BaseHTTPRequestHandler):
    """One thread per connection (ThreadingHTTPServer, listen backlog 5), keep-alive, one write per response."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY on every accepted connection: a small write is sent at once instead of waiting for
    # the ACK of the previous one (the stdlib's own error responses still write head and body apart).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if self.path.startswith("/health"):
            status = 200 if HEALTHY else 500
            body = {"status": "ok" if HEALTHY else "unhealthy", "version": VERSION, "pid": os.getpid()}
        else:
            status = 200
            body = {"app": "itrust-sample", "version": VERSION, "message": MESSAGE}
        self._respond(status, (json.dumps(body) + "\n").encode())

    def _respond(self, status: int, data: bytes) -> None:
        """Send head and body in one write. Written apart (end_headers() writes the head), the body waited
        behind Nagle's algorithm for the client's delayed ACK of the head: ~40 ms per keep-alive request."""
        sock_writer, self.wfile = self.wfile, io.BytesIO()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            response = self.wfile.getvalue()
        finally:
            self.wfile = sock_writer
        self.wfile.write(response)

    def log_message(self, fmt: str, *args: object) -> None:  # keep the service log quiet
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description="opsconsole sample app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"sample app {VERSION} listening on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
