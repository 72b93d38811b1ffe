"""``python -m orgwarden.server module:app [--host H] [--port P] [--no-lifespan] [--direct m:h]``: serve any ASGI
app on orgwarden's server (for tests and stand-ins such as tests/gateway/echo_upstream.py). Limits
and time-outs come from the same ``ORGWARDEN_*`` settings as ``orgwarden serve``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

from orgwarden.config import load_settings
from orgwarden.server.options import ServerOptions
from orgwarden.server.run import serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m orgwarden.server")
    parser.add_argument("app", help="module:attribute of an ASGI app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-lifespan", action="store_true", help="do not run the app's lifespan")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--direct", help="module:attribute of a DirectHandler answering some requests without ASGI")
    args = parser.parse_args()
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name)
    settings = load_settings(host=args.host, port=args.port, log_level=args.log_level)
    options = dataclasses.replace(ServerOptions.from_settings(settings), lifespan=not args.no_lifespan)
    direct = None
    if args.direct:
        module, _, name = args.direct.partition(":")
        direct = getattr(importlib.import_module(module), name)
    return serve(app, options, direct=direct)


if __name__ == "__main__":
    sys.exit(main())
