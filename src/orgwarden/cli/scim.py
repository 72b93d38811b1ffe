"""``orgwarden scim-token``: the tokens an identity provider uses on ``/scim/v2``; and
``orgwarden groups``: which roles a group grants (the mapping the identity provider cannot send)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orgwarden.cli.runtime import cli_context, out, print_json, print_table, run, settings_from
from orgwarden.domain.clock import rfc3339
from orgwarden.services.container import Services
from orgwarden.storage.tables import ScimToken

scim_tokens = typer.Typer(help="SCIM tokens (ow-scim01-...) for the identity provider.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _token_json(token: ScimToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "partial_token_hint": token.partial_hint,
        "created_at": rfc3339(token.created_at),
        "last_used_at": rfc3339(token.last_used_at) if token.last_used_at else None,
        "status": "revoked" if token.revoked_at else "active",
    }


@scim_tokens.command("create")
def scim_token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A name, e.g. okta or entra-id.")] = "scim",
    as_json: Annotated[bool, typer.Option("--json", help='Print {"id", "token"} as JSON.')] = False,
) -> None:
    """Create a SCIM token; the token is printed once (only its hash is kept)."""

    async def work(services: Services) -> dict[str, Any]:
        created = await services.scim_tokens.create(await cli_context(services), name=name)
        return {"id": created.token.id, "token": created.secret}

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
        return
    out.print(f"Created SCIM token {payload['id']}")
    out.print(f"Token (shown once, store it now):\n[bold green]{payload['token']}[/]", soft_wrap=True)


@scim_tokens.command("list")
def scim_token_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List SCIM tokens (never the tokens themselves)."""

    async def work(services: Services) -> list[dict[str, Any]]:
        return [_token_json(t) for t in await services.scim_tokens.list(await cli_context(services))]

    rows = run(settings_from(ctx), work)
    if as_json:
        print_json(rows)
        return
    print_table(
        "SCIM tokens",
        ["id", "name", "status", "hint", "created", "last used"],
        [[r["id"], r["name"], r["status"], r["partial_token_hint"], r["created_at"], r["last_used_at"]] for r in rows],
    )


@scim_tokens.command("revoke")
def scim_token_revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Revoke a SCIM token: it is refused from the next request on."""

    async def work(services: Services) -> dict[str, Any]:
        return _token_json(await services.scim_tokens.revoke(await cli_context(services), token_id))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Revoked SCIM token {payload['id']}")
