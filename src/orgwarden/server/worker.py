"""One worker of ``serve_workers``: ``python -m orgwarden.server.worker FD module:factory``.

It builds its app with the factory (``orgwarden.api.app:app_from_environment``: settings from
``ORGWARDEN_*`` and ``ORGWARDEN_CONFIG``, as the supervisor was given) and serves the inherited
listening socket ``FD``.

A worker whose supervisor is gone (killed with SIGKILL, or crashed) stops itself as if it had been
sent SIGTERM: an orphan would otherwise go on serving the socket, outside any supervision, until
someone finds it. The check is the parent's pid, looked at every ``ORPHAN_CHECK_SECONDS``.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import threading
import time

from orgwarden.config import load_settings
from orgwarden.errors import ConfigError
from orgwarden.server.options import ServerOptions
from orgwarden.server.run import STARTUP_FAILED, catch_signals_early, serve

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
    catch_signals_early()  # a SIGTERM while the app is built stops the worker once it has started
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
