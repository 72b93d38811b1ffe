"""Settings, loaded and validated once at start-up, then passed in (never read as a global).

Sources, highest first: keyword arguments (the CLI's flags), ``ORGWARDEN_*`` environment variables,
a TOML file (``--config`` or ``ORGWARDEN_CONFIG``), defaults. A bad value raises ``ConfigError`` with
a one-line message naming the setting, and the CLI stops with it.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from orgwarden.errors import ConfigError

CONFIG_ENV = "ORGWARDEN_CONFIG"
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _default_data_dir() -> Path:
    return Path.home() / ".orgwarden"


class Settings(BaseSettings):
    """Every setting orgwarden reads. The README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="ORGWARDEN_", extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the embedded SQLite database lives (``<data_dir>/orgwarden.sqlite3``) and, with any
    database, the usage journal (``<data_dir>/journal/``)."""

    database_url: str | None = None
    """``postgresql://user@host:5432/db`` for production, ``sqlite:///path``; default: SQLite in data_dir."""

    database_connect_timeout_seconds: float = Field(default=5, gt=0, le=300)
    """Longest wait for a database connection (connecting, or a free one from the pool); past it the
    Admin API answers 503 ``storage unavailable`` and the recorder retries later."""

    database_statement_timeout_seconds: float = Field(default=15, gt=0, le=3600)
    """Longest a database statement may run (PostgreSQL ``statement_timeout`` and the driver's own
    time-out, which also catches a frozen server; SQLite's busy time-out); 503 past it."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    log_format: Literal["text", "json"] = "text"
    """``json``: every orgwarden log line (access lines included) is one JSON object."""

    access_log: bool = True
    """One ``orgwarden.access`` line per data-plane request (whatever ``log_level`` says)."""

    metrics_enabled: bool = True
    """Serve Prometheus metrics at ``GET /metrics`` (no key needed: they carry no secret)."""

    public_url: str | None = None
    """The URL users reach orgwarden at, used in invite links; default: the URL of the request."""

    admin_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest Admin API request body; larger ones are refused with 413."""

    invite_ttl_days: int = Field(default=21, ge=1, le=365)

    access_token_ttl_seconds: int = Field(default=3600, ge=10, le=86_400)
    """Lifetime of a signed-in user's access token (``ow-at01-``); the CLI refreshes it when it ends."""

    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400)
    """Lifetime of a refresh token (``ow-rt01-``) from its last use: each use rotates it."""

    oidc_issuer: str | None = None
    """The OpenID Connect issuer people sign in with (``https://…``; its discovery document is read
    from ``<issuer>/.well-known/openid-configuration``). Unset: browser sign-in and the device flow are off."""

    oidc_client_id: str | None = None
    """orgwarden's client id at the identity provider (required with ``oidc_issuer``)."""

    oidc_client_secret: SecretStr | None = None
    """Its client secret; unset for a public client (PKCE alone)."""

    oidc_scopes: str = "openid email profile"
    """Scopes asked for at sign-in (space separated; must include ``openid``)."""

    oidc_groups_claim: str = "groups"
    """The ID token (or userinfo) claim that lists the person's groups."""

    oidc_allowed_email_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Only emails in these domains may sign in (comma separated); empty: any domain."""

    oidc_jit_users: bool = False
    """Create a user (org role ``user``) on the first sign-in of an unknown email, instead of refusing it."""

    session_ttl_seconds: int = Field(default=12 * 3600, ge=300, le=30 * 86_400)
    """Lifetime of a browser session after sign-in."""

    oidc_recheck_on_refresh: bool = True
    """Ask the identity provider again on every refresh of a signed-in user's tokens: at browser
    sign-in orgwarden asks for ``offline_access`` (when the IdP's discovery document lists it) and
    keeps the IdP's refresh token, encrypted; a device approved from that session gets a copy, and
    each ``refresh_token`` grant refreshes it at the IdP first. The IdP refusing it (the person was
    deactivated, deleted, or consent revoked) revokes the sign-in."""

    signin_max_age_seconds: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400)
    """Longest a device sign-in (one family of access and refresh tokens) lives, however often it is
    refreshed; then the person signs in again. Its tokens never outlive it."""

    device_code_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    """How long a device flow's user code may be confirmed (RFC 8628 ``expires_in``)."""

    device_poll_interval_seconds: int = Field(default=5, ge=1, le=60)
    """Least seconds between two polls of the token endpoint by a device (RFC 8628 ``interval``)."""

    @field_validator("oidc_allowed_email_domains", mode="before")
    @classmethod
    def _domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            domains = [str(part).strip().lower().lstrip("@") for part in value]
            for domain in domains:
                if not domain or len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in domain.split(".")):
                    raise ValueError(f"{domain!r} is not a DNS domain")
            return domains
        return value

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname in {"127.0.0.1", "::1", "localhost"}
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("must be an https:// URL (plain http only on 127.0.0.1, for tests)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("oidc_scopes")
    @classmethod
    def _scopes(cls, value: str) -> str:
        scopes = value.split()
        if "openid" not in scopes:
            raise ValueError("must include openid")
        return " ".join(scopes)

    @model_validator(mode="after")
    def _oidc_client(self) -> Settings:
        if self.oidc_issuer is not None and not self.oidc_client_id:
            raise ValueError("oidc_issuer needs oidc_client_id (orgwarden's client id at the identity provider)")
        return self

    upstream: str = "https://api.anthropic.com"
    """Where /v1/messages goes: a base URL, or ``simulator`` for the built-in one."""

    upstream_api_key: SecretStr | None = None
    """The organization's real Anthropic API key. Without one (and no workspace key), the simulator
    answers instead, and start-up says so."""

    upstream_timeout_seconds: float = Field(default=600, gt=0)
    """How long to wait for the upstream to start answering, and between streamed chunks (504 after)."""

    upstream_connect_timeout_seconds: float = Field(default=10, gt=0)

    upstream_proxy: SecretStr | None = None
    """``http://[user:password@]host:port``: the HTTP proxy to reach the upstream through, overriding
    ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``; ``none`` for a direct connection whatever they say.
    The upstream only: webhooks follow the environment. A secret: its credentials become
    ``Proxy-Authorization`` and are never shown."""

    upstream_identity_header: str | None = None
    """Opt-in: a header name (e.g. ``x-orgwarden-user``) under which orgwarden tells the upstream who
    made each data-plane request, for a proxy behind orgwarden. Off by default. A client's own header
    of that name is always dropped, so its value is never the client's."""

    upstream_identity: Literal["email", "user_id"] = "email"
    """What ``upstream_identity_header`` carries for a user's access token: the user's email or their
    ``user_…`` id. An API key's requests carry the key's ``apikey_…`` id either way."""

    user_spend_alert_thresholds: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [75, 95, 100])
    """Percentages of a *user* spend limit at which a ``spend_limit.threshold_reached`` alert fires,
    for user limits created without their own ``alert_thresholds`` (comma list, e.g. ``75,95,100``)."""

    @field_validator("upstream_identity_header")
    @classmethod
    def _identity_header(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", name):
            raise ValueError(f"{value!r} is not an HTTP header name (letters, digits, hyphens; at most 64)")
        reserved = {"authorization", "x-api-key", "host", "content-length", "content-type", "transfer-encoding",
                    "connection", "anthropic-version", "anthropic-beta"}  # fmt: skip
        if name in reserved or name.startswith(("proxy-", "anthropic-ratelimit")):
            raise ValueError(f"{name!r} is a header the upstream request needs for itself: pick another name")
        return name

    @field_validator("user_spend_alert_thresholds", mode="before")
    @classmethod
    def _user_thresholds(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"{value!r}: give percentages separated by commas, e.g. 75,95,100") from None
        if isinstance(value, list):
            if (
                not value
                or any(not isinstance(v, int) or not 1 <= v <= 1000 for v in value)
                or len(set(value)) != len(value)
            ):
                raise ValueError("give distinct whole percentages from 1 to 1000, e.g. 75,95,100")
            return sorted(value)
        return value

    upstream_ca_bundle: Path | None = None
    """A PEM file of CA certificates trusted *besides* the system's for every outbound TLS connection
    (the upstream and the webhooks), e.g. a TLS-inspecting corporate proxy's CA."""

    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest data-plane request body (the Messages API's own limit is 32 MB); larger ones get 413."""

    max_file_bytes: int = Field(default=500 * 1024 * 1024, ge=1024)
    """Largest file upload (``POST /v1/files``, streamed to the upstream, never held whole): the Files
    API's own limit, 500 MB, by default; larger ones get 413 naming this setting."""

    secret_key: SecretStr | None = None
    """Encrypts stored upstream credentials. Required with PostgreSQL (every instance needs the same);
    with SQLite one is generated into ``<data_dir>/secret.key`` on first start."""

    models_file: Path | None = None
    """A JSON models/prices file replacing the shipped one (``orgwarden/data/models.json``)."""

    simulator_latency_ms: float = Field(default=0, ge=0, le=600_000)
    simulator_tokens_per_second: float = Field(default=0, ge=0)
    simulator_batch_seconds: float = Field(default=2, ge=0, le=86_400)
    """Simulator: how long a message batch stays ``in_progress`` (header ``anthropic-simulator-batch-seconds``
    overrides it per batch)."""

    batch_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest Message Batches create body orgwarden reads (it is parsed to be checked and priced, so it is
    held in memory; the API itself takes up to 256 MB); larger ones get 413."""

    batch_poll_interval_seconds: float = Field(default=60, gt=0, le=86_400)
    """How often each instance asks the upstream about batches not metered yet, to meter those that ended."""
    simulator_fault: Literal["", "429", "500", "529", "timeout", "cut"] = ""
    """Make the simulator fail every request this way (the ``anthropic-simulator-fault`` header wins)."""
    simulator_reply: str | None = Field(default=None, max_length=100_000)
    """A canned text the simulator answers with (the ``anthropic-simulator-reply`` header wins)."""

    cache_poll_interval_ms: int = Field(default=200, ge=10, le=1000)
    """How often each worker checks for key and workspace changes made elsewhere."""

    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    """Serve HTTPS with this certificate chain and private key (PEM), e.g. behind a TLS-inspecting proxy."""

    max_header_bytes: int = Field(default=65_536, ge=1024, le=1_048_576)
    """Largest request line + headers of one request; larger ones are refused with 431."""

    max_headers: int = Field(default=100, ge=10, le=1000)
    """Most headers in one request; more are refused with 431."""

    header_timeout_seconds: float = Field(default=10, gt=0, le=600)
    """Longest time for a request's line and headers to arrive once begun (408 after)."""

    body_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    """Longest wait between two pieces of a request body being read (408 after)."""

    keepalive_timeout_seconds: float = Field(default=5, gt=0, le=3600)
    """An idle kept-alive connection is closed after this long."""

    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    """Open client connections per worker; past it a new connection gets 503 and is closed."""

    shutdown_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    """Longest graceful stop after SIGTERM: in-flight requests get until the deadline less a reserve
    (``min(5, timeout / 3)``) for writing usage; what cannot be written stays in the journal."""

    forwarded_allow_ips: str = Field(default_factory=lambda: os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))
    """Proxies whose X-Forwarded-For (and -Proto) is believed: addresses and networks, comma
    separated, or ``*``. The old ``FORWARDED_ALLOW_IPS`` variable is read when this is not set."""

    redis_url: str | None = None
    """``redis://host:6379/0``: rate-limit and spend counters shared by every worker and instance.
    Without it, counters live in the one server process (so ``workers`` must be 1)."""

    redis_timeout_seconds: float = Field(default=0.5, gt=0, le=60)
    """How long Redis may stay silent while it owes a reply (or take to connect) before it counts as
    unavailable and ``rate_limits_on_store_failure`` / ``spend_limits_on_store_failure`` apply."""

    rate_limits_on_store_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    """When Redis cannot be reached: let requests through unchecked by rate limits (logged and
    counted), or refuse them with 503."""

    spend_limits_on_store_failure: Literal["fail_open", "fail_closed"] = "fail_closed"
    """When Redis cannot be reached and a spend limit applies: refuse with 503 (default), or let the
    request through unchecked (logged and counted)."""

    rate_limit_request_burst_seconds: float = Field(default=1.0, gt=0, le=60)
    """How many seconds' worth of a requests-per-minute limit may arrive at once: 1 (default) makes
    60 RPM about one request a second, as Anthropic enforces it; 60 allows a whole minute's worth."""

    webhook_url: str | None = None
    """Where spend alerts are delivered (Standard Webhooks, signed with ``webhook_secret``)."""

    webhook_secret: SecretStr | None = None
    """The signing secret, ``whsec_`` + base64 (Standard Webhooks); required with ``webhook_url``."""

    tunnel_base_domain: str = "tunnels.orgwarden.local"
    """Every MCP tunnel gets the hostname ``<random label>.<tunnel_base_domain>``, never reused."""

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for entry in value.split(","):
            entry = entry.strip()
            if not entry or entry == "*":
                continue
            try:
                if "/" in entry:
                    ipaddress.ip_network(entry, strict=False)
                else:
                    ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address, a network (a.b.c.d/n) or *") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must start with postgresql:// or sqlite:///")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        if value != "simulator" and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// base URL or 'simulator'")
        return value.rstrip("/")

    @field_validator("upstream_ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        from orgwarden.gateway.egress import tls_context  # the same loading the upstream client does

        try:
            tls_context(value)
        except FileNotFoundError:
            raise ValueError("no such file") from None
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"must be a readable PEM file of CA certificates ({exc})") from None
        return value

    @model_validator(mode="after")
    def _egress(self) -> Settings:
        """A malformed proxy (the setting, or HTTPS_PROXY & co. in the environment) for the upstream
        or the webhooks stops start-up."""
        from orgwarden.gateway.egress import proxy_for

        if self.upstream != "simulator":
            setting = self.upstream_proxy.get_secret_value() if self.upstream_proxy else None
            proxy_for(self.upstream, setting, os.environ)  # ValueError names the variable, never its value
        if self.webhook_url is not None:
            try:
                proxy_for(self.webhook_url, None, os.environ, setting_name=None)
            except ValueError as exc:
                raise ValueError(f"{exc} (the proxy of the webhooks)") from None
        return self

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < 32 or secret.lower() in {"changethis", "changeme", "secret"}:
            raise ValueError("must be at least 32 random characters (e.g. `openssl rand -hex 32`)")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both or neither")
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                "workers > 1 needs redis_url: rate and spend limits are counted in one place, which is"
                " the server process without Redis (set ORGWARDEN_REDIS_URL, or run one worker)"
            )
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs webhook_secret (whsec_ + base64) to sign deliveries")
        return self

    @field_validator("tunnel_base_domain")
    @classmethod
    def _hostname(cls, value: str) -> str:
        host = value.strip().lower().rstrip(".")
        if len(host) > 200 or not all(_LABEL.fullmatch(label) for label in host.split(".")) or "." not in host:
            raise ValueError(
                "must be a DNS name of at least two labels (letters, digits, hyphens), e.g. tunnels.example.com"
            )
        return host

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value().removeprefix("whsec_")
        try:
            raw = base64.b64decode(secret, validate=True)
        except ValueError:
            raise ValueError("must be whsec_ followed by base64") from None
        if len(raw) < 24:
            raise ValueError("must hold at least 24 random bytes (whsec_ + base64)")
        return value

    @property
    def uses_simulator(self) -> bool:
        return self.upstream == "simulator" or self.upstream_api_key is None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL: ``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'orgwarden.sqlite3'}"
        scheme, rest = url.split(":", 1)
        base = scheme.split("+", 1)[0]
        if base in {"postgresql", "postgres"}:
            return f"postgresql+asyncpg:{rest}"
        return f"sqlite+aiosqlite:{rest}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    if not first["loc"]:  # a rule across settings: the message names them
        return f"invalid settings: {first['msg'].removeprefix('Value error, ')}"
    value = first.get("input")
    secret = name in {"secret_key", "upstream_api_key", "webhook_secret", "upstream_proxy", "oidc_client_secret"}
    shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
    return f"invalid setting ORGWARDEN_{name.upper()}: {first['msg']}{shown}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; raise ``ConfigError`` with one line naming the bad one."""
    values: dict[str, Any] = {}
    path = config_file or os.environ.get(CONFIG_ENV)
    if path:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(values) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
        # The file is the lowest-priority source: environment variables override it.
        for name in list(values):
            if f"ORGWARDEN_{name.upper()}" in os.environ:
                del values[name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
