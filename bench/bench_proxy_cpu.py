"""CPU cost of one proxied request, with no sockets: the embedded proxy's Python path alone.

    .venv/bin/python bench/bench_proxy_cpu.py [-n 200000] [--profile] [--compare REV ...] [--asyncio]

Drives the real ClientConnection / UpstreamConnection / Frontend with in-memory
transports: each round feeds one keep-alive GET (what wrk sends) to the client
side, takes the head the proxy wrote upstream, feeds the backend's answer (what
the fast backend of bench_proxy.py sends) to the upstream side and takes what
the proxy wrote to the client. That is the same 2 reads + 2 writes a real
request costs, minus the kernel. Prints microseconds per request (best of
--repeat runs), optionally a cProfile top-20 by own time.

--compare REV runs the same measurement against the `opsconsole` package of a
git revision (extracted with `git archive` into a temporary directory) and this
tree, interleaved, so a change is measured against its base on the same machine
state. The first round's bytes are checked against what the proxy must send, so
a "faster" path that forwards the wrong thing fails here instead of looking good.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# What wrk sends, and what the fast backend (HAProxy's `http-request return`) answers.
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-length: 23\r\ncontent-type: text/plain\r\n"
            b"cache-control: no-cache\r\n\r\nhello from the backend\n")
EXPECT_UPSTREAM = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Forwarded-For: 127.0.0.1\r\n"
                   b"X-Forwarded-Proto: http\r\n\r\n")
EXPECT_CLIENT = RESPONSE
BATCH = 32  # requests handled per pass of the event loop


def _setup():
    from proxy_memory import memory_proxy  # tests/proxy_memory.py: the same set-up the fast-path test drives

    p = memory_proxy()
    return p.fe, p.client, p.client_transport, p.upstream, p.upstream_transport, p.logged


async def _check(client, ct, up, ut, logged) -> None:
    client.data_received(REQUEST)
    await asyncio.sleep(0)  # the end of a loop pass: what the proxy writes after one
    sent = ut.take()
    if sent != EXPECT_UPSTREAM:
        raise SystemExit(f"upstream got {sent!r}\nexpected    {EXPECT_UPSTREAM!r}\nlog: {logged}")
    up.data_received(RESPONSE)
    await asyncio.sleep(0)
    got = ct.take()
    if got != EXPECT_CLIENT:
        raise SystemExit(f"client got {got!r}\nexpected   {EXPECT_CLIENT!r}\nlog: {logged}")
    if ct.closing or ut.closing or up.closed or up not in up.member.idle:
        raise SystemExit(f"a connection was closed or not kept: log: {logged}")


async def _rounds(n: int, client, ct, up, ut) -> None:
    feed_client, feed_up = client.data_received, up.data_received
    cw, uw = ct.written, ut.written
    for i in range(n):
        feed_client(REQUEST)
        uw.clear()
        feed_up(RESPONSE)
        cw.clear()
        if i % BATCH == BATCH - 1:
            # One pass of the event loop per BATCH requests, as under load (bench_proxy.py's wrk -c50 gives
            # 20-50 ready sockets per epoll wakeup): whatever the proxy does once per pass runs here.
            await asyncio.sleep(0)
            cw.clear()
            uw.clear()
    await asyncio.sleep(0)
    cw.clear()
    uw.clear()


async def _measure(n: int, repeat: int, profile: bool) -> float:
    fe, client, ct, up, ut, logged = _setup()
    await _check(client, ct, up, ut, logged)
    await _rounds(min(n, 20000), client, ct, up, ut)  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time: a shared machine takes the core away, not the work
        await _rounds(n, client, ct, up, ut)
        best = min(best, time.process_time() - t0)
    await _check(client, ct, up, ut, logged)  # still in step after all those rounds
    stats = up.member.stats
    if stats.requests < n * repeat:
        raise SystemExit(f"only {stats.requests} requests counted for {n * repeat} sent")
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        await _rounds(n, client, ct, up, ut)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())
    return best / n * 1e6


def run_here(args: argparse.Namespace) -> float:
    async def main() -> float:
        return await _measure(args.n, args.repeat, args.profile)

    if args.asyncio:
        return asyncio.run(main())
    import uvloop
    return uvloop.run(main())


def compare(args: argparse.Namespace) -> None:
    """Each revision's package in its own process (imports are cached per process), interleaved."""
    trees: list[tuple[str, Path]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        for rev in args.compare:
            dest = Path(tmp) / rev.replace("/", "_")
            dest.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "opsconsole"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
            trees.append((rev, dest))
        trees.append(("worktree", ROOT))
        results: dict[str, list[float]] = {name: [] for name, _ in trees}
        for _ in range(args.rounds):
            for name, tree in trees:
                argv = [sys.executable, __file__, "-n", str(args.n), "--repeat", str(args.repeat), "--quiet"]
                if args.asyncio:
                    argv.append("--asyncio")
                out = subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                                     capture_output=True, text=True).stdout
                results[name].append(float(out.split()[0]))
        for name, us in results.items():
            print(f"{name:<12} best {min(us):6.2f} us/request   rounds: " + " ".join(f"{u:.2f}" for u in us))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=100000, help="requests per timed run")
    p.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts")
    p.add_argument("--profile", action="store_true", help="also print a cProfile top-20 (own time)")
    p.add_argument("--compare", nargs="+", metavar="REV", help="git revisions to measure against this tree")
    p.add_argument("--rounds", type=int, default=3, help="with --compare: interleaved rounds per tree")
    p.add_argument("--asyncio", action="store_true", help="asyncio's own loop instead of uvloop")
    p.add_argument("--quiet", action="store_true", help="print only the figure (used by --compare)")
    args = p.parse_args()
    if args.compare:
        compare(args)
        return
    sys.path.insert(0, os.environ.get("PYTHONPATH") or str(ROOT))
    us = run_here(args)
    if args.quiet:
        print(f"{us:.3f}")
    else:
        import opsconsole
        print(f"{us:.2f} us/request ({args.n} keep-alive GETs x {args.repeat}, best run; "
              f"{'asyncio' if args.asyncio else 'uvloop'}; opsconsole from {Path(opsconsole.__file__).parent})")


if __name__ == "__main__":
    main()
