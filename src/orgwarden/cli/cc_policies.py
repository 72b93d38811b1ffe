"""``orgwarden cc-policies``: Claude Code policies (managed settings and model access) from the
command line. The same service as the Admin API's ``/v1/organizations/claude_code/managed_settings``,
so the same checks and messages, the same audit events (``claude_code_managed_settings.*``) and the
same cache events (a running gateway applies a change within a second). ``--json`` prints the Admin
API's shapes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orgwarden.cli.runtime import cli_context, fail, out, print_json, print_table, run, settings_from

if TYPE_CHECKING:
    from orgwarden.services.container import Services
    from orgwarden.services.context import Context

cc_policies = typer.Typer(
    help="Claude Code policies: managed settings and model access, per RBAC group.", no_args_is_help=True
)
default_policy = typer.Typer(help="The default (base) policy: what users no group policy matches get.")
cc_policies.add_typer(default_policy, name="default", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (the Admin API's shapes) instead of text.")]
GroupArg = Annotated[str, typer.Argument(metavar="GROUP", help="The RBAC group's id or name.")]
SettingsOpt = Annotated[
    str | None,
    typer.Option("--settings", metavar="FILE", help="The managed-settings JSON document, from FILE or - (stdin)."),
]
AllowedOpt = Annotated[
    list[str] | None, typer.Option("--allowed-model", help="A model id or alias allowed (repeat); replaces the list.")
]
ClearAllowedOpt = Annotated[bool, typer.Option("--clear-allowed-models", help="No allow-list (every model).")]
DeniedOpt = Annotated[
    list[str] | None, typer.Option("--denied-model", help="A model id or alias denied (repeat); replaces the list.")
]
ClearDeniedOpt = Annotated[bool, typer.Option("--clear-denied-models", help="An empty deny-list.")]


def _document(source: str | None) -> Any:
    """The settings document named by ``--settings`` (``UNSET`` when not given), parsed as JSON."""
    from orgwarden.services.cc_policies import UNSET

    if source is None:
        return UNSET
    where = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--settings: cannot read {where}: {getattr(exc, 'strerror', None) or exc}")
    try:
        return json.loads(text)
    except ValueError as exc:
        fail(f"--settings: {where} is not valid JSON ({exc})")


def _replacing(values: list[str] | None, clear: bool, option: str, cleared: list[str] | None) -> Any:
    """A repeated option's list (replacing), ``cleared`` for its --clear-… flag, else ``UNSET`` (kept)."""
    from orgwarden.services.cc_policies import UNSET

    if values and clear:
        fail(f"give {option} or its --clear-… option, not both")
    if clear:
        return cleared
    return list(values) if values else UNSET


async def _group_names(services: Services, context: Context) -> dict[str, str]:
    """Every RBAC group's name by id."""
    names: dict[str, str] = {}
    page: str | None = None
    while True:
        result = await services.rbac_groups.list(context, limit=1000, page=page)
        names.update((view.group.id, view.group.name) for view in result.items)
        if result.next_page is None:
            return names
        page = result.next_page


def _resolve(reference: str, names: dict[str, str]) -> str:
    """A group id from an id or a name; an unknown one is passed on for the service to refuse (a
    deleted group's policy is still named by its id)."""
    if reference in names:
        return reference
    matches = [group_id for group_id, name in names.items() if name == reference]
    if len(matches) > 1:
        fail(f"{len(matches)} RBAC groups are named {reference!r}: give the id ({', '.join(sorted(matches))})")
    return matches[0] if matches else reference


def _show_policy(title: str, payload: dict[str, Any]) -> None:
    allowed = payload.get("allowed_models")
    out.print(f"[bold]{title}[/]", highlight=False)
    if "email_domains" in payload:
        out.print(f"email domains:  {', '.join(payload['email_domains']) or '-'}", highlight=False)
    out.print(f"allowed models: {'every model' if allowed is None else ', '.join(allowed) or 'none'}", highlight=False)
    out.print(f"denied models:  {', '.join(payload['denied_models'] or []) or '-'}", highlight=False)
    settings = payload.get("settings")
    out.print("settings:       " + ("none" if settings is None else ""), highlight=False)
    if settings is not None:
        out.print(json.dumps(settings, indent=2), highlight=False, soft_wrap=True)


# -- configuration ---------------------------------------------------------------------------------


def _print_configuration(shown: tuple[dict[str, Any], dict[str, str]], as_json: bool) -> None:
    """The configuration a command answered with: JSON, or the table with group names."""
    payload, names = shown
    if as_json:
        print_json(payload)
    else:
        _show_configuration(payload, names)


def _show_configuration(payload: dict[str, Any], names: dict[str, str]) -> None:
    out.print(f"mode: [bold]{payload['mode']['type']}[/]", highlight=False)
    rows = [[i + 1, g, names.get(g, "(deleted group)")] for i, g in enumerate(payload["rbac_group_order"])]
    print_table(f"Group order (version {payload['rbac_group_order_version']})", ["#", "group id", "name"], rows)


@cc_policies.command("config")
def config_show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the configuration: the mode and the order of group policies (first match wins)."""

    async def work(services: Services) -> tuple[dict[str, Any], dict[str, str]]:
        from orgwarden.api import render

        context = await cli_context(services)
        payload = render.cc_configuration(await services.cc_policies.configuration(context))
        return payload, await _group_names(services, context)

    _print_configuration(run(settings_from(ctx), work), as_json)


@cc_policies.command("set-mode")
def config_set_mode(
    ctx: typer.Context,
    mode: Annotated[str, typer.Argument(help="rbac_groups (first matching group's policy) or organization.")],
    as_json: JsonFlag = False,
) -> None:
    """Set the mode: 'organization' gives everyone the default policy, 'rbac_groups' the first match's."""

    async def work(services: Services) -> tuple[dict[str, Any], dict[str, str]]:
        from orgwarden.api import render

        context = await cli_context(services)
        result = await services.cc_policies.update_configuration(context, mode=mode, order=None, order_version=None)
        return render.cc_configuration(result), await _group_names(services, context)

    _print_configuration(run(settings_from(ctx), work), as_json)


@cc_policies.command("reorder")
def config_reorder(
    ctx: typer.Context,
    groups: Annotated[list[str], typer.Argument(metavar="GROUP...", help="Every group with a policy, in order.")],
    order_version: Annotated[
        str | None,
        typer.Option("--version", help="The order version read (from `config`): refused if it changed since."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set the order of the group policies (highest precedence first): list every one, once."""

    async def work(services: Services) -> tuple[dict[str, Any], dict[str, str]]:
        from orgwarden.api import render

        context = await cli_context(services)
        names = await _group_names(services, context)
        order = [_resolve(group, names) for group in groups]
        version = order_version
        if version is None:
            version = (await services.cc_policies.configuration(context)).order_version
        result = await services.cc_policies.update_configuration(context, mode=None, order=order, order_version=version)
        return render.cc_configuration(result), names

    _print_configuration(run(settings_from(ctx), work), as_json)


# -- the default policy ----------------------------------------------------------------------------


@default_policy.command("show")
def default_show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the default policy."""

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        return render.cc_default(await services.cc_policies.default(await cli_context(services)))

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        _show_policy("Default policy", payload)


@default_policy.command("set")
def default_set(
    ctx: typer.Context,
    settings: SettingsOpt = None,
    allowed_model: AllowedOpt = None,
    clear_allowed_models: ClearAllowedOpt = False,
    denied_model: DeniedOpt = None,
    clear_denied_models: ClearDeniedOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Change the default policy: what is given replaces what it had, the rest is kept."""
    from orgwarden.services.cc_policies import UNSET

    document = _document(settings)
    allowed = _replacing(allowed_model, clear_allowed_models, "--allowed-model", None)
    denied = _replacing(denied_model, clear_denied_models, "--denied-model", [])
    if document is UNSET and allowed is UNSET and denied is UNSET:
        fail("nothing to change: give --settings, --allowed-model, --denied-model or a --clear-… option")

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        config = await services.cc_policies.set_default(
            await cli_context(services), settings=document, allowed_models=allowed, denied_models=denied
        )
        return render.cc_default(config)

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        _show_policy("Default policy updated", payload)


@default_policy.command("clear")
def default_clear(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Clear the default policy: no settings document, no allow-list, no deny-list."""

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        config = await services.cc_policies.set_default(
            await cli_context(services), settings=None, allowed_models=None, denied_models=[]
        )
        return render.cc_default(config)

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print("Default policy cleared")


# -- group policies --------------------------------------------------------------------------------


@cc_policies.command("list")
def group_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the group policies in order (first match wins)."""

    async def work(services: Services) -> tuple[list[dict[str, Any]], dict[str, str]]:
        from orgwarden.api import render

        context = await cli_context(services)
        payloads: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            items, page = await services.cc_policies.list_groups(context, limit=100, page=page)
            payloads += [render.cc_group_summary(view) for view in items]
            if page is None:
                return payloads, await _group_names(services, context)

    payloads, names = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
        return
    print_table(
        "Claude Code group policies",
        ["#", "group id", "name", "status", "updated"],
        [[i + 1, p["rbac_group_id"], names.get(p["rbac_group_id"]), p["rbac_group_status"]["type"], p["updated_at"]]
         for i, p in enumerate(payloads)],
    )  # fmt: skip


@cc_policies.command("show")
def group_show(ctx: typer.Context, group: GroupArg, as_json: JsonFlag = False) -> None:
    """Show a group's policy."""

    async def work(services: Services) -> tuple[dict[str, Any], str | None]:
        from orgwarden.api import render

        context = await cli_context(services)
        names = await _group_names(services, context)
        group_id = _resolve(group, names)
        return render.cc_group(await services.cc_policies.get(context, group_id)), names.get(group_id)

    payload, name = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        _show_policy(f"Policy of {name or '(deleted group)'} ({payload['rbac_group_id']})", payload)


@cc_policies.command("set")
def group_set(
    ctx: typer.Context,
    group: GroupArg,
    settings: SettingsOpt = None,
    email_domain: Annotated[
        list[str] | None, typer.Option("--email-domain", help="Also match users of this email domain (repeat).")
    ] = None,
    clear_email_domains: Annotated[bool, typer.Option("--clear-email-domains", help="Match no domain.")] = False,
    allowed_model: AllowedOpt = None,
    clear_allowed_models: ClearAllowedOpt = False,
    denied_model: DeniedOpt = None,
    clear_denied_models: ClearDeniedOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Create or change a group's policy (a new one joins the end of the order). What is given
    replaces what it had, the rest is kept; a new policy needs --settings."""
    document = _document(settings)
    domains = _replacing(email_domain, clear_email_domains, "--email-domain", [])
    allowed = _replacing(allowed_model, clear_allowed_models, "--allowed-model", None)
    denied = _replacing(denied_model, clear_denied_models, "--denied-model", [])

    async def work(services: Services) -> tuple[dict[str, Any], str | None]:
        from orgwarden.api import render

        context = await cli_context(services)
        names = await _group_names(services, context)
        group_id = _resolve(group, names)
        view = await services.cc_policies.set_group(
            context, group_id, settings=document, email_domains=domains, allowed_models=allowed, denied_models=denied
        )
        return render.cc_group(view), names.get(group_id)

    payload, name = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        _show_policy(f"Policy of {name} ({payload['rbac_group_id']}) saved", payload)


@cc_policies.command("delete")
def group_delete(ctx: typer.Context, group: GroupArg, as_json: JsonFlag = False) -> None:
    """Delete a group's policy (it leaves the order)."""

    async def work(services: Services) -> dict[str, Any]:
        context = await cli_context(services)
        gone = await services.cc_policies.delete(context, _resolve(group, await _group_names(services, context)))
        return {"rbac_group_id": gone, "type": "claude_code_rbac_group_managed_settings_deleted"}

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Deleted the policy of {payload['rbac_group_id']}")
