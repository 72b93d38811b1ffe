#!/usr/bin/env python3
"""CPU instructions per proxied request of ``orgwarden serve``, counted by valgrind: a figure this
machine's drift cannot move.

``bench/gateway.py`` measures time, and on a shared 2-core VM the same code's CPU time per request
moves by up to 50% between rounds (bench/RESULTS.md), so a 10% improvement can hide in one run and
appear twice over in the next. This script runs the server under ``valgrind --tool=cachegrind
--cache-sim=no``, which counts the instructions the process executes in user space, sends it a fixed
number of JSON (or, ``--mode stream``, streaming) ``POST /v1/messages`` requests (8 connections,
kept alive, from this process), stops it gracefully (so metering is written and counted), and does
all of that twice: with ``N / 5`` and with ``N`` requests. The difference divided by the difference
in requests is the instructions one request costs, start-up and shutdown cancelled out. Repeated
runs agree to about ±2%.

What it leaves out: time in the kernel (system calls, which nginx pays as well) and the effect of
caches; it is a measure for comparing two versions of orgwarden, not for comparing with nginx.

Same set-up as ``bench/gateway.py`` (the stand-alone simulator as upstream, every check on, metering
to SQLite; ``memory`` and ``redis`` with the same limits), whose helpers it uses. Needs ``valgrind``
(``apt-get install -y valgrind``) and, for ``redis``, Redis at ``--redis-url``. About two minutes per
variant at the default 500 requests.

    .venv/bin/python bench/instructions.py [--limits off,memory,redis] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as bench  # bench/gateway.py, next to this file

CONNECTIONS = 8


async def fire(port: int, payload: bytes, total: int) -> None:
    """``total`` requests over ``CONNECTIONS`` kept-alive connections; every answer must be a 200."""
    left = [total]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(bench.HOST, port)
        try:
            while left[0] > 0:
                left[0] -= 1
                writer.write(payload)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise bench.BenchError(f"not a 200: {head[:300]!r}")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if length is not None:
                    await reader.readexactly(int(length.group(1)))
                elif re.search(rb"(?im)^transfer-encoding: *chunked", head):
                    await reader.readuntil(b"\r\n0\r\n\r\n")  # a stream: to its last chunk
                else:
                    raise bench.BenchError(f"neither content-length nor chunked: {head[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))


def count(
    limits: str,
    requests: int,
    redis_url: str,
    server: str = "current",
    extra_env: dict[str, str] | None = None,
    mode: str = "json",
) -> int:
    """Instructions of one server run that answered ``requests`` requests (after 20 of warm-up): the
    sum over its processes (valgrind follows forks, e.g. Granian's worker, and ``--trace-children``
    execs), so that every server's workers are counted."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-instructions-") as name:
        tmp = Path(name)
        processes = bench.Processes(tmp)
        try:
            orgwarden = bench.find_orgwarden(None)
            env = bench.base_env(tmp / "data")
            (tmp / "data").mkdir()
            simulator = bench.start_simulator(processes, orgwarden, env, 0)
            if limits == "off":
                key, org_id = bench.set_up_orgwarden(orgwarden, env)
                workload = bench.Workload(16, key, org_id)
            else:
                env = bench.base_env(tmp / "data-limits")
                (tmp / "data-limits").mkdir()
                workload = bench.set_up_limits(processes, orgwarden, env, 16).workload
            port = bench.free_port()
            serve_env = {
                **env,
                "ORGWARDEN_UPSTREAM": f"http://{bench.HOST}:{simulator.port}",
                "ORGWARDEN_UPSTREAM_API_KEY": bench.UPSTREAM_KEY,
            }
            if limits == "redis":
                serve_env["ORGWARDEN_REDIS_URL"] = redis_url
            serve_env.update(extra_env or {})
            out = tmp / "cachegrind.out"
            argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes",
                    f"--cachegrind-out-file={out}.%p", sys.executable,
                    *bench.server_argv(server, orgwarden, port, 1)]  # fmt: skip
            running = processes.start("orgwarden", argv, serve_env)
            bench.wait_for_port(running, port, timeout=600)
            payload = workload.http_request(port, mode)
            asyncio.run(fire(port, payload, 20))
            asyncio.run(fire(port, payload, requests))
            running.process.send_signal(signal.SIGTERM)
            running.process.wait(600)
            found = re.findall(r"I\s+refs:\s+([\d,]+)", running.log.read_text(errors="replace"))
            if not found:
                raise bench.BenchError(f"no instruction count in the server's output:\n{bench.tail(running.log)}")
            return sum(int(refs.replace(",", "")) for refs in found)
        finally:
            processes.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default="off,memory,redis", help="variants: off, memory, redis")
    parser.add_argument("--requests", type=int, default=500, help="requests of the longer run (default 500)")
    parser.add_argument("--redis-url", default=bench.DEFAULT_REDIS_URL)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for the server, e.g. ORGWARDEN_ACCESS_LOG=false (repeatable)")
    parser.add_argument("--server", default="current", help=f"servers: {', '.join(bench.SERVERS)} (default current)")
    parser.add_argument("--mode", default="json", help="json, stream or json,stream (default json)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    short = args.requests // 5
    print("| variant | instructions / request | runs (N/5, N requests) |\n|---|---|---|")
    for mode in args.mode.split(","):
        for server in args.server.split(","):
            for limits in args.limits.split(","):
                extra = dict(item.split("=", 1) for item in args.env)
                low = count(limits, short, args.redis_url, server, extra, mode)
                high = count(limits, args.requests, args.redis_url, server, extra, mode)
                per_request = (high - low) / (args.requests - short)
                name = bench.target_name(limits, 1, server) + ("" if mode == "json" else f" ({mode})")
                print(f"| {name} | {per_request:,.0f} | {low:,} / {high:,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
