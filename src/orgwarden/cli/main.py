"""``orgwarden``: init, serve, db, keys, admin-keys, workspaces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel

from orgwarden import __version__
from orgwarden.cli import audit, cc_policies, limits, reports, resources, scim, signin, users
from orgwarden.cli.runtime import err, fail, out, print_json, run, settings_from
from orgwarden.errors import ConfigError, Conflict

if TYPE_CHECKING:  # imported where used, so that ``--help``, ``--version`` and refusals stay light
    from orgwarden.config import Settings
    from orgwarden.services.container import Services
    from orgwarden.services.organizations import Bootstrap

app = typer.Typer(
    name="orgwarden",
    help="A self-hosted access plane for Claude: organizations, workspaces, scoped keys, limits, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(resources.keys, name="keys")
app.add_typer(resources.admin_keys, name="admin-keys")
app.add_typer(resources.workspaces, name="workspaces")
app.add_typer(limits.rate_limits, name="rate-limits")
app.add_typer(limits.spend_limits, name="spend-limits")
app.add_typer(reports.report, name="report")
app.add_typer(audit.audit, name="audit")
app.add_typer(scim.scim_tokens, name="scim-token")
app.add_typer(scim.groups, name="groups")
app.add_typer(cc_policies.cc_policies, name="cc-policies")
app.add_typer(users.users, name="users")
app.command("org-settings")(users.org_settings)
db = typer.Typer(help="Database migrations (Alembic), for operators.", no_args_is_help=True)
app.add_typer(db, name="db")
signin.register(app)  # login, token, logout

DEFAULT_ORG_NAME = "My Organization"
DEFAULT_ADMIN_EMAIL = "admin@orgwarden.local"
DEFAULT_ADMIN_NAME = "Administrator"


def _print_version(value: bool) -> None:
    # Eager, so it runs while the options are parsed: before click insists on a command.
    if value:
        out.print(f"orgwarden {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML settings file (ORGWARDEN_* variables override it).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    ctx.obj = {"config": str(config) if config else None}


def _bootstrap(settings: Settings, org_name: str, admin_email: str, admin_name: str) -> Bootstrap:
    async def work(services: Services) -> Bootstrap:
        return await services.organizations.bootstrap(org_name=org_name, admin_email=admin_email, admin_name=admin_name)

    return run(settings, work)


def _show_admin_key(result: Bootstrap) -> None:
    # Wide enough for the key on one line (plus the panel's border and padding), so that it is never
    # folded, which would break copying it: it is shown once.
    needed = len(result.admin_key_secret) + 4
    console = out if out.width >= needed else Console(width=needed)
    console.print(
        Panel.fit(
            f"Organization [bold]{result.organization.name}[/] ({result.organization.id})\n"
            f"Admin user   {result.user.email} ({result.user.id})\n\n"
            f"Admin API key (shown once, store it now):\n[bold green]{result.admin_key_secret}[/]",
            title="orgwarden initialized",
        )
    )


@app.command()
def init(
    ctx: typer.Context,
    org_name: Annotated[str, typer.Option(help="Name of the organization.")] = DEFAULT_ORG_NAME,
    admin_email: Annotated[str, typer.Option(help="Email of the first admin user.")] = DEFAULT_ADMIN_EMAIL,
    admin_name: Annotated[str, typer.Option(help="Name of the first admin user.")] = DEFAULT_ADMIN_NAME,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a panel.")] = False,
) -> None:
    """Migrate the database and create the organization, its default workspace, the first admin
    user and one admin API key (printed once). Changes nothing, and exits 1, if already initialized."""
    settings = settings_from(ctx)
    try:
        result = _bootstrap(settings, org_name, admin_email, admin_name)
    except typer.Exit:
        raise
    if as_json:
        from orgwarden.api import render

        print_json(
            {
                "organization": render.organization(result.organization),
                "user": render.user(result.user),
                "admin_api_key": result.admin_key_secret,
            }
        )
    else:
        _show_admin_key(result)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: 8080]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes. [default: 1]")] = None,
) -> None:
    """Serve the Admin API and the /v1/messages gateway on one port. On an empty database,
    initialize first and print the admin key once."""
    settings = settings_from(ctx, host=host, port=port, workers=workers)
    from orgwarden.config import CONFIG_ENV
    from orgwarden.data import load_catalog
    from orgwarden.observability import multiproc

    async def bootstrap_if_empty(services: Services) -> Bootstrap | None:
        if await services.organizations.current() is not None:
            return None
        try:
            return await services.organizations.bootstrap(
                org_name=DEFAULT_ORG_NAME, admin_email=DEFAULT_ADMIN_EMAIL, admin_name=DEFAULT_ADMIN_NAME
            )
        except Conflict:  # another instance initialized it first
            return None

    try:
        load_catalog(settings.models_file)  # a broken models file stops start-up here, in one line
        multiproc.prepare(settings)  # workers > 1: their metrics added up (before prometheus-client is imported)
    except ConfigError as exc:
        fail(str(exc), 2)
    created = run(settings, bootstrap_if_empty)  # also makes the SQLite secret before workers start
    if created is not None:
        _show_admin_key(created)
    where = settings.database_url.split("@")[-1] if settings.database_url else str(settings.data_dir)
    scheme = "https" if settings.tls_certfile else "http"
    err.print(f"orgwarden {__version__} on {scheme}://{settings.host}:{settings.port} (database: {where})")
    if settings.uses_simulator:
        err.print(
            "upstream: the built-in simulator answers /v1/messages "
            + ("(ORGWARDEN_UPSTREAM=simulator)" if settings.upstream == "simulator" else
               "(no ORGWARDEN_UPSTREAM_API_KEY; workspaces with their own upstream key use the real upstream)")
        )  # fmt: skip
    else:
        err.print(f"upstream: {settings.upstream}")
    if ctx.obj and ctx.obj.get("config"):
        os.environ[CONFIG_ENV] = ctx.obj["config"]  # workers load the same settings
    from orgwarden.server.options import ServerOptions  # only serving needs the server
    from orgwarden.server.run import catch_signals_early, serve_workers
    from orgwarden.server.run import serve as serve_http

    options = ServerOptions.from_settings(settings)
    if settings.workers > 1:
        code = serve_workers("orgwarden.api.app:app_from_environment", options, settings.workers)
    else:
        from orgwarden.api.app import create_app

        catch_signals_early()
        dispatcher = create_app(settings)
        code = serve_http(dispatcher, options, direct=dispatcher.direct_handler())
    if code:
        raise typer.Exit(code)


@app.command()
def simulator(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
) -> None:
    """Serve only the built-in simulator, as a stand-alone Anthropic-shaped upstream (for demos and
    benchmarks: point ORGWARDEN_UPSTREAM at it)."""
    from orgwarden.data import load_catalog
    from orgwarden.gateway.simulator import Simulator

    settings = settings_from(ctx)
    try:
        catalog = load_catalog(settings.models_file)
    except ConfigError as exc:
        fail(str(exc), 2)
    app_ = Simulator(
        catalog,
        latency_ms=settings.simulator_latency_ms,
        tokens_per_second=settings.simulator_tokens_per_second,
        batch_seconds=settings.simulator_batch_seconds,
        fault=settings.simulator_fault,
        reply=settings.simulator_reply,
    )
    err.print(f"orgwarden simulator on http://{host}:{port}")
    import dataclasses

    from orgwarden.server.options import ServerOptions
    from orgwarden.server.run import serve as serve_http

    options = ServerOptions.from_settings(settings)
    code = serve_http(app_, dataclasses.replace(options, host=host, port=port, log_level="warning", lifespan=False))
    if code:
        raise typer.Exit(code)


@app.command("org")
def org_show(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print the organization: its UUID is what a proxy puts in anthropic-allowed-org-ids."""

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        org = await services.organizations.current()
        if org is None:
            fail("orgwarden is not initialized: run `orgwarden init` (or `orgwarden serve`) first")
        return render.organization(org)

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"{payload['name']}\norganization id: [bold]{payload['id']}[/]")


@db.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = settings_from(ctx)
    from orgwarden.storage import migrate

    migrate.upgrade(settings, revision)
    out.print(f"database at revision {migrate.current_revision(settings)}")


@db.command("downgrade")
def db_downgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision, or base.")]
) -> None:
    """Revert migrations down to REVISION ('base' empties the database)."""
    settings = settings_from(ctx)
    from orgwarden.storage import migrate

    migrate.downgrade(settings, revision)
    out.print(f"database at revision {migrate.current_revision(settings) or 'base'}")


@db.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the database's migration revision."""
    settings = settings_from(ctx)
    from orgwarden.storage import migrate

    out.print(migrate.current_revision(settings) or "base")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        fail("interrupted", 130)
