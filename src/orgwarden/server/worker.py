"""One worker of ``serve_workers``: ``python -m orgwarden.server.worker FD module:factory``.

It builds its app with the factory (``orgwarden.api.app:app_from_environment``: settings from
``ORGWARDEN_*`` and ``ORGWARDEN_CONFIG``, as the supervisor was given) and serves the inherited
listening socket ``FD``.

A worker whose supervisor is gone (killed with SIGKILL, or crashed) stops itself as if it had been
sent SIGTERM: an orphan would otherwise go on serving the socket, outside any supervision, until
someone finds it. The check is the parent's pid, looked at every ``ORPHAN_CHECK_SECONDS``.
"""

from __future__ import annotations

import signal

# Caught before anything else is imported (which takes a while): a SIGTERM from the supervisor while
# this worker starts must stop it gracefully once it has started, not kill it (``run`` takes over).
_caught: list[int] = []
for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, lambda number, _frame: _caught.append(number))

import importlib  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from orgwarden.config import load_settings  # noqa: E402
from orgwarden.errors import ConfigError  # noqa: E402
from orgwarden.server.options import ServerOptions  # noqa: E402
from orgwarden.server.run import STARTUP_FAILED, catch_signals_early, serve  # noqa: E402

ORPHAN_CHECK_SECONDS = 1.0


def stop_when_orphaned(supervisor: int, interval: float = ORPHAN_CHECK_SECONDS) -> threading.Thread:
    """Send this process SIGTERM (a graceful stop) once its parent is no longer ``supervisor``."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="orgwarden-orphan-check", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    stop_when_orphaned(os.getppid())
    catch_signals_early(_caught)  # a SIGTERM while the app is built stops the worker once it has started
    fd, factory = int(argv[1]), argv[2]
    sock = socket.socket(fileno=fd)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return STARTUP_FAILED
    module, _, name = factory.partition(":")
    app = getattr(importlib.import_module(module), name)()
    direct = app.direct_handler() if hasattr(app, "direct_handler") else None
    return serve(app, ServerOptions.from_settings(settings), direct=direct, sock=sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
