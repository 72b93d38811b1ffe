"""``orgwarden users`` (remove, deactivate, reactivate) and ``orgwarden org-settings``: the same use
cases as the Admin API and SCIM, for operators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from orgwarden.cli.runtime import cli_context, out, print_json, run, settings_from
from orgwarden.domain.clock import rfc3339

if TYPE_CHECKING:
    from orgwarden.services.container import Services
    from orgwarden.storage.tables import User

users = typer.Typer(help="Users: remove, deactivate, reactivate (each offboarding is audited).", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
UserId = Annotated[str, typer.Argument(help="The user's id (user_...).")]


def _user_json(row: User) -> dict[str, Any]:
    from orgwarden.api import render

    return {**render.user(row), "deactivated_at": rfc3339(row.deactivated_at)}


@users.command("deactivate")
def users_deactivate(ctx: typer.Context, user_id: UserId, as_json: JsonFlag = False) -> None:
    """Deactivate a user: sessions, tokens and admin keys revoked, the API keys they created handled
    per the organization's offboarding_key_policy; memberships and role are kept."""

    async def work(services: Services) -> dict[str, Any]:
        return _user_json(await services.users.deactivate(await cli_context(services), user_id))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Deactivated user {payload['email']} ({payload['id']}); see `orgwarden audit` for what was revoked")


@users.command("reactivate")
def users_reactivate(ctx: typer.Context, user_id: UserId, as_json: JsonFlag = False) -> None:
    """Let a deactivated user act again (what was revoked stays revoked)."""

    async def work(services: Services) -> dict[str, Any]:
        return _user_json(await services.users.reactivate(await cli_context(services), user_id))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Reactivated user {payload['email']} ({payload['id']})")


@users.command("remove")
def users_remove(ctx: typer.Context, user_id: UserId, as_json: JsonFlag = False) -> None:
    """Remove a user from the organization and offboard them (as DELETE /v1/organizations/users/{id})."""

    async def work(services: Services) -> str:
        return await services.users.remove(await cli_context(services), user_id)

    removed = run(settings_from(ctx), work)
    if as_json:
        print_json({"id": removed, "type": "user_deleted"})
    else:
        out.print(f"Removed user {removed}")


def org_settings(
    ctx: typer.Context,
    offboarding_key_policy: Annotated[
        str | None,
        typer.Option(help="What offboarding a user does to the API keys they created: deactivate or keep."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the organization's settings, or change the ones given."""

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        context = await cli_context(services)
        if offboarding_key_policy is None:
            org = await services.organizations.get(context)
        else:
            org = await services.organizations.update_settings(context, offboarding_key_policy=offboarding_key_policy)
        return render.organization_settings(org)

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"offboarding_key_policy: {payload['offboarding_key_policy']}")
