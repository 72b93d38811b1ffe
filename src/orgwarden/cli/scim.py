"""``orgwarden scim-token``: the tokens an identity provider uses on ``/scim/v2``; and
``orgwarden groups``: which roles a group grants (the mapping the identity provider cannot send)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from orgwarden.cli.runtime import cli_context, fail, out, print_json, print_table, run, settings_from
from orgwarden.domain.clock import rfc3339

if TYPE_CHECKING:
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


groups = typer.Typer(help="RBAC groups and the roles they grant their members.", no_args_is_help=True)


def _group_json(view: Any) -> dict[str, Any]:
    row = view.group
    return {
        "id": row.id,
        "name": row.name,
        "source_type": row.source_type,
        "role_ids": view.role_ids,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


@groups.command("list")
def groups_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List groups (from SCIM, the Admin API or here) with the roles they grant."""

    async def work(services: Services) -> list[dict[str, Any]]:
        context = await cli_context(services)
        rows: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            result = await services.rbac_groups.list(context, limit=1000, page=page)
            rows += [_group_json(v) for v in result.items]
            if result.next_page is None:
                return rows
            page = result.next_page

    rows = run(settings_from(ctx), work)
    if as_json:
        print_json(rows)
        return
    print_table(
        "RBAC groups",
        ["id", "name", "source", "roles"],
        [[r["id"], r["name"], r["source_type"], " ".join(r["role_ids"])] for r in rows],
    )


@groups.command("create")
def groups_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group's name (as the IdP's groups claim says it).")],
    as_json: JsonFlag = False,
) -> None:
    """Create a group (for the OpenID Connect groups claim; SCIM creates its own)."""

    async def work(services: Services) -> dict[str, Any]:
        return _group_json(await services.rbac_groups.create(await cli_context(services), name=name))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Created group {payload['name']} ({payload['id']})")


@groups.command("set-roles")
def groups_set_roles(
    ctx: typer.Context,
    group_id: Annotated[str, typer.Argument(metavar="GROUP_ID")],
    org_role: Annotated[
        str | None, typer.Option(help="Organization role: user, claude_code_user, billing or developer.")
    ] = None,
    workspace_role: Annotated[
        list[str] | None,
        typer.Option(help="WORKSPACE_ID=ROLE, e.g. wrkspc_...=workspace_developer; repeat for several."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set what a group grants (replacing what it granted); its members' roles are recomputed at once.
    A member's role is the highest of their own and their groups'."""
    pairs: dict[str, str] = {}
    for item in workspace_role or []:
        workspace_id, sep, role = item.partition("=")
        if not sep or not workspace_id or not role:
            fail(f"--workspace-role: {item!r} is not WORKSPACE_ID=ROLE")
        pairs[workspace_id.strip()] = role.strip()

    async def work(services: Services) -> dict[str, Any]:
        view = await services.rbac_groups.set_roles(
            await cli_context(services), group_id, org_role=org_role, workspace_roles=pairs
        )
        return _group_json(view)

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Group {payload['name']} ({payload['id']}) grants: {' '.join(payload['role_ids']) or 'nothing'}")
