#!/usr/bin/env python3
"""The sample web app opsconsole's demo deploys (stands in for the seed's iTrust).

It reports the version it was built from (the VERSION file next to it) on `/`
and `/health`, and needs nothing but the Python standard library, so it runs on
any host with python3.
"""

import argparse
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
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/health"):
            status = 200 if HEALTHY else 500
            body = {"status": "ok" if HEALTHY else "unhealthy", "version": VERSION, "pid": os.getpid()}
        else:
            status = 200
            body = {"app": "itrust-sample", "version": VERSION, "message": MESSAGE}
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
