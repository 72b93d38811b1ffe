"""``orgwarden keys``, ``admin-keys`` and ``workspaces``: the same use cases as the Admin API."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orgwarden.cli.runtime import cli_context, fail, out, print_json, print_table, run, settings_from
from orgwarden.domain.clock import rfc3339, utcnow

if TYPE_CHECKING:
    from orgwarden.services.container import Services

keys = typer.Typer(help="Data-plane API keys (sk-ant-api03-...).", no_args_is_help=True)
admin_keys = typer.Typer(help="Admin API keys (sk-ant-admin01-...).", no_args_is_help=True)
workspaces = typer.Typer(help="Workspaces.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        fail(f"--expires-in: {text!r} is not a duration like 90d, 12h, 30m or 2w")
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        utcnow() + duration  # the expiry must be a date Python can represent
    except OverflowError:
        fail(f"--expires-in: {text!r} is too long")
    return duration


def _show_created(payload: dict[str, Any], as_json: bool, what: str) -> None:
    """A new key: as JSON, or a line and its secret, which is never shown again."""
    if as_json:
        print_json(payload)
        return
    out.print(f"Created {what}")
    out.print(f"Secret (shown once, store it now):\n[bold green]{payload['key']}[/]", soft_wrap=True)


async def _all_pages(fetch: Any) -> list[Any]:
    from orgwarden.storage.pagination import Cursor

    items: list[Any] = []
    cursor = Cursor(limit=1000)
    while True:
        page = await fetch(cursor)
        items.extend(page.items)
        if not page.has_more or not page.items:
            return items
        cursor = Cursor(after_id=getattr(page.items[-1], "id", None), limit=1000)


@keys.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A descriptive name, e.g. prod-recommendation-service.")],
    workspace: Annotated[str | None, typer.Option(help="Workspace id. [default: the default workspace]")] = None,
    expires_in: Annotated[str | None, typer.Option(help="Lifetime such as 90d, 12h, 2w. [default: never]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key; the secret is printed once."""
    expires_at: datetime | None = utcnow() + parse_duration(expires_in) if expires_in else None

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        created = await services.api_keys.create(
            await cli_context(services), name=name, workspace_id=workspace, expires_at=expires_at
        )
        payload = render.api_key(created.key, created.default_workspace_id, utcnow())
        payload["key"] = created.secret
        return payload

    payload = run(settings_from(ctx), work)
    _show_created(payload, as_json, f"API key [bold]{payload['name']}[/] ({payload['id']}) in "
                  f"{payload['scope']['workspace_id']}")  # fmt: skip


@keys.command("list")
def keys_list(
    ctx: typer.Context,
    workspace: Annotated[str | None, typer.Option(help="Only keys of this workspace.")] = None,
    status: Annotated[str | None, typer.Option(help="active, inactive, archived or expired.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List API keys (never their secrets)."""

    async def work(services: Services) -> list[dict[str, Any]]:
        from orgwarden.api import render

        context = await cli_context(services)
        rows = await _all_pages(
            lambda cursor: services.api_keys.list(context, cursor, workspace_id=workspace, status=status)
        )
        default_id = await services.api_keys.default_workspace_id(context.organization_id)
        now = utcnow()
        return [render.api_key(row, default_id, now) for row in rows]

    payloads = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
        return
    print_table(
        "API keys",
        ["id", "name", "workspace", "status", "hint", "created", "expires"],
        [
            [k["id"], k["name"], k["scope"]["workspace_id"], k["status"], k["partial_key_hint"], k["created_at"],
             k["expires_at"] or "never"]
            for k in payloads
        ],
    )  # fmt: skip


def _admin_key_json(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "user_id": key.user_id,
        "partial_key_hint": key.partial_key_hint,
        "status": key.status,
        "created_at": rfc3339(key.created_at),
        "revoked_at": rfc3339(key.revoked_at),
        "type": "admin_api_key",
    }


@admin_keys.command("create")
def admin_keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A descriptive name.")] = "admin key",
    user: Annotated[str | None, typer.Option(help="Owning admin user id. [default: the first admin]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an admin API key for an admin user; the secret is printed once."""

    async def work(services: Services) -> dict[str, Any]:
        created = await services.admin_keys.create(await cli_context(services), name=name, user_id=user)
        return {**_admin_key_json(created.key), "key": created.secret}

    payload = run(settings_from(ctx), work)
    _show_created(
        payload, as_json, f"admin API key [bold]{payload['name']}[/] ({payload['id']}) for {payload['user_id']}"
    )


@admin_keys.command("list")
def admin_keys_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List admin API keys (never their secrets)."""

    async def work(services: Services) -> list[dict[str, Any]]:
        return [_admin_key_json(k) for k in await services.admin_keys.list(await cli_context(services))]

    payloads = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
        return
    print_table(
        "Admin API keys",
        ["id", "name", "user", "status", "hint", "created"],
        [[k["id"], k["name"], k["user_id"], k["status"], k["partial_key_hint"], k["created_at"]] for k in payloads],
    )


@admin_keys.command("revoke")
def admin_keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The admin key's id.")]) -> None:
    """Revoke an admin API key; it stops working at once."""

    async def work(services: Services) -> dict[str, Any]:
        return _admin_key_json(await services.admin_keys.revoke(await cli_context(services), key_id))

    payload = run(settings_from(ctx), work)
    out.print(f"Revoked admin API key {payload['id']} ({payload['name']})")


@workspaces.command("list")
def workspaces_list(
    ctx: typer.Context,
    include_archived: Annotated[bool, typer.Option(help="Include archived workspaces.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List workspaces, the default one included."""

    async def work(services: Services) -> list[dict[str, Any]]:
        from orgwarden.api import render

        context = await cli_context(services)
        rows = await _all_pages(
            lambda cursor: services.workspaces.list(
                context, cursor, include_archived=include_archived, include_default=True
            )
        )
        return [render.workspace(row) for row in rows]

    payloads = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
        return
    print_table(
        "Workspaces",
        ["id", "name", "created", "archived", "inference geos"],
        [
            [w["id"], w["name"], w["created_at"], w["archived_at"] or "",
             w["data_residency"]["allowed_inference_geos"]]
            for w in payloads
        ],
    )  # fmt: skip


@workspaces.command("create")
def workspaces_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Workspace name, e.g. production.")],
    as_json: JsonFlag = False,
) -> None:
    """Create a workspace."""

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        return render.workspace(await services.workspaces.create(await cli_context(services), name=name))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Created workspace [bold]{payload['name']}[/] ({payload['id']})")


@workspaces.command("archive")
def workspaces_archive(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="The workspace's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Archive a workspace and every API key in it (irreversible)."""

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        return render.workspace(await services.workspaces.archive(await cli_context(services), workspace_id))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Archived workspace {payload['name']} ({payload['id']}) and its API keys")


@workspaces.command("set-upstream-key")
def workspaces_set_upstream_key(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="The workspace's id.")],
    clear: Annotated[bool, typer.Option("--clear", help="Forget the key; use the server's again.")] = False,
) -> None:
    """Give a workspace its own upstream (Anthropic) API key, read from standard input; stored encrypted."""
    api_key: str | None = None
    if not clear:
        api_key = typer.prompt("Upstream API key", hide_input=True) if sys.stdin.isatty() else sys.stdin.read().strip()

    async def work(services: Services) -> None:
        await services.workspaces.set_upstream_key(await cli_context(services), workspace_id, api_key)

    run(settings_from(ctx), work)
    out.print(f"{'Cleared' if clear else 'Set'} the upstream key of workspace {workspace_id}")
