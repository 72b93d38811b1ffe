#!/usr/bin/env python3
"""Gateway benchmark: the upstream directly, nginx as a bare reverse proxy, and orgwarden with and without limits.

In one run on one machine this script starts the stand-alone simulator (``orgwarden simulator``, the
same fast upstream for every target) and then loads, with ``wrk``:

* ``upstream``: the simulator directly;
* ``nginx``: nginx as a bare reverse proxy in front of it (skipped, with a note, when nginx is not
  installed);
* ``orgwarden``: ``orgwarden serve`` forwarding to it (``ORGWARDEN_UPSTREAM`` + an upstream key, so the
  real forwarding path is used) with every check on: a valid orgwarden API key, the
  ``anthropic-allowed-org-ids`` header naming the organization, metering on, no limit set; once per
  ``--workers`` value asked for (``orgwarden-w2`` is ``--workers 2``);
* ``orgwarden+limits``: the same, one process, with limits on and counted in process: organization
  ``requests_per_minute``, ``input_tokens_per_minute`` and ``output_tokens_per_minute`` for the model's
  group, an organization and a workspace monthly spend limit, all far above what the run can use, so
  that every request is checked and reserved against three buckets and two budgets (and settled
  afterwards) but none is refused;
* ``orgwarden+redis``: the same limits counted in Redis (``ORGWARDEN_REDIS_URL``, a database of its
  own, ``--redis-url``), once per ``--workers`` value (``orgwarden+redis-w2``).

``--limits off,memory,redis`` picks the orgwarden variants (default: all). ``--server
current,uvicorn-asgi,granian`` runs each of them under each HTTP server named (issue 15): ``current`` is
``orgwarden serve``; ``uvicorn-asgi`` (plain ASGI on uvicorn), ``granian`` and ``granian-st`` (its
single-threaded Rust runtime) load the same app factory with the same environment; their targets are
named ``orgwarden@granian`` and so on. The limit variants use a
database of their own (the plain ``orgwarden`` targets run without any limit); their limits are set
through the Admin API before they start. Before any load, each limit variant must answer with
``anthropic-ratelimit-*`` headers showing the limits set, and must refuse a probe key whose own spend
limit (1 cent) is below a request's worst case, which shows that spend limits are enforced in it too;
for Redis, the spend counters and buckets must be in the Redis database. Any non-2xx answer during
the load stops the run, so every figure comes from requests that were checked and admitted.

Each target gets the same non-streaming and streaming ``POST /v1/messages`` requests. Per target and
mode it measures throughput (``wrk -t THREADS -c CONNECTIONS``), the CPU time per request of the
proxy (and of the simulator and, for Redis variants, of redis-server), latency at concurrency 1
(``wrk -t1 -c1``) and, for streaming, time to the first body byte at concurrency 1 with a raw-socket
client (wrk cannot report it). It prints a table with requests/s, p50/p99 latency, the latency added
to the upstream's, TTFB and its overhead, the orgwarden/nginx ratios, the cost of limits (each limit
variant against the same orgwarden without limits) and whether the targets of issues 3 and 4 are
met. Everything listens on 127.0.0.1; every process started is stopped on exit, Ctrl-C or error.

    .venv/bin/python bench/gateway.py                    # the full run (about 8 minutes)
    .venv/bin/python bench/gateway.py --limits off,memory --workers 1
    .venv/bin/python bench/gateway.py --duration 5 --latency-duration 5 --ttfb-requests 300
    .venv/bin/python bench/gateway.py --limits off --workers 1 --server current,uvicorn-asgi,granian
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
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL = "claude-sonnet-4-6"
UPSTREAM_KEY = "sk-bench"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MODES = ("json", "stream")
LIMIT_MODES = ("off", "memory", "redis")
# The HTTP server under the orgwarden targets (issue 15, point 8): ``current`` is ``orgwarden serve``
# (uvicorn with api/http_protocol.py's protocol); the others load the same ASGI app factory, with the
# same ORGWARDEN_* environment, through a server's public command line only.
SERVERS = ("current", "uvicorn-asgi", "granian", "granian-st")
APP_FACTORY = "orgwarden.api.app:app_from_environment"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_PREFIX = "orgwarden:"  # every key orgwarden writes to Redis starts with it

# The limits of the limit variants: far above what a run can use, so that none ever refuses.
RATE_LIMIT_VALUE = 10**9  # per minute, for requests, input tokens and output tokens alike
SPEND_LIMIT_CENTS = 100_000_000  # USD 1,000,000 a month (Redis keeps counters exact up to about 9 million)
PROBE_SPEND_LIMIT_CENTS = 1  # the probe key's own limit: below any request's worst case, so it is refused

# Targets of issue 3, section 9 (2-core development machine).
MIN_THROUGHPUT_RATIO = 0.5
# Target of issue 4: with limits on (in process and with Redis), throughput stays >= 45% of nginx's.
MIN_THROUGHPUT_RATIO_LIMITS = 0.45
MAX_ADDED_P50_MS = 1.0
MAX_ADDED_P99_MS = 3.0
MAX_TTFB_OVERHEAD_MS = 1.0
# Targets of issue 15 (the server layer), orgwarden without limits: JSON throughput >= 60% of nginx's,
# added p50 at concurrency 1 <= 0.5 ms, streaming TTFB within 1 ms of nginx's, all in the same run.
MIN_JSON_RATIO_ISSUE15 = 0.6
MAX_ADDED_P50_MS_ISSUE15 = 0.5
MAX_TTFB_OVER_NGINX_MS = 1.0


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


# -- Redis: a minimal RESP client (the script needs no package beyond the standard library) ------------


class RedisClient:
    """Just enough of the Redis protocol to check, measure and clean up the benchmark's own keys."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "redis":
            raise BenchError(f"--redis-url: only redis:// URLs are supported, not {url!r}")
        self.sock = socket.create_connection((parsed.hostname or HOST, parsed.port or 6379), timeout=timeout)
        self.file = self.sock.makefile("rb")
        if parsed.password:
            self.call("AUTH", *([urllib.parse.unquote(parsed.username)] if parsed.username else []), parsed.password)
        self.call("SELECT", (parsed.path.strip("/") or "0"))

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def call(self, *words: str) -> Any:
        out = [f"*{len(words)}\r\n".encode()]
        for word in words:
            data = word.encode()
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise BenchError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError(f"Redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2].decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise BenchError(f"Redis: unexpected reply {line!r}")

    def keys(self, pattern: str) -> list[str]:
        found: list[str] = []
        cursor = "0"
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            found += batch
            if cursor == "0":
                return sorted(set(found))

    def delete_prefix(self, prefix: str) -> int:
        names = self.keys(prefix + "*")
        for start in range(0, len(names), 500):
            self.call("DEL", *names[start : start + 500])
        return len(names)

    def cpu_seconds(self) -> float:
        """redis-server's user + system CPU time so far (``INFO cpu``)."""
        info = dict(line.split(":", 1) for line in str(self.call("INFO", "cpu")).splitlines() if ":" in line)
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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
    limits: str = "off"  # orgwarden: off, memory or redis
    workers: int = 0  # orgwarden: --workers
    database: Path | None = None  # orgwarden: its data directory (each database's records are counted)
    workload: Workload | None = None  # the requests it gets (its key and organization)
    scripts: dict[str, Path] = field(default_factory=dict)  # wrk's Lua script per mode
    redis: RedisClient | None = None  # Redis variants: for redis-server's CPU time during the load


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


def target_name(limits: str, workers: int, server: str = "current") -> str:
    base = {"off": "orgwarden", "memory": "orgwarden+limits", "redis": "orgwarden+redis"}[limits]
    name = base if workers == 1 else f"{base}-w{workers}"
    return name if server == "current" else f"{name}@{server}"


def server_argv(server: str, orgwarden: str, port: int, workers: int) -> list[str]:
    """The command that serves orgwarden on ``port`` with ``server`` (see ``SERVERS``).

    ``uvicorn-asgi`` and ``granian`` load ``app_from_environment``, the app factory uvicorn's workers
    use, so they read the same ORGWARDEN_* settings as ``orgwarden serve``; their executables are the
    ones installed beside orgwarden's."""
    where = ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    if server == "current":
        return [orgwarden, "serve", *where]
    if server == "uvicorn-asgi":  # plain ASGI: the data plane goes through Dispatcher -> Gateway.__call__
        return [server_executable("uvicorn", orgwarden), "--factory", APP_FACTORY, *where,
                "--http", "httptools", "--loop", "uvloop", "--log-level", "warning",
                "--proxy-headers", "--no-server-header"]  # fmt: skip  # as serve sets them
    if server.startswith("granian"):  # ASGI with its lifespan (the recorder, the key cache); Rust HTTP/1.1
        # granian-st: Rust's single-threaded runtime (for ASGI Granian picks the multi-threaded one)
        mode = ["--runtime-mode", "st"] if server == "granian-st" else []
        return [server_executable("granian", orgwarden), "--interface", "asgi", "--factory", APP_FACTORY,
                *where, "--http", "1", "--loop", "uvloop", *mode, "--log-level", "warning", "--no-ws"]  # fmt: skip
    raise BenchError(f"unknown server {server!r}")


def server_executable(name: str, orgwarden: str) -> str:
    """``name`` beside the orgwarden executable (the same virtualenv), else on ``PATH``."""
    beside = Path(orgwarden).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed beside {orgwarden} (pip install {name} into that virtualenv)")
    return found


def start_orgwarden(
    processes: Processes,
    orgwarden: str,
    env: dict[str, str],
    upstream_port: int,
    workers: int,
    limits: str = "off",
    redis_url: str | None = None,
    server: str = "current",
) -> Target:
    port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    serve_env = {**env, "ORGWARDEN_UPSTREAM": upstream, "ORGWARDEN_UPSTREAM_API_KEY": UPSTREAM_KEY}
    if limits == "redis" or workers > 1:  # serve refuses several workers without Redis, even with no limit set
        assert redis_url is not None
        serve_env["ORGWARDEN_REDIS_URL"] = redis_url
    name = target_name(limits, workers, server)
    managed = processes.start(name, server_argv(server, orgwarden, port, workers), serve_env)
    wait_for_port(managed, port)
    # Only serve prints where it forwards; the other servers get the same environment (the simulator's
    # CPU time per request, measured for every target, shows that they forward too).
    if server == "current" and f"upstream: {upstream}" not in managed.log.read_text(errors="replace"):
        raise BenchError(f"{name} does not forward to {upstream} (simulator in process?):\n{tail(managed.log)}")
    what = {
        "off": "no limits"
        + (" (ORGWARDEN_REDIS_URL set, as several workers require; no limit uses it)" if workers > 1 else ""),
        "memory": "limits on, counted in process",
        "redis": f"limits on, counted in Redis ({redis_url})",
    }[limits]
    how = {
        "current": "orgwarden serve",
        "uvicorn-asgi": "uvicorn --factory (plain ASGI, httptools, uvloop)",
        "granian": "granian --interface asgi --factory (uvloop)",
        "granian-st": "granian --interface asgi --factory --runtime-mode st (uvloop)",
    }[server]
    description = f"{how} --workers {workers}, every check on, metering on, {what}"
    return Target(
        name, port, description, [managed], limits=limits, workers=workers, database=Path(env["ORGWARDEN_DATA_DIR"])
    )


def admin_call(port: int, admin_key: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One Admin API call; its JSON answer (an error answer stops the run)."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01", "content-type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"Admin API {method} {path}: {exc.code} {exc.read()[:500]!r}") from None
    except OSError as exc:
        raise BenchError(f"Admin API {method} {path}: {exc}") from None


@dataclass
class LimitsDatabase:
    """The database of the limit variants: its key, organization and the probe key (see ``check_limits``)."""

    workload: Workload
    probe: Workload
    workspace_id: str


def set_up_limits(processes: Processes, orgwarden: str, env: dict[str, str], output_tokens: int) -> LimitsDatabase:
    """A fresh database with the limits of the limit variants, set through the Admin API of a short-lived
    ``orgwarden serve`` (stopped before the measured ones start, so they load the limits at start-up)."""
    admin_key = json.loads(run_command([orgwarden, "init", "--json"], env))["admin_api_key"]
    created = json.loads(run_command([orgwarden, "keys", "create", "--name", "bench", "--json"], env))
    probe = json.loads(run_command([orgwarden, "keys", "create", "--name", "bench-probe", "--json"], env))
    org_id = str(json.loads(run_command([orgwarden, "org", "--json"], env))["id"])
    workspace_id = str(created["scope"]["workspace_id"])
    port = free_port()
    managed = processes.start("orgwarden-setup", [orgwarden, "serve", "--host", HOST, "--port", str(port)], env)
    try:
        wait_for_port(managed, port)
        groups = admin_call(port, admin_key, "GET", f"/v1/organizations/rate_limits?model={MODEL}")["data"]
        if not groups:
            raise BenchError(f"no rate-limit group for {MODEL}")
        values = [
            {"type": kind, "value": RATE_LIMIT_VALUE}
            for kind in ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")
        ]
        admin_call(port, admin_key, "POST", f"/v1/organizations/rate_limits/{groups[0]['id']}", {"limits": values})
        for scope, cents in (
            ({"type": "organization"}, SPEND_LIMIT_CENTS),
            ({"type": "workspace", "workspace_id": workspace_id}, SPEND_LIMIT_CENTS),
            ({"type": "api_key", "api_key_id": probe["id"]}, PROBE_SPEND_LIMIT_CENTS),
        ):
            body = {"amount": str(cents), "period": "monthly", "scope": scope}
            admin_call(port, admin_key, "POST", "/v1/organizations/spend_limits", body)
    finally:
        processes.stop(managed)
    return LimitsDatabase(
        Workload(output_tokens, str(created["key"]), org_id),
        Workload(output_tokens, str(probe["key"]), org_id),
        workspace_id,
    )


def check_limits(target: Target, limits_db: LimitsDatabase, redis_url: str | None) -> str:
    """Show that the target really checks limits before it is measured: its answers carry the
    ``anthropic-ratelimit-*`` headers of the limits set, a key whose own spend limit (1 cent) is below
    a request's worst case is refused, and, for Redis, the buckets and spend counters are in Redis."""
    client = RawClient(target.port)
    try:
        reply = client.request(limits_db.workload.http_request(target.port, "json"))
        validate(reply, "json", target.name)
        for kind in ("requests", "input-tokens", "output-tokens", "tokens"):
            limit = reply.headers.get(f"anthropic-ratelimit-{kind}-limit")
            remaining = reply.headers.get(f"anthropic-ratelimit-{kind}-remaining")
            if (
                limit != str(RATE_LIMIT_VALUE)
                or remaining is None
                or f"anthropic-ratelimit-{kind}-reset" not in reply.headers
            ):
                raise BenchError(
                    f"{target.name}: no anthropic-ratelimit-{kind}-* headers of the limits set: {reply.headers}"
                )
        shown = reply.headers["anthropic-ratelimit-requests-remaining"]
        refused = client.request(limits_db.probe.http_request(target.port, "json"))
        if refused.status != 400 or b"usage limits" not in refused.body:
            raise BenchError(
                f"{target.name}: the probe key (spend limit 1 cent) was not refused: "
                f"{refused.status} {refused.body[:300]!r}"
            )
    finally:
        client.close()
    target.completed += 1
    found = ""
    if target.limits == "redis":
        assert redis_url is not None
        redis = RedisClient(redis_url)
        try:
            keys = redis.keys(REDIS_PREFIX + "*")
        finally:
            redis.close()
        spend = [k for k in keys if k.startswith(REDIS_PREFIX + "spend:")]
        buckets = [k for k in keys if k.startswith(REDIS_PREFIX + "rl:")]
        org_counter = any(":organization:" in k for k in spend)
        ws_counter = any(f":workspace:{limits_db.workspace_id}:" in k for k in spend)
        if not (org_counter and ws_counter and len(buckets) >= 3):
            raise BenchError(f"{target.name}: the limits are not in Redis ({redis_url}): keys {keys}")
        found = f"; in Redis: {len(spend)} spend counters, {len(buckets)} buckets"
    return f"limits checked: anthropic-ratelimit-requests-remaining {shown}, probe key refused (400){found}"


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Measurement:
    target: str
    mode: str
    throughput: WrkResult
    latency: WrkResult
    proxy_cpu_us: float | None = None  # CPU time of the proxy's processes per request, throughput run
    upstream_cpu_us: float | None = None  # CPU time of the simulator per request, throughput run
    redis_cpu_us: float | None = None  # CPU time of redis-server per request, throughput run (Redis variants)
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
    wrk: Wrk,
    args: argparse.Namespace,
) -> Measurement:
    label = f"{target.name}-{mode}"
    print(f"  {label}: throughput ({args.threads} threads, {args.connections} connections) ...", flush=True)

    def load(threads: int, connections: int, seconds: float, what: str) -> WrkResult:
        result = wrk.run(
            target.port,
            target.scripts[mode],
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
    redis_cpu = target.redis.cpu_seconds() if target.redis is not None else 0.0
    throughput = load(args.threads, args.connections, args.duration, "throughput")
    proxy_cpu = sum(map(group_cpu_seconds, groups)) - proxy_cpu
    upstream_cpu = group_cpu_seconds(upstream.managed[0].process.pid) - upstream_cpu
    result = Measurement(target.name, mode, throughput, throughput)
    if throughput.requests:
        result.upstream_cpu_us = upstream_cpu / throughput.requests * 1e6
        if target is not upstream:
            result.proxy_cpu_us = proxy_cpu / throughput.requests * 1e6
        if target.redis is not None:
            result.redis_cpu_us = (target.redis.cpu_seconds() - redis_cpu) / throughput.requests * 1e6
    time.sleep(args.pause)
    print(f"  {label}: latency at concurrency 1 ...", flush=True)
    result.latency = load(1, 1, args.latency_duration, "c1")
    if mode == "stream" and args.ttfb_requests > 0:
        time.sleep(args.pause)
        print(f"  {label}: time to first byte at concurrency 1 ...", flush=True)
        assert target.workload is not None
        samples = measure_ttfb(
            target.port,
            target.workload,
            requests=args.ttfb_requests,
            warmup=TTFB_WARMUP,
            max_seconds=args.ttfb_max_seconds,
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
        redis_cpu_us=optional([m.redis_cpu_us for m in rounds]),
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
        "import importlib.metadata as m, json, sys\n"
        "def v(p):\n try: return m.version(p)\n except m.PackageNotFoundError: return 'not installed'\n"
        "print(json.dumps({'python': sys.version.split()[0], **{p: v(p) for p in "
        "('orgwarden', 'uvicorn', 'granian', 'httpx', 'uvloop', 'httptools', 'starlette')}}))"
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
        "| TTFB p50 (ms) | TTFB p99 (ms) | added TTFB p50 | added TTFB p99 | proxy CPU µs/req | upstream CPU µs/req "
        "| redis CPU µs/req |"
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
                f"| {us(m.upstream_cpu_us)} | {us(m.redis_cpu_us)} |"
            )
    lines.append("")
    lines.append(
        f"req/s: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s; p50/p99: wrk -t1 -c1 "
        f"-d{args.latency_duration:g}s; TTFB: {args.ttfb_requests} sequential streaming requests, one "
        f"keep-alive connection, time to the first body byte; 'added' = minus the upstream directly; "
        f"{args.output_tokens} output tokens per answer; CPU µs/req: user+system time of the proxy's "
        f"processes (and of the simulator, and of redis-server for the Redis variants) over the req/s run "
        f"divided by its requests; median of {args.rounds} round(s). Limit variants: organization rate limits "
        f"of {RATE_LIMIT_VALUE:,} requests, input and output tokens per minute, organization and workspace "
        f"monthly spend limits of {SPEND_LIMIT_CENTS:,} cents; no answer was refused (any non-2xx stops the run)."
    )
    lines.append("")
    lines += ratios(results, targets)
    lines.append("")
    lines += limit_costs(results, targets)
    lines.append("")
    lines += checks(results, targets)
    return lines


def baseline_of(name: str) -> str:
    """The orgwarden target without limits that a limit variant is compared with (same workers, server)."""
    match = re.fullmatch(r"orgwarden(?:\+\w+)?(-w\d+)?(@[\w-]+)?", name)
    return "orgwarden" + "".join(part or "" for part in match.groups()) if match else "orgwarden"


def limit_costs(results: dict[tuple[str, str], Measurement], targets: list[str]) -> list[str]:
    """What limits cost: each limit variant minus the same orgwarden without limits, in the same run."""
    lines = [
        "| cost of limits | vs | mode | req/s | change | proxy CPU µs/req | extra CPU µs/req | redis CPU µs/req "
        "| extra p50 c=1 (ms) | extra p99 c=1 (ms) | extra TTFB p50 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def diff(a: float | None, b: float | None, fmt: str) -> str:
        return "-" if a is None or b is None else format(a - b, fmt)

    for name in (t for t in targets if "+" in t):
        plain = baseline_of(name)
        for mode in MODES:
            m, base = results.get((name, mode)), results.get((plain, mode))
            if m is None or base is None:
                continue
            change = m.throughput.rps / base.throughput.rps - 1 if base.throughput.rps else None
            lines.append(
                f"| {name} | {plain} | {mode} | {m.throughput.rps:,.0f} vs {base.throughput.rps:,.0f} "
                f"| {'-' if change is None else f'{change:+.0%}'} | {us(m.proxy_cpu_us)} vs {us(base.proxy_cpu_us)} "
                f"| {diff(m.proxy_cpu_us, base.proxy_cpu_us, '+,.0f')} | {us(m.redis_cpu_us)} "
                f"| {diff(m.latency.p50_ms, base.latency.p50_ms, '+.3f')} "
                f"| {diff(m.latency.p99_ms, base.latency.p99_ms, '+.3f')} "
                f"| {diff(m.ttfb_p50_ms, base.ttfb_p50_ms, '+.3f')} |"
            )
    return lines if len(lines) > 2 else ["(no cost of limits: no limit variant measured beside the same orgwarden)"]


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
    lines = ["| check | target | mode | measured | goal | verdict |", "|---|---|---|---|---|---|"]

    def verdict(ok: bool, by: str) -> str:
        return "met" if ok else f"**missed** by {by}"

    for name in (t for t in targets if t.startswith("orgwarden")):
        for mode in MODES:
            m = results.get((name, mode))
            base = results.get(("upstream", mode))
            ng = results.get(("nginx", mode))
            if m is None:
                continue
            goal, issue = (MIN_THROUGHPUT_RATIO_LIMITS, "issue 4") if "+" in name else (MIN_THROUGHPUT_RATIO, "issue 3")
            if ng is not None and ng.throughput.rps > 0:
                ratio = m.throughput.rps / ng.throughput.rps
                lines.append(
                    f"| throughput vs nginx ({issue}) | {name} | {mode} | {ratio:.1%} ({m.throughput.rps:,.0f} / "
                    f"{ng.throughput.rps:,.0f} req/s) | ≥ {goal:.0%} "
                    f"| {verdict(ratio >= goal, f'{(goal - ratio) * 100:.1f} points')} |"
                )
            else:
                lines.append(
                    f"| throughput vs nginx ({issue}) | {name} | {mode} | n/a (nginx not measured) | ≥ {goal:.0%} | - |"
                )
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
    return lines + server_checks(results, targets, verdict)


def server_checks(
    results: dict[tuple[str, str], Measurement], targets: list[str], verdict: Callable[[bool, str], str]
) -> list[str]:
    """Issue 15's targets for the server layer, for each orgwarden target without limits."""
    lines: list[str] = []
    for name in (t for t in targets if t.startswith("orgwarden") and "+" not in t):
        for mode in MODES:
            m, base, ng = results.get((name, mode)), results.get(("upstream", mode)), results.get(("nginx", mode))
            if m is None:
                continue
            if mode == "json" and ng is not None and ng.throughput.rps > 0:
                ratio = m.throughput.rps / ng.throughput.rps
                goal = MIN_JSON_RATIO_ISSUE15
                lines.append(
                    f"| throughput vs nginx (issue 15) | {name} | {mode} | {ratio:.1%} | ≥ {goal:.0%} "
                    f"| {verdict(ratio >= goal, f'{(goal - ratio) * 100:.1f} points')} |"
                )
            if base is not None:
                added = m.latency.p50_ms - base.latency.p50_ms
                bound = MAX_ADDED_P50_MS_ISSUE15
                lines.append(
                    f"| added latency p50, c=1 (issue 15) | {name} | {mode} | {added:+.3f} ms | ≤ {bound:g} ms "
                    f"| {verdict(added <= bound, f'{added - bound:.3f} ms')} |"
                )
            if mode == "stream" and ng is not None and m.ttfb_p50_ms is not None and ng.ttfb_p50_ms is not None:
                over = m.ttfb_p50_ms - ng.ttfb_p50_ms
                bound = MAX_TTFB_OVER_NGINX_MS
                lines.append(
                    f"| TTFB p50 minus nginx's (issue 15) | {name} | {mode} | {over:+.3f} ms | ≤ {bound:g} ms "
                    f"| {verdict(over <= bound, f'{over - bound:.3f} ms')} |"
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
    parser.add_argument(
        "--limits",
        default=",".join(LIMIT_MODES),
        help="orgwarden variants: off (no limits), memory (limits in process), redis (limits in Redis); default all",
    )
    parser.add_argument(
        "--server",
        default="current",
        help=f"servers of the orgwarden targets: {', '.join(SERVERS)} (comma-separated; default current)",
    )
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis of the redis variant ({DEFAULT_REDIS_URL})"
    )
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
    args.limit_modes = [m for m in LIMIT_MODES if m in {w.strip() for w in str(args.limits).split(",")}]
    unknown = {w.strip() for w in str(args.limits).split(",") if w.strip()} - set(LIMIT_MODES)
    if unknown or not args.limit_modes:
        parser.error(f"--limits: a comma-separated list of {', '.join(LIMIT_MODES)}")
    named = [w.strip() for w in str(args.server).split(",") if w.strip()]
    args.servers = list(dict.fromkeys(named))  # in the order given: reversing it shows drift during a run
    if set(named) - set(SERVERS) or not args.servers:
        parser.error(f"--server: a comma-separated list of {', '.join(SERVERS)}")
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


def write_scripts(target: Target, workload: Workload, tmp: Path, label: str) -> None:
    target.workload = workload
    for mode in MODES:
        target.scripts[mode] = tmp / f"{label}-{mode}.lua"
        target.scripts[mode].write_text(workload.lua(mode))


def redis_reachable(url: str) -> str | None:
    """None if Redis answers at ``url``, else why not."""
    try:
        client = RedisClient(url, timeout=2.0)
    except (OSError, BenchError) as exc:
        return str(exc)
    try:
        client.call("PING")
    except (OSError, BenchError) as exc:
        return str(exc)
    finally:
        client.close()
    return None


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
    notes: list[str] = []
    limit_modes = list(args.limit_modes)
    servers: list[str] = []
    for server in args.servers:
        try:
            server_argv(server, orgwarden, 0, 1)
        except BenchError as exc:
            notes.append(f"--server {server} skipped: {exc}")
        else:
            servers.append(server)
    if not servers:
        raise BenchError("; ".join(notes))
    redis_down = redis_reachable(args.redis_url) if "redis" in limit_modes or max(args.worker_counts) > 1 else None
    if redis_down is not None:
        redis_down = f"Redis not reachable at {args.redis_url}: {redis_down}"
        if "redis" in limit_modes:
            limit_modes.remove("redis")
            notes.append(f"orgwarden+redis skipped: {redis_down}")
    limits_db: LimitsDatabase | None = None
    limits_env = base_env(tmp / "data-limits")
    if "memory" in limit_modes or "redis" in limit_modes:
        (tmp / "data-limits").mkdir()
        limits_db = set_up_limits(processes, orgwarden, limits_env, args.output_tokens)
        if "redis" in limit_modes:
            redis = RedisClient(args.redis_url)
            try:
                removed = redis.delete_prefix(
                    REDIS_PREFIX
                )  # counters of an earlier run would skew nothing, but start clean
            finally:
                redis.close()
            if removed:
                print(f"removed {removed} {REDIS_PREFIX}* keys of an earlier run from {args.redis_url}")

    targets = [start_simulator(processes, orgwarden, env, args.upstream_latency_ms)]
    upstream_port = targets[0].port
    if nginx is None:
        notes.append(
            "nginx skipped: " + ("--no-nginx" if args.no_nginx else "not installed (apt-get install -y nginx)")
        )
    else:
        targets.append(start_nginx(processes, nginx, tmp, upstream_port, env))
    for target in targets:
        write_scripts(target, workload, tmp, "plain")
    orgwarden_targets: list[Target] = []
    if "off" in limit_modes:
        for w in args.worker_counts:
            if w > 1 and redis_down is not None:
                notes.append(f"{target_name('off', w)} skipped: several workers need Redis ({redis_down})")
                continue
            for server in servers:
                orgwarden_targets.append(
                    start_orgwarden(processes, orgwarden, env, upstream_port, w, "off", args.redis_url, server)
                )
                write_scripts(orgwarden_targets[-1], workload, tmp, "plain")
    if "memory" in limit_modes:  # limits in process need one process: --workers 1 only
        assert limits_db is not None
        for server in servers:
            orgwarden_targets.append(
                start_orgwarden(processes, orgwarden, limits_env, upstream_port, 1, "memory", server=server)
            )
            write_scripts(orgwarden_targets[-1], limits_db.workload, tmp, "limits")
        if args.worker_counts != [1]:
            notes.append("orgwarden+limits runs with --workers 1 only: limits counted in process need one process")
    if "redis" in limit_modes:
        assert limits_db is not None
        for w in args.worker_counts:
            for server in servers:
                target = start_orgwarden(
                    processes, orgwarden, limits_env, upstream_port, w, "redis", args.redis_url, server
                )
                target.redis = RedisClient(args.redis_url)
                orgwarden_targets.append(target)
                write_scripts(target, limits_db.workload, tmp, "limits")
    targets += orgwarden_targets
    for target in targets:  # every path answers, and answers right, before any load
        assert target.workload is not None
        client = RawClient(target.port)
        try:
            for mode in MODES:
                validate(client.request(target.workload.http_request(target.port, mode)), mode, target.name)
        finally:
            client.close()
        print(f"{target.name}: http://{HOST}:{target.port} ({target.description})")
        if target.limits != "off":
            assert limits_db is not None
            print(f"  {check_limits(target, limits_db, args.redis_url)}")
    for note in notes:
        print(f"note: {note}")

    wrk = Wrk(wrk_binary, processes, tmp, env)
    rounds: dict[tuple[str, str], list[Measurement]] = {}
    try:
        for number in range(1, args.rounds + 1):
            print(f"round {number}/{args.rounds}", flush=True)
            for mode in MODES:
                for target in targets:
                    rounds.setdefault((target.name, mode), []).append(measure(target, targets[0], mode, wrk, args))
    finally:
        for target in targets:
            if target.redis is not None:
                target.redis.close()
                target.redis = None
    results = {key: combine(values) for key, values in rounds.items()}
    load_after = os.getloadavg()

    for target in orgwarden_targets:  # a graceful stop flushes the usage records still queued
        for managed in target.managed:
            processes.stop(managed)
    records: dict[str, int | None] = {}
    completed: dict[str, int] = {}
    for target in orgwarden_targets:
        assert target.database is not None
        records.setdefault(str(target.database), count_usage_records(target.database))
        completed[str(target.database)] = completed.get(str(target.database), 0) + target.completed
    if "redis" in limit_modes:
        redis = RedisClient(args.redis_url)
        try:
            removed = redis.delete_prefix(REDIS_PREFIX)
        finally:
            redis.close()
        notes.append(f"removed the run's {removed} {REDIS_PREFIX}* keys from {args.redis_url}")

    names = [t.name for t in targets]
    lines = report(results, names, args)
    print()
    print("\n".join(lines))
    print()
    for note in notes:
        print(f"note: {note}")
    for database, count in records.items():
        which = "limit variants" if database == str(tmp / "data-limits") else "orgwarden without limits"
        print(
            f"metering ({which}): {count} usage records written for {completed[database]} completed requests (plus "
            "the requests in flight when each wrk run stopped, recorded as aborted)"
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
