"""``orgwarden rate-limits`` and ``spend-limits``: the same use cases as the Admin API, so the same
checks and messages, the same audit events and the same cache events (a running gateway picks a
change made here up within a second)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from orgwarden.cli.runtime import cli_context, fail, out, print_json, print_table, run, settings_from

if TYPE_CHECKING:
    from orgwarden.services.container import Services
    from orgwarden.services.cursors import CursorPage

T = TypeVar("T")

rate_limits = typer.Typer(help="Rate limits per model group and API surface.", no_args_is_help=True)
spend_limits = typer.Typer(help="Spend limits per organization, workspace or API key.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WorkspaceOpt = Annotated[str | None, typer.Option("--workspace", help="Workspace id.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="API key id.")]
SHORT = {
    "rpm": "requests_per_minute",
    "itpm": "input_tokens_per_minute",
    "itpm-cache-aware": "input_tokens_per_minute_cache_aware",
    "otpm": "output_tokens_per_minute",
}
LEVELS = {"organization": "organization", "workspace": "workspace", "api-key": "api_key", "api_key": "api_key"}


async def _every_page(fetch: Callable[[str | None], Awaitable[CursorPage[T]]]) -> list[T]:
    items: list[T] = []
    page: str | None = None
    while True:
        result = await fetch(page)
        items.extend(result.items)
        if result.next_page is None:
            return items
        page = result.next_page


def _level(
    level: str | None, workspace: str | None, key: str | None, option: str = "--level"
) -> tuple[str, str | None]:
    """The level and its id: ``--level`` if given, else what ``--workspace`` / ``--key`` imply."""
    if workspace is not None and key is not None:
        fail("give --workspace or --key, not both")
    implied = "workspace" if workspace is not None else "api_key" if key is not None else "organization"
    chosen = implied if level is None else LEVELS.get(level)
    if chosen is None:
        fail(f"{option}: {level!r} is not one of organization, workspace, api-key")
    if chosen != implied:
        needs = {"workspace": "--workspace ID", "api_key": "--key ID", "organization": "neither --workspace nor --key"}
        fail(f"{option} {level} needs {needs[chosen]}")
    return chosen, workspace if chosen == "workspace" else key


# -- rate limits -----------------------------------------------------------------------------------


@rate_limits.command("list")
def rate_limits_list(
    ctx: typer.Context,
    group_type: Annotated[str | None, typer.Option(help="model_group, batch, token_count, files, skills …")] = None,
    model: Annotated[str | None, typer.Option(help="Only the group of this model (id or alias).")] = None,
    workspace: WorkspaceOpt = None,
    key: KeyOpt = None,
    include_inherited: Annotated[
        bool, typer.Option(help="With --workspace: also the organization's values it inherits.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List rate limits: the organization's (every group), or a workspace's or API key's own."""
    level, scope_id = _level(None, workspace, key)
    if model is not None and level != "organization":
        fail("--model lists the organization's entries; leave out --workspace and --key")

    async def work(services: Services) -> list[dict[str, Any]]:
        from orgwarden.api import render

        context = await cli_context(services)
        svc = services.rate_limits
        if level == "workspace":
            assert scope_id is not None
            entries = await _every_page(
                lambda page: svc.list_workspace(
                    context, scope_id, group_type=group_type, include_inherited=include_inherited, page=page
                )
            )
            return [render.workspace_rate_limit(e) for e in entries]
        if level == "api_key":
            assert scope_id is not None
            entries = await _every_page(
                lambda page: svc.list_api_key(context, scope_id, group_type=group_type, page=page)
            )
            return [render.api_key_rate_limit(e) for e in entries]
        entries = await _every_page(
            lambda page: svc.list_organization(context, group_type=group_type, model=model, page=page)
        )
        return [render.rate_limit(e) for e in entries]

    payloads = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
        return
    _show_entries(payloads, f"Rate limits ({level.replace('_', ' ')}{f' {scope_id}' if scope_id else ''})")


def _show_entries(payloads: list[dict[str, Any]], title: str) -> None:
    rows: list[list[Any]] = []
    for entry in payloads:
        name = f"{entry['group']['display_name']}"
        rate_limit_id = entry.get("rate_limit_id") or entry["id"]
        limits = entry["limits"] or [{}]
        for limit in limits:
            source = limit.get("source", {}).get("type") if limit else None
            rows.append([name, entry["group_type"], rate_limit_id, limit.get("type"), limit.get("value"), source])
            name, rate_limit_id = "", ""
    print_table(title, ["group", "type", "rate_limit_id", "limiter", "value", "source"], rows)


def _value(option: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        fail(f"{option}: must be at least 1 (use --clear to remove a value)")
    return value


@rate_limits.command("set")
def rate_limits_set(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="A group name (claude-sonnet-4, batch …), a model, or a rate_limit_id.")],
    level: Annotated[str | None, typer.Option(help="organization, workspace or api-key. [default: implied]")] = None,
    workspace: WorkspaceOpt = None,
    key: KeyOpt = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute.")] = None,
    itpm: Annotated[int | None, typer.Option("--itpm", help="Input tokens per minute (cache reads count).")] = None,
    itpm_cache_aware: Annotated[
        int | None, typer.Option("--itpm-cache-aware", help="Input tokens per minute, cache reads not counted.")
    ] = None,
    otpm: Annotated[int | None, typer.Option("--otpm", help="Output tokens per minute.")] = None,
    clear: Annotated[
        list[str] | None, typer.Option("--clear", help="Remove a value: rpm, itpm, itpm-cache-aware, otpm (repeat).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set or clear rate-limit values of one group, for the organization, a workspace or an API key."""
    from orgwarden.domain.limits import LIMITER_TYPES

    chosen, scope_id = _level(level, workspace, key)
    values: list[tuple[str, int | None]] = [
        (kind, _value(option, value))
        for option, kind, value in (
            ("--rpm", "requests_per_minute", rpm),
            ("--itpm", "input_tokens_per_minute", itpm),
            ("--itpm-cache-aware", "input_tokens_per_minute_cache_aware", itpm_cache_aware),
            ("--otpm", "output_tokens_per_minute", otpm),
        )
        if value is not None
    ]
    for name in clear or []:
        kind = SHORT.get(name, name)
        if kind not in LIMITER_TYPES:
            fail(f"--clear: {name!r} is not one of {', '.join(SHORT)}")
        if any(known == kind for known, _ in values):
            fail(f"--clear {name}: that limiter is also being set")
        values.append((kind, None))
    if not values:
        fail("nothing to change: give --rpm, --itpm, --itpm-cache-aware, --otpm or --clear")
    from orgwarden.services.rate_limits import LimitChange  # after the refusals, which need no services

    changes = [LimitChange(kind, value) for kind, value in values]

    async def work(services: Services) -> dict[str, Any]:
        from orgwarden.api import render

        context = await cli_context(services)
        svc = services.rate_limits
        entry = await svc.update(context, chosen, scope_id, svc.resolve(context, group), changes)
        renderer = {"organization": render.rate_limit, "workspace": render.workspace_rate_limit}.get(
            chosen, render.api_key_rate_limit
        )
        return renderer(entry)

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
        return
    _show_entries([payload], f"Rate limits ({chosen.replace('_', ' ')}{f' {scope_id}' if scope_id else ''})")


# -- spend limits ----------------------------------------------------------------------------------


def _dollars(cents: str | None) -> str:
    if cents is None:
        return "no cap"
    whole, part = divmod(int(cents), 100)
    return f"${whole:,}.{part:02d}"


def _scope_text(scope: dict[str, Any]) -> str:
    return str(scope.get("workspace_id") or scope.get("api_key_id") or scope.get("user_id") or scope["type"])


def _show_limits(payloads: list[dict[str, Any]]) -> None:
    print_table(
        "Spend limits",
        ["id", "scope", "of", "period", "amount (cents)", "amount", "alerts at %", "updated"],
        [
            [s["id"], s["scope"]["type"], _scope_text(s["scope"]), s["period"], s["amount"], _dollars(s["amount"]),
             ",".join(str(t) for t in s["alert_thresholds"]), s["updated_at"]]
            for s in payloads
        ],
    )  # fmt: skip


@spend_limits.command("list")
def spend_limits_list(
    ctx: typer.Context,
    scope_type: Annotated[
        list[str] | None, typer.Option("--scope-type", help="organization, workspace or api_key (repeat).")
    ] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", help="Only this workspace's limits.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List spend limits, oldest first."""

    async def work(services: Services) -> list[dict[str, Any]]:
        from orgwarden.api import render

        context = await cli_context(services)
        types = [LEVELS.get(t, t) for t in scope_type or []]
        rows = await _every_page(
            lambda page: services.spend_limits.list(
                context, scope_types=types, workspace_id=workspace, limit=1000, page=page
            )
        )
        return [render.spend_limit(row) for row in rows]

    payloads = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
    else:
        _show_limits(payloads)


def _thresholds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if not text.strip():
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        fail(f"--alert-thresholds: {text!r} is not a comma-separated list of percentages such as 50,80,100")


@spend_limits.command("set")
def spend_limits_set(
    ctx: typer.Context,
    amount_cents: Annotated[
        str, typer.Option("--amount-cents", help="The cap in cents (50000 = $500.00), or 'none' for no cap.")
    ],
    scope: Annotated[
        str | None, typer.Option(help="organization, workspace, api-key or user. [default: implied]")
    ] = None,
    workspace: WorkspaceOpt = None,
    key: KeyOpt = None,
    user: Annotated[
        str | None, typer.Option("--user", help="User id: a cap on every request made with their access tokens.")
    ] = None,
    period: Annotated[str, typer.Option(help="daily, weekly or monthly.")] = "monthly",
    alert_thresholds: Annotated[
        str | None, typer.Option(help="Percentages of the amount that alert, e.g. 50,80,100. [default: kept]")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create or update the spend limit of a scope and period."""
    scope_id: str | None
    if user is not None:  # a user scope: --scope user (or none), and no --workspace / --key
        if workspace is not None or key is not None or scope not in (None, "user"):
            fail("--user sets a user's spend limit: give neither --workspace, --key nor another --scope")
        chosen, scope_id = "user", user
    else:
        if scope == "user":
            fail("--scope user needs --user ID")
        chosen, scope_id = _level(scope, workspace, key, "--scope")
    amount = None if amount_cents.strip().lower() == "none" else amount_cents
    thresholds = _thresholds(alert_thresholds)
    from orgwarden.services.spend_limits import Scope  # after the refusals, which need no services

    target = Scope(
        chosen,
        workspace_id=scope_id if chosen == "workspace" else None,
        api_key_id=scope_id if chosen == "api_key" else None,
        user_id=scope_id if chosen == "user" else None,
    )

    async def work(services: Services) -> tuple[dict[str, Any], bool]:
        from orgwarden.api import render

        row, created = await services.spend_limits.set(
            await cli_context(services), amount=amount, scope=target, period=period, alert_thresholds=thresholds
        )
        return render.spend_limit(row), created

    payload, created = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
        return
    out.print(
        f"{'Created' if created else 'Updated'} spend limit {payload['id']}: {_dollars(payload['amount'])} "
        f"{payload['period']} for {_scope_text(payload['scope'])}"
    )


@spend_limits.command("delete")
def spend_limits_delete(
    ctx: typer.Context,
    spend_limit_id: Annotated[str, typer.Argument(help="The spend limit's id (spl_…).")],
    as_json: JsonFlag = False,
) -> None:
    """Delete a spend limit."""

    async def work(services: Services) -> dict[str, Any]:
        row = await services.spend_limits.delete(await cli_context(services), spend_limit_id)
        return {"id": row.id, "type": "spend_limit_deleted"}

    payload = run(settings_from(ctx), work)
    if as_json:
        print_json(payload)
    else:
        out.print(f"Deleted spend limit {payload['id']}")


@spend_limits.command("effective")
def spend_limits_effective(
    ctx: typer.Context,
    period: Annotated[list[str] | None, typer.Option("--period", help="daily, weekly or monthly (repeat).")] = None,
    key: Annotated[list[str] | None, typer.Option("--key", help="Only this API key (repeat).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The limit that binds each API key per period, and what its scope spent so far this period."""

    async def work(services: Services) -> list[dict[str, Any]]:
        from orgwarden.api import render

        context = await cli_context(services)
        rows = await _every_page(
            lambda page: services.spend_limits.effective(
                context, periods=period or [], api_key_ids=key or [], limit=1000, page=page
            )
        )
        return [render.spend_summary(row) for row in rows]

    payloads = run(settings_from(ctx), work)
    if as_json:
        print_json(payloads)
        return
    print_table(
        "Effective spend limits",
        ["member", "period", "binding scope", "of", "limit", "spent this period (cents)", "spend_limit_id"],
        [
            [_scope_text(r["scope"]), r["period"], r["source"]["type"], _scope_text(r["source"]),
             _dollars(r["amount"]), r["period_to_date_spend"], r["spend_limit_id"]]
            for r in payloads
        ],
    )  # fmt: skip
