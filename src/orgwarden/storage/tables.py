"""The schema, as SQLAlchemy 2 declarative models. Alembic migrations are the source of DDL."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orgwarden.storage.types import IdString, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    # What removing or deactivating a user does to the API keys they created: deactivate | keep.
    offboarding_key_policy: Mapped[str] = mapped_column(String(16), default="deactivate", server_default="deactivate")


class User(Base):
    """A member of the organization. Removal keeps the row (``removed_at``) for the audit trail."""

    __tablename__ = "users"
    __table_args__ = (
        Index(
            "uq_users_active_email",
            "organization_id",
            "email",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    added_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]
    deactivated_at: Mapped[datetime | None] = mapped_column(default=None)  # SCIM ``active: false``


class Invite(Base):
    __tablename__ = "invites"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    role: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # pending | accepted | deleted ("expired" is derived)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    invited_by: Mapped[str | None] = mapped_column(IdString())
    user_id: Mapped[str | None] = mapped_column(IdString())


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    is_default: Mapped[bool] = mapped_column(default=False)
    display_color: Mapped[str] = mapped_column(String(7))
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    workspace_geo: Mapped[str] = mapped_column(String(32))
    allowed_inference_geos: Mapped[Any] = mapped_column(JSON)  # a list of geos, or "unrestricted"
    default_inference_geo: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    archived_at: Mapped[datetime | None]
    # The workspace's own upstream API key, encrypted with the server secret (write-only on the API).
    upstream_api_key_encrypted: Mapped[str | None] = mapped_column(String(512), default=None)


class WorkspaceMember(Base):
    __tablename__ = "workspace_members"

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]


class ApiKey(Base):
    """A data-plane key, scoped to one workspace. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    partial_key_hint: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # active | inactive | archived ("expired" is derived)
    created_at: Mapped[datetime]
    created_by_type: Mapped[str] = mapped_column(String(32))
    created_by_id: Mapped[str] = mapped_column(IdString())
    expires_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]


class AdminApiKey(Base):
    """A key for the Admin API, owned by an admin user. Only the SHA-256 of the secret is stored."""

    __tablename__ = "admin_api_keys"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    partial_key_hint: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # active | revoked
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    """An append-only record of a mutation or refusal, written in the transaction of the change.

    Events are sealed into their organization's hash chain when the transaction commits
    (``AuditEvents.seal``): ``seq`` numbers them 1, 2, 3, … per organization, ``hash`` covers every
    other column and ``prev_hash`` is the hash of the event before (``domain.audit_chain``). The
    database refuses UPDATE and DELETE on this table (triggers, migration 0007); a later migration
    that rebuilds the table on SQLite (batch mode) must create those triggers again.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_seq", "organization_id", "seq", unique=True),)

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    actor_type: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_user_id: Mapped[str | None] = mapped_column(IdString())
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str | None] = mapped_column(IdString())
    request_id: Mapped[str | None] = mapped_column(String(64))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class UsageRecord(Base):
    """One record per request that reached the upstream: what it used and what it cost.

    Costs are integer picodollars (1e-12 USD), so sums are exact (``domain.catalog``).
    """

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_org_time", "organization_id", "created_at"),)

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)  # the request id
    organization_id: Mapped[str] = mapped_column(IdString(36))
    workspace_id: Mapped[str] = mapped_column(IdString())
    api_key_id: Mapped[str] = mapped_column(IdString())
    model: Mapped[str] = mapped_column(String(128))
    service_tier: Mapped[str] = mapped_column(String(32))
    inference_geo: Mapped[str] = mapped_column(String(32))
    context_window: Mapped[str] = mapped_column(String(16))
    speed: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(32))
    stream: Mapped[bool]
    completed: Mapped[bool]
    # The output count (and, when none came, the input count) is orgwarden's estimate from the content
    # relayed: the answer ended without its final usage (``domain.usage``). False for older rows.
    usage_estimated: Mapped[bool] = mapped_column(server_default=false())
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    web_search_requests: Mapped[int] = mapped_column(Integer)
    cost_picodollars: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    # The user whose access token made the request (``api_key_id`` is then ""); null for API keys.
    user_id: Mapped[str | None] = mapped_column(IdString(), default=None)
    # What Claude Code said of the request (``x-claude-code-session-id``, ``x-claude-code-agent-id``
    # on a subagent's calls), cut to the column; null for other clients and older rows (0018).
    claude_code_session_id: Mapped[str | None] = mapped_column(String(64), default=None)
    claude_code_agent_id: Mapped[str | None] = mapped_column(String(64), default=None)


class UsageRollup(Base):
    """Usage summed per time bucket and every reporting dimension, kept as records are written.

    One row per (organization, bucket width, bucket start, workspace, key, model, service tier,
    context window, inference geo, speed), for each of the widths ``1m``, ``1h`` and ``1d``: a report
    reads the width it asks for and never scans ``usage_records``. The recorder adds to these rows in
    the transaction that inserts the records (an upsert that adds), so the two always agree. Costs are
    kept per kind, in picodollars as metered, so the cost report's rows add up to the metered total.
    Only ``/v1/messages`` records are rolled up (what the usage and cost reports describe). On
    PostgreSQL the table is partitioned by ``bucket_width`` (migration 0004), so each width's rows
    have a heap and an index of their own.
    """

    __tablename__ = "usage_rollups"

    organization_id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    bucket_width: Mapped[str] = mapped_column(String(2), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    workspace_id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    service_tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    context_window: Mapped[str] = mapped_column(String(16), primary_key=True)
    inference_geo: Mapped[str] = mapped_column(String(32), primary_key=True)
    speed: Mapped[str] = mapped_column(String(16), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    web_search_requests: Mapped[int] = mapped_column(BigInteger)
    cost_input: Mapped[int] = mapped_column(BigInteger)
    cost_output: Mapped[int] = mapped_column(BigInteger)
    cost_cache_write_5m: Mapped[int] = mapped_column(BigInteger)
    cost_cache_write_1h: Mapped[int] = mapped_column(BigInteger)
    cost_cache_read: Mapped[int] = mapped_column(BigInteger)
    cost_web_search: Mapped[int] = mapped_column(BigInteger)
    estimated_requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))  # usage_estimated records
    # The user of a user-token request, "" for API-key traffic (a key column cannot be null: migration 0014).
    user_id: Mapped[str] = mapped_column(IdString(), primary_key=True, server_default=text("''"))


class CacheEvent(Base):
    """A change that caches on other workers and instances must hear about (keys, workspaces).

    Written in the transaction of the change; every gateway worker polls for new rows a few times a
    second (``gateway.keys``), which is what makes a revocation effective everywhere within a second
    without a database round trip per request.
    """

    __tablename__ = "cache_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class RateLimitValue(Base):
    """One limiter value of one rate-limit group at one level (organization, workspace, API key).

    A row exists only for a value that is set: clearing an override deletes the row. ``scope_id``
    is the organization, workspace or API key id; ``group_name`` the catalogue group or surface type.
    """

    __tablename__ = "rate_limit_values"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    scope_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    limiter: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class SpendLimit(Base):
    """A spend limit: a cap on metered cost in one UTC period, for one scope.

    One row per scope and period (setting again updates it). ``amount_cents`` null is an explicit
    "no limit" for that scope and period. ``alert_thresholds`` are percentages of the amount.
    """

    __tablename__ = "spend_limits"
    __table_args__ = (
        Index("uq_spend_limits_scope_period", "organization_id", "scope_type", "scope_id", "period", unique=True),
    )

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    scope_type: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(IdString())
    period: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    alert_thresholds: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SpendAlert(Base):
    """A spend alert that fired: at most one per limit, period and threshold, across every instance
    (the primary key is what makes "once per period" hold when several instances cross together)."""

    __tablename__ = "spend_alerts"

    spend_limit_id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[str] = mapped_column(IdString(36))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    spent_picodollars: Mapped[int] = mapped_column(BigInteger)
    fired_at: Mapped[datetime]


class ClaudeCodeDaily(Base):
    """Claude Code's core figures for one UTC day, actor and terminal, summed from its telemetry.

    ``actor`` is the user's email (``user_actor``) or the id of the API key that sent the export
    (``api_actor``; its name is read at report time, so a renamed key shows its new name). Every
    export that names an actor touches this row, so an actor with only token usage is listed too.
    """

    __tablename__ = "claude_code_daily"

    organization_id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(IdString(16), primary_key=True)
    actor: Mapped[str] = mapped_column(IdString(320), primary_key=True)
    terminal_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    commits: Mapped[int] = mapped_column(BigInteger)
    pull_requests: Mapped[int] = mapped_column(BigInteger)
    lines_added: Mapped[int] = mapped_column(BigInteger)
    lines_removed: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class ClaudeCodeModelDaily(Base):
    """Tokens and estimated cost (integer picodollars, exact sums) per day, actor and model."""

    __tablename__ = "claude_code_model_daily"

    organization_id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(IdString(16), primary_key=True)
    actor: Mapped[str] = mapped_column(IdString(320), primary_key=True)
    model: Mapped[str] = mapped_column(IdString(128), primary_key=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_picodollars: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class ClaudeCodeToolDaily(Base):
    """Code edit tool decisions (accepted, rejected) per day, actor and tool (the report's key)."""

    __tablename__ = "claude_code_tool_daily"

    organization_id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(IdString(16), primary_key=True)
    actor: Mapped[str] = mapped_column(IdString(320), primary_key=True)
    tool: Mapped[str] = mapped_column(IdString(64), primary_key=True)
    accepted: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class ClaudeCodeSeries(Base):
    """The last point seen of one OTLP time series, so that a repeated or cumulative point adds
    only what is new (``domain.claude_code.advance``). ``series_key`` is the SHA-256 of the series'
    identity; ``last_value`` is in the metric's stored unit (picodollars for cost, else a count)."""

    __tablename__ = "claude_code_series"

    organization_id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    series_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_unix_nano: Mapped[int] = mapped_column(BigInteger)
    time_unix_nano: Mapped[int] = mapped_column(BigInteger)
    last_value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(index=True)


class Tunnel(Base):
    """An MCP tunnel: a hostname under the configured base domain and a connection token.

    orgwarden manages tunnels; it does not carry their traffic. The token is kept encrypted with the
    server secret (``token_encrypted``, so reveal can return it) and as a SHA-256 (``token_hash``, so a
    presented token can be checked by look-up); both are cleared on archive. ``domain`` is unique over
    every row, archived ones included, which is what "never reused" rests on.
    """

    __tablename__ = "tunnels"
    __table_args__ = (Index("ix_tunnels_org_created", "organization_id", "id"),)

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    token_id: Mapped[str | None] = mapped_column(String(69))
    token_encrypted: Mapped[str | None] = mapped_column(String(256))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    archived_at: Mapped[datetime | None]


class TunnelCertificate(Base):
    """A public CA certificate registered on a tunnel; archiving keeps the row (``archived_at``)."""

    __tablename__ = "tunnel_certificates"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    tunnel_id: Mapped[str] = mapped_column(ForeignKey("tunnels.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    archived_at: Mapped[datetime | None]


class AuditChainHead(Base):
    """The newest link of an organization's audit chain: its ``seq`` and ``hash``.

    Sealing a transaction's events locks this row (``FOR UPDATE`` on PostgreSQL), so that instances
    writing at once queue here and the chain stays one line; the lock is the last one a transaction
    takes. It is also the witness for the end of the chain: deleting the newest events leaves no gap
    between events, but leaves the head beyond the last one. No foreign key: it is locked on every
    commit that writes events, and its organization's events already reference the organization.
    """

    __tablename__ = "audit_chain_heads"

    organization_id: Mapped[str] = mapped_column(IdString(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class UserSession(Base):
    """A browser session after an OpenID Connect sign-in. The cookie holds the secret; this row its hash."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    source_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(255), default=None)
    # The identity provider's refresh token from this sign-in, sealed (``crypto.SecretBox``, bound to
    # the row id); a device approved from the session gets a copy. Null when the IdP issued none.
    idp_refresh_token: Mapped[str | None] = mapped_column(Text, default=None)


class UserToken(Base):
    """An OAuth access or refresh token of a user; only the SHA-256 of the secret is stored.

    Refresh tokens of one grant share ``family_id``; using one rotates it (``replaced_by``), and
    presenting a rotated one again revokes the family.
    """

    __tablename__ = "user_tokens"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    workspace_id: Mapped[str | None] = mapped_column(IdString(), default=None)
    kind: Mapped[str] = mapped_column(String(16))  # access | refresh
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(IdString(), index=True)
    client_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    replaced_by: Mapped[str | None] = mapped_column(IdString(), default=None)


class UserTokenFamily(Base):
    """One device sign-in: the tokens sharing ``family_id``. Its age bounds them all
    (``signin_max_age_seconds``), and it carries the identity provider's refresh token (sealed, bound
    to the family id) that every refresh of the family re-checks the person with."""

    __tablename__ = "user_token_families"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)  # the tokens' family_id
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime]
    idp_refresh_token: Mapped[str | None] = mapped_column(Text, default=None)
    idp_checked_at: Mapped[datetime | None] = mapped_column(default=None)


class DeviceAuthorization(Base):
    """An RFC 8628 device authorization: polled by the device code's hash, approved by user code."""

    __tablename__ = "device_authorizations"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client_id: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(255))
    workspace_id: Mapped[str | None] = mapped_column(IdString(), default=None)
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | denied | used
    organization_id: Mapped[str | None] = mapped_column(IdString(36), default=None)
    user_id: Mapped[str | None] = mapped_column(IdString(), default=None)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_polled_at: Mapped[datetime | None] = mapped_column(default=None)
    # The approving session's IdP refresh token, sealed again for this row; handed to the token family.
    idp_refresh_token: Mapped[str | None] = mapped_column(Text, default=None)


class ScimToken(Base):
    """A bearer token of the identity provider on ``/scim/v2``; only the SHA-256 of the secret is stored."""

    __tablename__ = "scim_tokens"

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    partial_hint: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ScimUser(Base):
    """The SCIM side of a provisioned user: its ``userName``, ``externalId``, the attributes orgwarden
    does not model (kept as sent, bounded) and a version (the ETag). Deleted with the user's removal."""

    __tablename__ = "scim_users"
    __table_args__ = (
        Index("uq_scim_users_org_user_name", "organization_id", "user_name_key", unique=True),
        Index("ix_scim_users_org_external_id", "organization_id", "external_id"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_name: Mapped[str] = mapped_column(String(320))
    user_name_key: Mapped[str] = mapped_column(String(320))  # lower-cased: userName is case-insensitive
    external_id: Mapped[str | None] = mapped_column(String(255))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RbacGroup(Base):
    """A group of users (the SDK's ``rbac_group``) and the roles it grants its members."""

    __tablename__ = "rbac_groups"
    __table_args__ = (Index("ix_rbac_groups_org_name", "organization_id", "name"),)

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    source_type: Mapped[str] = mapped_column(String(16))  # direct | scim
    external_id: Mapped[str | None] = mapped_column(String(255))
    org_role: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RbacGroupMember(Base):
    __tablename__ = "rbac_group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("rbac_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    source: Mapped[str] = mapped_column(String(16))  # scim | oidc | direct
    display: Mapped[str | None] = mapped_column(String(255), default=None)  # SCIM's ``members.display``, as sent
    created_at: Mapped[datetime]


class RbacGroupWorkspaceRole(Base):
    __tablename__ = "rbac_group_workspace_roles"

    group_id: Mapped[str] = mapped_column(ForeignKey("rbac_groups.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(40))


class ManagedRole(Base):
    """A role a group raised: what the user has without groups (``direct_role``; null: no workspace
    membership) and what orgwarden set (``managed_role``). ``scope`` is "organization" or a workspace id."""

    __tablename__ = "managed_roles"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(IdString(), primary_key=True)
    direct_role: Mapped[str | None] = mapped_column(String(40))
    managed_role: Mapped[str] = mapped_column(String(40))


class InviteRbacGroup(Base):
    __tablename__ = "invite_rbac_groups"

    invite_id: Mapped[str] = mapped_column(ForeignKey("invites.id"), primary_key=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("rbac_groups.id", ondelete="CASCADE"), primary_key=True)


class StoredFile(Base):
    """A file uploaded through the gateway's Files API, and the workspace it belongs to: the
    upstream key may be organization-wide, so this is what scopes files to a workspace. Strings as
    the upstream answered them, bounded (``gateway/files.py``)."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_workspace_created", "workspace_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the upstream's file_...
    organization_id: Mapped[str] = mapped_column(IdString(36))
    workspace_id: Mapped[str] = mapped_column(IdString())
    api_key_id: Mapped[str] = mapped_column(IdString())  # "" for a user access token
    filename: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    downloadable: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class MessageBatch(Base):
    """A Message Batch created through the gateway (``gateway.batches``); the id is the upstream's.

    ``reserved_picodollars`` was reserved on each of ``reserved_counters`` (spend counters a limit
    reads) when it was created; ``spend_counters`` are every counter its cost goes into. The
    reservation holds until ``settled_at``: a limits store that starts a counter again adds the
    reservations of unsettled batches to it (``gateway.limits.LimitSource.baseline``).
    """

    __tablename__ = "message_batches"
    __table_args__ = (
        Index("ix_message_batches_workspace", "workspace_id", "id"),
        Index("ix_message_batches_unsettled", "settled_at"),
    )

    id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(IdString(36))
    workspace_id: Mapped[str] = mapped_column(IdString())
    api_key_id: Mapped[str] = mapped_column(IdString())  # "" for a user access token
    user_id: Mapped[str | None] = mapped_column(IdString(), default=None)
    created_at: Mapped[datetime]
    processing_status: Mapped[str] = mapped_column(String(16))  # as last seen from the upstream
    request_count: Mapped[int] = mapped_column(Integer)
    reserved_picodollars: Mapped[int] = mapped_column(BigInteger)
    reserved_counters: Mapped[list[str]] = mapped_column(JSON)
    spend_counters: Mapped[list[str]] = mapped_column(JSON)
    metered_at: Mapped[datetime | None] = mapped_column(default=None)  # claimed for metering
    settled_at: Mapped[datetime | None] = mapped_column(default=None)  # metered and settled
    metered_results: Mapped[int | None] = mapped_column(Integer, default=None)
    metered_picodollars: Mapped[int | None] = mapped_column(BigInteger, default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class CcPolicyConfig(Base):
    """An organization's Claude Code policy configuration: the mode, the order's version, and the base
    policy (the SDK's default managed settings; ``default_settings`` null: none set) with its model
    lists (orgwarden's extension; ``default_allowed_models`` null: no allow-list)."""

    __tablename__ = "cc_policy_configs"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    mode_updated_at: Mapped[datetime | None] = mapped_column(default=None)
    order_version: Mapped[int] = mapped_column(Integer)
    default_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    default_allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    default_denied_models: Mapped[list[str]] = mapped_column(JSON)
    default_updated_at: Mapped[datetime | None] = mapped_column(default=None)


class CcPolicy(Base):
    """One RBAC group's Claude Code policy (the SDK's group managed settings), at ``position`` in the
    organization's order (0 first). The group id is not a foreign key: a deleted group's policy stays
    in the order, matching nobody, as on Anthropic's API."""

    __tablename__ = "cc_policies"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    rbac_group_id: Mapped[str] = mapped_column(IdString(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    email_domains: Mapped[list[str]] = mapped_column(JSON)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    denied_models: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
