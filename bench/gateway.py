#!/usr/bin/env python3
"""Gateway benchmark: the upstream directly, nginx as a bare reverse proxy, and orgwarden.

In one run on one machine this script starts the stand-alone simulator (``orgwarden simulator``, the
same fast upstream for every target) and then loads, with ``wrk``:

* ``upstream``: the simulator directly;
* ``nginx``: nginx as a bare reverse proxy in front of it (skipped, with a note, when nginx is not
  installed);
* ``orgwarden``: ``orgwarden serve`` forwarding to it (``ORGWARDEN_UPSTREAM`` + an upstream key, so the
  real forwarding path is used) with every check on: a valid orgwarden API key, the
  ``anthropic-allowed-org-ids`` header naming the organization, metering on; once per ``--workers``
  value asked for (``orgwarden-w2`` is ``--workers 2``).

Each target gets the same non-streaming and streaming ``POST /v1/messages`` requests. Per target and
mode it measures throughput (``wrk -t THREADS -c CONNECTIONS``), latency at concurrency 1 (``wrk -t1
-c1``) and, for streaming, time to the first body byte at concurrency 1 with a raw-socket client
(wrk cannot report it). It prints a table with requests/s, p50/p99 latency, the latency added to the
upstream's, TTFB and its overhead, the orgwarden/nginx ratios and whether the targets of issue 3 are
met. Everything listens on 127.0.0.1; every process started is stopped on exit, Ctrl-C or error.

    .venv/bin/python bench/gateway.py                    # the full run (about 4 minutes)
    .venv/bin/python bench/gateway.py --duration 5 --latency-duration 5 --ttfb-requests 300
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL = "claude-sonnet-4-6"
UPSTREAM_KEY = "sk-bench"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MODES = ("json", "stream")

# Targets of issue 3, section 9 (2-core development machine).
MIN_THROUGHPUT_RATIO = 0.5
MAX_ADDED_P50_MS = 1.0
MAX_ADDED_P99_MS = 3.0
MAX_TTFB_OVERHEAD_MS = 1.0


class BenchError(RuntimeError):
    """A failure that stops the run with a one-line message (processes are still cleaned up)."""


class Terminated(SystemExit):
    """Raised from the SIGTERM/SIGHUP handler so that ``finally`` blocks run."""


# -- processes ---------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark itself is killed (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Managed:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Processes:
    """Every process the benchmark starts, each in its own process group, stopped by id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Managed] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Managed:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - argv built here from resolved executables
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        managed = Managed(name, process, log)
        self.running.append(managed)
        return managed

    def stop(self, managed: Managed, sig: int = signal.SIGTERM) -> None:
        """Ask the process to stop (graceful for uvicorn and nginx), then kill its group if it lingers."""
        process = managed.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  {managed.name} did not stop in {STOP_TIMEOUT:.0f} s: killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # strays of its group (uvicorn or nginx workers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if managed in self.running:
            self.running.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self.running)):
            self.stop(managed)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"    | {line}" for line in text[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(managed: Managed, port: int, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise BenchError(f"{managed.name} exited with status {managed.process.returncode}:\n{tail(managed.log)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{managed.name} did not listen on {HOST}:{port} within {timeout:.0f} s:\n{tail(managed.log)}")


def run_command(argv: Sequence[str], env: dict[str, str], timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - argv built here from resolved executables
            list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv[:3])} ... took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


# -- HTTP at concurrency 1: a raw-socket client ---------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    first_byte: float  # seconds from the request's first byte sent to the first body byte received
    total: float


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on a blocking socket: nothing between the wire and the clock.

    The time of the first body byte is the time of the ``recv`` that delivered it (for a chunked body,
    the first byte of the first chunk's data), even when it came in with the headers."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.arrivals: list[tuple[int, float]] = []  # (buffer length after a recv, when)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
        return self.sock

    def _more(self, sock: socket.socket) -> None:
        data = sock.recv(262144)
        now = time.perf_counter()
        if not data:
            raise ConnectionError("the server closed the connection mid-response")
        self.buf += data
        self.arrivals.append((len(self.buf), now))

    def _arrived(self, index: int) -> float:
        for length, when in self.arrivals:
            if length > index:
                return when
        raise AssertionError("byte not received yet")  # pragma: no cover

    def request(self, payload: bytes) -> Reply:
        sock = self._connect()
        self.buf.clear()
        self.arrivals.clear()
        sent = time.perf_counter()
        sock.sendall(payload)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._more(sock)
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        body = bytearray()
        first: float | None = None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while (nl := self.buf.find(b"\r\n", pos)) < 0:
                    self._more(sock)
                size = int(bytes(self.buf[pos:nl]).split(b";")[0], 16)
                pos = nl + 2
                if size == 0:
                    while len(self.buf) < pos + 2:
                        self._more(sock)  # the last CRLF (no trailers are expected)
                    break
                while len(self.buf) <= pos:
                    self._more(sock)
                if first is None:
                    first = self._arrived(pos)
                while len(self.buf) < pos + size + 2:
                    self._more(sock)
                body += self.buf[pos : pos + size]
                pos += size + 2
        else:
            length = int(headers.get("content-length", "0"))
            if length:
                while len(self.buf) <= pos:
                    self._more(sock)
                first = self._arrived(pos)
                while len(self.buf) < pos + length:
                    self._more(sock)
                body += self.buf[pos : pos + length]
        finished = time.perf_counter()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(status, headers, bytes(body), (first or finished) - sent, finished - sent)


# -- the requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    output_tokens: int
    api_key: str
    org_id: str

    def body(self, mode: str) -> bytes:
        request: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": max(256, self.output_tokens),
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        }
        if mode == "stream":
            request["stream"] = True
        return json.dumps(request, separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        """The same headers for every target (the simulator ignores the orgwarden ones)."""
        return {
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
            "x-api-key": self.api_key,
            "anthropic-allowed-org-ids": self.org_id,
            "anthropic-simulator-output-tokens": str(self.output_tokens),
        }

    def http_request(self, port: int, mode: str) -> bytes:
        body = self.body(mode)
        lines = ["POST /v1/messages HTTP/1.1", f"host: {HOST}:{port}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers().items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def lua(self, mode: str) -> str:
        def string(value: str) -> str:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            return f'"{escaped}"'

        out = ['wrk.method = "POST"', f"wrk.body = {string(self.body(mode).decode())}"]
        out += [f"wrk.headers[{string(k)}] = {string(v)}" for k, v in self.headers().items()]
        out.append(WRK_DONE)
        return "\n".join(out) + "\n"


# Prints wrk's own summary as one JSON line (microseconds), next to its usual text output.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def validate(reply: Reply, mode: str, who: str) -> None:
    if reply.status != 200:
        raise BenchError(f"{who} {mode}: status {reply.status}: {reply.body[:300]!r}")
    if mode == "stream" and b"event: message_stop" not in reply.body:
        raise BenchError(f"{who} stream: no message_stop event in {reply.body[:300]!r}")
    if mode == "json" and b'"type": "message"' not in reply.body and b'"type":"message"' not in reply.body:
        raise BenchError(f"{who} json: not a message: {reply.body[:300]!r}")


# -- wrk ---------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors (connect, read, write, timeout)
    non_2xx: int = 0  # answers that are not 2xx/3xx (any is a broken set-up: the run stops)

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        """wrk's summary, from the JSON line our ``done`` hook adds to its output (``--latency`` text above)."""
        match = re.search(r"^WRK_JSON (\{.*\})$", output, re.MULTILINE)
        if match:
            data = json.loads(match.group(1))
            seconds = data["duration_us"] / 1e6
            errors = sum(data[k] for k in ("connect", "read", "write", "timeout"))
            return cls(
                requests=data["requests"],
                seconds=seconds,
                rps=data["requests"] / seconds if seconds else 0.0,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
                errors=errors,
                non_2xx=data["status"],
            )
        raise BenchError(f"no summary in wrk's output (a broken Lua script?):\n{output[-2000:]}")


class Wrk:
    def __init__(self, binary: str, processes: Processes, work_dir: Path, env: dict[str, str]) -> None:
        self.binary = binary
        self.processes = processes
        self.work_dir = work_dir
        self.env = env
        self.runs = 0

    def run(self, port: int, script: Path, *, threads: int, connections: int, seconds: float, label: str) -> WrkResult:
        self.runs += 1
        argv = [
            self.binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"http://{HOST}:{port}/v1/messages",
        ]
        managed = self.processes.start(f"wrk-{self.runs:03d}-{label}", argv, self.env)
        try:
            managed.process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk ({label}) ran past its {seconds:.0f} s by 30 s") from None
        finally:
            self.processes.stop(managed)
        output = managed.log.read_text(errors="replace")
        if managed.process.returncode != 0:
            raise BenchError(f"wrk ({label}) failed ({managed.process.returncode}):\n{output[-2000:]}")
        result = WrkResult.parse(output)
        if result.non_2xx:
            raise BenchError(
                f"wrk ({label}): {result.non_2xx} of {result.requests} answers were not 2xx (see {managed.log})"
            )
        return result


# -- the targets -------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    description: str
    managed: list[Managed] = field(default_factory=list)
    completed: int = 0  # requests answered in full (compared with the usage records at the end)


NGINX_CONF = """\
worker_processes auto;
daemon off;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;

    upstream simulator {{
        server {host}:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}

    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def base_env(data_dir: Path) -> dict[str, str]:
    """The environment for orgwarden commands: none of the caller's ORGWARDEN_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGWARDEN_")}
    env.update(
        {
            "ORGWARDEN_DATA_DIR": str(data_dir),
            "ORGWARDEN_LOG_LEVEL": "warning",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # loopback only
    return env


def start_simulator(processes: Processes, orgwarden: str, env: dict[str, str], latency_ms: float) -> Target:
    port = free_port()
    sim_env = {
        **env,
        "ORGWARDEN_SIMULATOR_LATENCY_MS": str(latency_ms),
        "ORGWARDEN_SIMULATOR_TOKENS_PER_SECOND": "0",
    }
    managed = processes.start("simulator", [orgwarden, "simulator", "--host", HOST, "--port", str(port)], sim_env)
    wait_for_port(managed, port)
    return Target("upstream", port, "orgwarden simulator, directly", [managed])


def start_nginx(processes: Processes, nginx: str, work_dir: Path, upstream_port: int, env: dict[str, str]) -> Target:
    directory = work_dir / "nginx"
    directory.mkdir()
    port = free_port()
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dir
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, dir=directory, host=HOST, port=port, upstream_port=upstream_port))
    argv = [nginx, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    run_command([*argv, "-t"], env)
    managed = processes.start("nginx", argv, env)
    wait_for_port(managed, port)
    return Target("nginx", port, "nginx, bare reverse proxy (keepalive upstream, proxy_buffering off)", [managed])


def set_up_orgwarden(orgwarden: str, env: dict[str, str]) -> tuple[str, str]:
    """Initialize a fresh database; return (an API key of the default workspace, the organization id)."""
    run_command([orgwarden, "init", "--json"], env)
    key = json.loads(run_command([orgwarden, "keys", "create", "--name", "bench", "--json"], env))["key"]
    org_id = json.loads(run_command([orgwarden, "org", "--json"], env))["id"]
    return str(key), str(org_id)


def start_orgwarden(
    processes: Processes, orgwarden: str, env: dict[str, str], upstream_port: int, workers: int
) -> Target:
    port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    serve_env = {**env, "ORGWARDEN_UPSTREAM": upstream, "ORGWARDEN_UPSTREAM_API_KEY": UPSTREAM_KEY}
    name = "orgwarden" if workers == 1 else f"orgwarden-w{workers}"
    argv = [orgwarden, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    managed = processes.start(name, argv, serve_env)
    wait_for_port(managed, port)
    if f"upstream: {upstream}" not in managed.log.read_text(errors="replace"):
        raise BenchError(f"{name} does not forward to {upstream} (simulator in process?):\n{tail(managed.log)}")
    return Target(name, port, f"orgwarden serve --workers {workers}, every check on, metering on", [managed])


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Measurement:
    target: str
    mode: str
    throughput: WrkResult
    latency: WrkResult
    proxy_cpu_us: float | None = None  # CPU time of the proxy's processes per request, throughput run
    upstream_cpu_us: float | None = None  # CPU time of the simulator per request, throughput run
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    ttfb_samples: int = 0


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process of a process group (uvicorn or nginx workers too)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields: state ppid pgrp ... utime(11) stime(12)
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure_ttfb(port: int, workload: Workload, *, requests: int, warmup: int, max_seconds: float) -> list[float]:
    """Sequential streaming requests on one keep-alive connection: seconds to the first body byte."""
    payload = workload.http_request(port, "stream")
    client = RawClient(port)
    samples: list[float] = []
    try:
        for _ in range(warmup):
            validate(client.request(payload), "stream", f"port {port}")
        deadline = time.monotonic() + max_seconds
        while len(samples) < requests and time.monotonic() < deadline:
            reply = client.request(payload)
            validate(reply, "stream", f"port {port}")
            samples.append(reply.first_byte)
    finally:
        client.close()
    return samples


TTFB_WARMUP = 50


def measure(
    target: Target,
    upstream: Target,
    mode: str,
    workload: Workload,
    wrk: Wrk,
    scripts: dict[str, Path],
    args: argparse.Namespace,
) -> Measurement:
    label = f"{target.name}-{mode}"
    print(f"  {label}: throughput ({args.threads} threads, {args.connections} connections) ...", flush=True)

    def load(threads: int, connections: int, seconds: float, what: str) -> WrkResult:
        result = wrk.run(
            target.port,
            scripts[mode],
            threads=threads,
            connections=connections,
            seconds=seconds,
            label=f"{label}-{what}",
        )
        target.completed += result.requests
        return result

    if args.warmup > 0:
        load(args.threads, args.connections, args.warmup, "warmup")
    groups = [m.process.pid for m in target.managed]
    proxy_cpu, upstream_cpu = sum(map(group_cpu_seconds, groups)), group_cpu_seconds(upstream.managed[0].process.pid)
    throughput = load(args.threads, args.connections, args.duration, "throughput")
    proxy_cpu = sum(map(group_cpu_seconds, groups)) - proxy_cpu
    upstream_cpu = group_cpu_seconds(upstream.managed[0].process.pid) - upstream_cpu
    result = Measurement(target.name, mode, throughput, throughput)
    if throughput.requests:
        result.upstream_cpu_us = upstream_cpu / throughput.requests * 1e6
        if target is not upstream:
            result.proxy_cpu_us = proxy_cpu / throughput.requests * 1e6
    time.sleep(args.pause)
    print(f"  {label}: latency at concurrency 1 ...", flush=True)
    result.latency = load(1, 1, args.latency_duration, "c1")
    if mode == "stream" and args.ttfb_requests > 0:
        time.sleep(args.pause)
        print(f"  {label}: time to first byte at concurrency 1 ...", flush=True)
        samples = measure_ttfb(
            target.port, workload, requests=args.ttfb_requests, warmup=TTFB_WARMUP, max_seconds=args.ttfb_max_seconds
        )
        target.completed += len(samples) + TTFB_WARMUP
        result.ttfb_p50_ms = percentile(samples, 50) * 1000
        result.ttfb_p99_ms = percentile(samples, 99) * 1000
        result.ttfb_samples = len(samples)
    time.sleep(args.pause)
    return result


def combine(rounds: list[Measurement]) -> Measurement:
    """The median of each figure over the rounds."""
    if len(rounds) == 1:
        return rounds[0]

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    def wrk_median(results: list[WrkResult]) -> WrkResult:
        return WrkResult(
            requests=sum(r.requests for r in results),
            seconds=sum(r.seconds for r in results),
            rps=med([r.rps for r in results]),
            p50_ms=med([r.p50_ms for r in results]),
            p90_ms=med([r.p90_ms for r in results]),
            p99_ms=med([r.p99_ms for r in results]),
            max_ms=max(r.max_ms for r in results),
            errors=sum(r.errors for r in results),
            non_2xx=sum(r.non_2xx for r in results),
        )

    def optional(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return med(present) if present else None

    return Measurement(
        rounds[0].target,
        rounds[0].mode,
        wrk_median([m.throughput for m in rounds]),
        wrk_median([m.latency for m in rounds]),
        proxy_cpu_us=optional([m.proxy_cpu_us for m in rounds]),
        upstream_cpu_us=optional([m.upstream_cpu_us for m in rounds]),
        ttfb_p50_ms=optional([m.ttfb_p50_ms for m in rounds]),
        ttfb_p99_ms=optional([m.ttfb_p99_ms for m in rounds]),
        ttfb_samples=sum(m.ttfb_samples for m in rounds),
    )


# -- reporting ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
    }


def versions(orgwarden: str, nginx: str | None, wrk: str, env: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    python = Path(orgwarden).with_name("python")
    code = (
        "import importlib.metadata as m, json, sys; print(json.dumps({'python': sys.version.split()[0], "
        "**{p: m.version(p) for p in ('orgwarden', 'uvicorn', 'httpx', 'uvloop', 'httptools', 'starlette')}}))"
    )
    with contextlib.suppress(BenchError, ValueError):
        found.update(json.loads(run_command([str(python), "-c", code], env)))
    for name, argv in (("nginx", [nginx, "-v"] if nginx else None), ("wrk", [wrk, "-v"])):
        if argv is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
            text = (done.stdout + done.stderr).strip().splitlines()
            found[name] = text[0].replace("nginx version: ", "").split(" Copyright")[0] if text else "?"
    return found


def us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def report(results: dict[tuple[str, str], Measurement], targets: list[str], args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    header = (
        "| target | mode | req/s | errors | p50 c=1 (ms) | p99 c=1 (ms) | added p50 | added p99 "
        "| TTFB p50 (ms) | TTFB p99 (ms) | added TTFB p50 | added TTFB p99 | proxy CPU µs/req | upstream CPU µs/req |"
    )
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for mode in MODES:
        base = results.get(("upstream", mode))
        for name in targets:
            m = results.get((name, mode))
            if m is None:
                continue
            added50 = added99 = ttfb50 = ttfb99 = None
            if base is not None and name != "upstream":
                added50 = m.latency.p50_ms - base.latency.p50_ms
                added99 = m.latency.p99_ms - base.latency.p99_ms
                if m.ttfb_p50_ms is not None and base.ttfb_p50_ms is not None and base.ttfb_p99_ms is not None:
                    ttfb50 = m.ttfb_p50_ms - base.ttfb_p50_ms
                    ttfb99 = (m.ttfb_p99_ms or 0.0) - base.ttfb_p99_ms
            errors = m.throughput.errors + m.latency.errors
            lines.append(
                f"| {name} | {mode} | {m.throughput.rps:,.0f} | {errors} | {ms(m.latency.p50_ms)} "
                f"| {ms(m.latency.p99_ms)} | {ms(added50, True)} | {ms(added99, True)} | {ms(m.ttfb_p50_ms)} "
                f"| {ms(m.ttfb_p99_ms)} | {ms(ttfb50, True)} | {ms(ttfb99, True)} | {us(m.proxy_cpu_us)} "
                f"| {us(m.upstream_cpu_us)} |"
            )
    lines.append("")
    lines.append(
        f"req/s: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s; p50/p99: wrk -t1 -c1 "
        f"-d{args.latency_duration:g}s; TTFB: {args.ttfb_requests} sequential streaming requests, one "
        f"keep-alive connection, time to the first body byte; 'added' = minus the upstream directly; "
        f"{args.output_tokens} output tokens per answer; CPU µs/req: user+system time of the proxy's "
        f"processes (and of the simulator) over the req/s run divided by its requests; median of "
        f"{args.rounds} round(s)."
    )
    lines.append("")
    lines += ratios(results, targets)
    lines.append("")
    lines += checks(results, targets)
    return lines


def ratios(results: dict[tuple[str, str], Measurement], targets: list[str]) -> list[str]:
    lines = ["| orgwarden / nginx | mode | req/s | p50 c=1 | p99 c=1 | TTFB p50 |", "|---|---|---|---|---|---|"]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a is not None and b else "-"

    for name in (t for t in targets if t.startswith("orgwarden")):
        for mode in MODES:
            m, ng = results.get((name, mode)), results.get(("nginx", mode))
            if m is None or ng is None:
                continue
            lines.append(
                f"| {name} | {mode} | {ratio(m.throughput.rps, ng.throughput.rps)} "
                f"| {ratio(m.latency.p50_ms, ng.latency.p50_ms)} | {ratio(m.latency.p99_ms, ng.latency.p99_ms)} "
                f"| {ratio(m.ttfb_p50_ms, ng.ttfb_p50_ms)} |"
            )
    return lines if len(lines) > 2 else ["(no orgwarden/nginx ratios: nginx was not measured)"]


def checks(results: dict[tuple[str, str], Measurement], targets: list[str]) -> list[str]:
    lines = ["| check (issue 3 §9) | target | mode | measured | goal | verdict |", "|---|---|---|---|---|---|"]

    def verdict(ok: bool, by: str) -> str:
        return "met" if ok else f"**missed** by {by}"

    for name in (t for t in targets if t.startswith("orgwarden")):
        for mode in MODES:
            m = results.get((name, mode))
            base = results.get(("upstream", mode))
            ng = results.get(("nginx", mode))
            if m is None:
                continue
            if ng is not None and ng.throughput.rps > 0:
                ratio = m.throughput.rps / ng.throughput.rps
                lines.append(
                    f"| throughput vs nginx | {name} | {mode} | {ratio:.0%} ({m.throughput.rps:,.0f} / "
                    f"{ng.throughput.rps:,.0f} req/s) | ≥ {MIN_THROUGHPUT_RATIO:.0%} "
                    f"| {verdict(ratio >= MIN_THROUGHPUT_RATIO, f'{(MIN_THROUGHPUT_RATIO - ratio) * 100:.0f} points')}"
                    " |"
                )
            else:
                lines.append(f"| throughput vs nginx | {name} | {mode} | n/a (nginx not measured) | ≥ 50% | - |")
            if base is None:
                continue
            added50 = m.latency.p50_ms - base.latency.p50_ms
            added99 = m.latency.p99_ms - base.latency.p99_ms
            lines.append(
                f"| added latency p50, c=1 | {name} | {mode} | {added50:+.3f} ms | ≤ {MAX_ADDED_P50_MS:g} ms "
                f"| {verdict(added50 <= MAX_ADDED_P50_MS, f'{added50 - MAX_ADDED_P50_MS:.3f} ms')} |"
            )
            lines.append(
                f"| added latency p99, c=1 | {name} | {mode} | {added99:+.3f} ms | ≤ {MAX_ADDED_P99_MS:g} ms "
                f"| {verdict(added99 <= MAX_ADDED_P99_MS, f'{added99 - MAX_ADDED_P99_MS:.3f} ms')} |"
            )
            if mode == "stream" and m.ttfb_p50_ms is not None and base.ttfb_p50_ms is not None:
                over = m.ttfb_p50_ms - base.ttfb_p50_ms
                lines.append(
                    f"| streaming TTFB overhead (p50) | {name} | {mode} | {over:+.3f} ms "
                    f"| ≤ {MAX_TTFB_OVERHEAD_MS:g} ms "
                    f"| {verdict(over <= MAX_TTFB_OVERHEAD_MS, f'{over - MAX_TTFB_OVERHEAD_MS:.3f} ms')} |"
                )
    return lines


def count_usage_records(data_dir: Path) -> int | None:
    database = data_dir / "orgwarden.sqlite3"
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db,
    ):
        return int(db.execute("SELECT count(*) FROM usage_records").fetchone()[0])
    return None


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds of each throughput run (default 10)")
    parser.add_argument("--latency-duration", type=float, default=10, help="seconds of each c=1 run (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each target/mode")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for throughput (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads for throughput (default 2)")
    parser.add_argument("--ttfb-requests", type=int, default=2000, help="streaming requests for TTFB (0: skip)")
    parser.add_argument("--ttfb-max-seconds", type=float, default=30, help="time bound of each TTFB run")
    parser.add_argument("--output-tokens", type=int, default=16, help="tokens per answer (default 16)")
    parser.add_argument("--upstream-latency-ms", type=float, default=0, help="simulator delay before its first byte")
    parser.add_argument("--workers", default="1,2", help="orgwarden --workers values to measure (default 1,2)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; the table shows medians")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs")
    parser.add_argument("--no-nginx", action="store_true", help="skip nginx even when installed")
    parser.add_argument("--orgwarden", help="the orgwarden executable (default: next to this Python, else PATH)")
    parser.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, database, configs)")
    args = parser.parse_args(argv)
    args.worker_counts = sorted({int(w) for w in str(args.workers).split(",") if w.strip()})
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: a comma-separated list of positive integers")
    if args.duration < 1 or args.latency_duration < 1 or args.connections < 1 or args.threads < 1 or args.rounds < 1:
        parser.error("--duration, --latency-duration, --connections, --threads and --rounds must be positive")
    args.threads = min(args.threads, args.connections)
    return args


def find_orgwarden(given: str | None) -> str:
    if given:
        return str(Path(given).resolve())
    beside = Path(sys.executable).with_name("orgwarden")
    if beside.exists():
        return str(beside)
    found = shutil.which("orgwarden")
    if found is None:
        raise BenchError("orgwarden is not installed: run `make serve` once, or pass --orgwarden")
    return found


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(128 + signum)


@contextlib.contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="orgwarden-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"temp dir kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    wrk_binary = shutil.which("wrk")
    if wrk_binary is None:
        print("error: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    nginx_binary = None if args.no_nginx else (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"))
    with work_dir(args.keep_temp) as tmp:
        logs = tmp / "logs"
        logs.mkdir()
        processes = Processes(logs)
        try:
            return run(args, tmp, processes, wrk_binary, nginx_binary)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping everything", file=sys.stderr)
            return 130
        except Terminated as exc:
            print("\nterminated: stopping everything", file=sys.stderr)
            return int(exc.code or 1)
        finally:
            processes.stop_all()


def run(args: argparse.Namespace, tmp: Path, processes: Processes, wrk_binary: str, nginx: str | None) -> int:
    orgwarden = find_orgwarden(args.orgwarden)
    data_dir = tmp / "data"
    data_dir.mkdir()
    env = base_env(data_dir)
    info = {"machine": machine(), "versions": versions(orgwarden, nginx, wrk_binary, env)}
    print(f"machine: {info['machine']}")
    print(f"versions: {info['versions']}")

    api_key, org_id = set_up_orgwarden(orgwarden, env)
    workload = Workload(args.output_tokens, api_key, org_id)
    scripts: dict[str, Path] = {}
    for mode in MODES:
        scripts[mode] = tmp / f"{mode}.lua"
        scripts[mode].write_text(workload.lua(mode))

    targets = [start_simulator(processes, orgwarden, env, args.upstream_latency_ms)]
    upstream_port = targets[0].port
    notes: list[str] = []
    if nginx is None:
        notes.append(
            "nginx skipped: " + ("--no-nginx" if args.no_nginx else "not installed (apt-get install -y nginx)")
        )
    else:
        targets.append(start_nginx(processes, nginx, tmp, upstream_port, env))
    orgwarden_targets = [start_orgwarden(processes, orgwarden, env, upstream_port, w) for w in args.worker_counts]
    targets += orgwarden_targets
    for target in targets:  # every path answers, and answers right, before any load
        client = RawClient(target.port)
        try:
            for mode in MODES:
                validate(client.request(workload.http_request(target.port, mode)), mode, target.name)
        finally:
            client.close()
        print(f"{target.name}: http://{HOST}:{target.port} ({target.description})")
    for note in notes:
        print(f"note: {note}")

    wrk = Wrk(wrk_binary, processes, tmp, env)
    rounds: dict[tuple[str, str], list[Measurement]] = {}
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}", flush=True)
        for mode in MODES:
            for target in targets:
                rounds.setdefault((target.name, mode), []).append(
                    measure(target, targets[0], mode, workload, wrk, scripts, args)
                )
    results = {key: combine(values) for key, values in rounds.items()}
    load_after = os.getloadavg()

    for target in orgwarden_targets:  # a graceful stop flushes the usage records still queued
        for managed in target.managed:
            processes.stop(managed)
    records = count_usage_records(data_dir)
    completed = sum(t.completed for t in orgwarden_targets)

    names = [t.name for t in targets]
    lines = report(results, names, args)
    print()
    print("\n".join(lines))
    print()
    for note in notes:
        print(f"note: {note}")
    print(
        f"metering: {records} usage records written for {completed} completed orgwarden requests (plus the "
        "requests in flight when each wrk run stopped, recorded as aborted)"
    )
    print(f"load average: before {info['machine']['load_average']}, after {tuple(round(x, 2) for x in load_after)}")
    if args.json_out:
        payload = {
            **info,
            "load_average_after": load_after,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "notes": notes,
            "usage_records": records,
            "completed_orgwarden_requests": completed,
            "results": [asdict(m) for m in results.values()],
            "rounds": [asdict(m) for values in rounds.values() for m in values],
            "table": lines,
        }
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
