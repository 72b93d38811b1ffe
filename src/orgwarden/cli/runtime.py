"""What every CLI command needs: settings, services over a fresh engine, the acting context, and
uniform error output (one line on stderr, exit status 1; 2 for bad configuration)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from orgwarden.errors import ConfigError, OrgwardenError

if TYPE_CHECKING:  # imported where used: ``--help``, ``--version`` and refusals need none of them
    from orgwarden.config import Settings
    from orgwarden.services.container import Services
    from orgwarden.services.context import Context

T = TypeVar("T")
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    from orgwarden.config import load_settings

    try:
        return load_settings(ctx.obj.get("config") if ctx.obj else None, **overrides)
    except ConfigError as exc:
        fail(str(exc), 2)


def run(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Migrate, then run ``work`` with services over a fresh engine, mapping errors to one line."""
    from orgwarden.crypto import SecretBox, resolve_secret
    from orgwarden.services.container import Services
    from orgwarden.storage import migrate
    from orgwarden.storage.engine import create_engine, session_factory
    from orgwarden.storage.uow import UnitOfWorkFactory

    async def main() -> T:
        engine = create_engine(settings)
        try:
            box = SecretBox(resolve_secret(settings))
            return await work(Services.build(UnitOfWorkFactory(session_factory(engine)), settings, box))
        finally:
            await engine.dispose()

    try:
        migrate.upgrade_if_behind(settings)
        return asyncio.run(main())
    except OrgwardenError as exc:
        fail(exc.message)
    except ConfigError as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(f"cannot reach the database: {exc}")


async def cli_context(services: Services) -> Context:
    """CLI actions act as the organization's longest-standing admin; the audit trail records the
    actor as ``cli`` with the operating-system user, so they are told apart from API calls."""
    from orgwarden.domain.policy import Actor
    from orgwarden.services.context import Context

    org = await services.organizations.current()
    if org is None:
        fail("orgwarden is not initialized: run `orgwarden init` (or `orgwarden serve`) first")
    admin = await services.users.first_admin(org.id)
    actor = Actor("cli", f"cli:{getpass.getuser()}", org.id, admin.id if admin else None)
    return Context(actor, None, "cli")


def open_output(output: Path | None) -> IO[str]:
    """Standard output, or ``output`` opened for writing (text, UTF-8, no newline translation, as
    CSV wants); a file that cannot be written is a one-line error naming ``--output``."""
    if output is None:
        return typer.get_text_stream("stdout")
    try:
        return output.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"--output: cannot write {output}: {exc.strerror}")


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A Rich table on standard output; ``None`` cells are shown empty."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[("" if cell is None else str(cell)) for cell in row])
    out.print(table)
