"""Listening, signals and the graceful stop; ``--workers N`` as a supervisor of N processes.

``serve`` runs one server process on uvloop: the app's lifespan start-up (a failure ends the
process with status 3 and one line), then connections until SIGTERM or SIGINT. The stop: no new
connections, idle ones closed at once, requests in progress answered (their connections closed
after) until ``deadline - min(5, timeout/3)``, then whatever is left is dropped (slow clients
included) and the lifespan shut-down gets the rest of the time. If that has not finished at the
deadline the process exits anyway, with status 1. A clean stop exits 0.

``serve_workers`` binds the socket once, starts N ``python -m orgwarden.server.worker``
processes sharing it (each builds its own app from the environment), passes SIGTERM/SIGINT on to
them, waits for them, and starts a new one in place of one that dies while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import uvloop
from starlette.types import ASGIApp

from orgwarden.server.lifespan import Lifespan, LifespanFailed
from orgwarden.server.options import ServerOptions
from orgwarden.server.protocol import HttpProtocol
from orgwarden.server.state import DirectHandler, ServerState

log = logging.getLogger("orgwarden.server")
STARTUP_FAILED = 3
DEADLINE_PASSED = 1


_early: list[int] = []  # signals that arrived before the server could handle them


def catch_signals_early() -> None:
    """Remember SIGTERM/SIGINT from now on (while the app is built), instead of dying at once: the
    server then stops as soon as it has started, gracefully."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: _early.append(number))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


def serve(
    app: ASGIApp, options: ServerOptions, *, direct: DirectHandler | None = None, sock: socket.socket | None = None
) -> int:
    """Serve ``app`` until a signal; the process's exit status."""
    configure_logging(options.log_level)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    code = loop.run_until_complete(_serve(app, options, direct, sock))
    if code == DEADLINE_PASSED:
        logging.shutdown()
        os._exit(code)  # what is still running may not finish: the deadline is the deadline
    with contextlib.suppress(Exception):
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        if rest:
            loop.run_until_complete(asyncio.wait(rest, timeout=1))
    loop.close()
    return code


async def _serve(app: ASGIApp, options: ServerOptions, direct: DirectHandler | None, sock: socket.socket | None) -> int:
    loop = asyncio.get_running_loop()
    context = options.ssl_context()
    state = ServerState(loop, options, app, direct, "https" if context else "http")
    lifespan = Lifespan(app, state.lifespan_state) if options.lifespan else None
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if _early:
        stop.set()
    if lifespan is not None:
        try:
            await lifespan.startup()
        except LifespanFailed as exc:
            log.error("start-up failed: %s", exc)
            return STARTUP_FAILED
    listen: dict[str, Any] = {"sock": sock} if sock is not None else {"host": options.host, "port": options.port}
    try:
        server = await loop.create_server(lambda: HttpProtocol(state), ssl=context, backlog=2048, **listen)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.port, exc.strerror or exc)
        if lifespan is not None:
            with contextlib.suppress(LifespanFailed):
                await lifespan.shutdown()
        return STARTUP_FAILED
    # What start-up made (the app, its modules and caches) lives as long as the process: frozen, it
    # is out of the collector's reach, so a full collection walks only what requests made since
    # (tens of milliseconds less each, on the event loop). Cyclic garbage among it is never freed.
    gc.collect()
    gc.freeze()
    for bound in server.sockets:
        name = bound.getsockname()
        log.info("listening on %s://%s:%d (pid %d)", state.scheme, name[0], name[1], os.getpid())
    ticker = loop.create_task(_tick(state))
    await stop.wait()
    try:
        return await _stop(state, server, lifespan)
    finally:
        ticker.cancel()


async def _tick(state: ServerState) -> None:
    while True:
        await asyncio.sleep(1)
        state.tick()


async def _stop(state: ServerState, server: asyncio.AbstractServer, lifespan: Lifespan | None) -> int:
    loop = state.loop
    timeout = state.options.shutdown_timeout
    deadline = loop.time() + timeout
    drain_until = deadline - min(5.0, timeout / 3)
    log.info("shutting down: finishing requests in progress (at most %g seconds)", timeout)
    server.close()
    state.shutting_down = True
    for connection in list(state.connections):
        connection.shutdown()
    while (state.connections or state.tasks) and loop.time() < drain_until:  # noqa: ASYNC110  # bounded, 20 Hz
        await asyncio.sleep(0.05)
    if state.connections:
        log.warning("closing %d connections still open at the shutdown deadline", len(state.connections))
        for connection in list(state.connections):
            connection.abort()
    if state.tasks:
        tasks = set(state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=max(0.1, min(1.0, deadline - loop.time())))
    if lifespan is None:
        return 0
    try:
        await asyncio.wait_for(lifespan.shutdown(), timeout=max(0.1, deadline - loop.time()))
    except TimeoutError:
        log.error("shutdown did not finish within %g seconds (ORGWARDEN_SHUTDOWN_TIMEOUT_SECONDS): exiting", timeout)
        return DEADLINE_PASSED
    except LifespanFailed as exc:
        log.error("shutdown failed: %s", exc)
        return DEADLINE_PASSED
    return 0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve_workers(factory: str, options: ServerOptions, workers: int) -> int:
    """Run ``workers`` processes serving ``factory`` (``module:function``) on one socket."""
    configure_logging(options.log_level)
    try:
        sock = bind(options.host, options.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.port, exc.strerror or exc)
        return STARTUP_FAILED
    fd = sock.fileno()
    sock.set_inheritable(True)
    children: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []
    signalled: set[int] = set()  # pids the stop signal was forwarded to

    def spawn() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "orgwarden.server.worker", str(fd), factory]
        return subprocess.Popen(command, pass_fds=(fd,))  # noqa: S603  # our own interpreter and module

    def forward(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)
                    signalled.add(child.pid)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    children.extend(spawn() for _ in range(workers))
    log.info("started %d workers on %s:%d (supervisor pid %d)", workers, options.host, options.port, os.getpid())
    while not stopping:
        for index, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            if code == STARTUP_FAILED:
                log.error("worker %d could not start: stopping", child.pid)
                forward(signal.SIGTERM, None)
                break
            log.error("worker %d exited with status %s: starting another", child.pid, code)
            children[index] = spawn()
        time.sleep(0.2)
    # The signal may have come while a replacement was being spawned, before it joined ``children``:
    # it missed the forward above and would otherwise serve on until killed at the deadline.
    for child in children:
        if child.pid not in signalled and child.poll() is None:
            child.send_signal(stopping[0])
    sock.close()  # the workers have stopped accepting: nothing should wait in a backlog nobody serves
    end = time.monotonic() + options.shutdown_timeout + 5
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=max(0.1, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    # A worker the forwarded signal killed had not yet caught it (its interpreter and imports were
    # still starting, before catch_signals_early): it never served, so it stopped with nothing to finish.
    failed = [code for code in codes if code != 0 and not (stopping and code == -stopping[0])]
    if failed:
        log.error("workers exited with status %s", ", ".join(str(code) for code in failed))
    return DEADLINE_PASSED if failed else 0
