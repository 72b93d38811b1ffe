"""One worker of ``serve_workers``: ``python -m orgwarden.server.worker FD module:factory``.

It builds its app with the factory (``orgwarden.api.app:app_from_environment``: settings from
``ORGWARDEN_*`` and ``ORGWARDEN_CONFIG``, as the supervisor was given) and serves the inherited
listening socket ``FD``.
"""

from __future__ import annotations

import importlib
import socket
import sys

from orgwarden.config import load_settings
from orgwarden.errors import ConfigError
from orgwarden.server.options import ServerOptions
from orgwarden.server.run import STARTUP_FAILED, catch_signals_early, serve


def main(argv: list[str]) -> int:
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
