"""The app factory: the one place where settings, storage, services, the gateway and routes meet.

One ASGI app serves both planes on one port. A thin dispatcher sends the data-plane paths (every
``/v1/...`` path orgwarden does not serve itself: ``gateway/endpoints.py``, which refuses the ones
the API does not have) straight to the gateway pipeline, a plain ASGI app, the OTLP paths
(``/v1/metrics``, ``/v1/logs``) to the Claude Code telemetry receiver, another, and everything else
to the FastAPI Admin API app; the request-id middleware wraps them all.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orgwarden import __version__
from orgwarden.api import errors
from orgwarden.api.health import Health
from orgwarden.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from orgwarden.api.routes import (
    analytics,
    api_keys,
    audit_logs,
    auth,
    cc_gateway,
    cc_policies,
    claude_code,
    invites,
    members,
    organization,
    rate_limits,
    rbac_groups,
    reports,
    spend_limits,
    tunnels,
    users,
    workspaces,
)
from orgwarden.api.scim_mount import ScimMount
from orgwarden.api.user_auth import UserTokenCache
from orgwarden.config import Settings, load_settings
from orgwarden.console import app as console
from orgwarden.crypto import SecretBox, resolve_secret
from orgwarden.data import load_catalog
from orgwarden.domain.catalog import Catalog
from orgwarden.gateway.alerts import SpendAlerts
from orgwarden.gateway.batches import BatchHandler
from orgwarden.gateway.endpoints import is_data_plane
from orgwarden.gateway.files import FileHandler
from orgwarden.gateway.forwarding import Forwarder
from orgwarden.gateway.identity import UpstreamIdentity
from orgwarden.gateway.journal import Journal, journal_dir
from orgwarden.gateway.keys import KeyCache
from orgwarden.gateway.limiter import Limiter as Store
from orgwarden.gateway.limiter import MemoryLimiter
from orgwarden.gateway.limits import Alerts, Enforcer, LimitSource
from orgwarden.gateway.model_access import ModelAccess
from orgwarden.gateway.pipeline import Gateway
from orgwarden.gateway.recorder import Recorder
from orgwarden.gateway.upstream import Upstreams
from orgwarden.gateway.webhooks import WebhookSender
from orgwarden.identity.oidc import OidcClient
from orgwarden.observability import logs
from orgwarden.observability.access import GatewayObserver
from orgwarden.observability.middleware import MetricsMiddleware
from orgwarden.observability.wiring import build_metrics, install_endpoint
from orgwarden.server.state import DirectHandler
from orgwarden.services.container import Services
from orgwarden.services.credentials import CredentialService
from orgwarden.services.user_access import UserTokenGrants
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.files import StoredFiles
from orgwarden.storage.uow import UnitOfWorkFactory
from orgwarden.telemetry.receiver import TelemetryReceiver, is_telemetry

log = logging.getLogger("orgwarden")


class Dispatcher:
    def __init__(self, admin: ASGIApp, gateway: Gateway, telemetry: ASGIApp) -> None:
        self.admin = admin
        self.gateway = gateway
        self.telemetry = telemetry

    def direct_handler(self) -> DirectHandler:
        """The data-plane requests orgwarden's server hands to the gateway without ASGI."""
        return DirectHandler(self.gateway.serve, _direct_route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_data_plane(scope["path"]):
            await self.gateway(scope, receive, send)
        elif scope["type"] == "http" and is_telemetry(scope["path"]):
            await self.telemetry(scope, receive, send)
        else:
            await self.admin(scope, receive, send)


def _direct_route(method: bytes, path: str) -> bool:
    """Served on the connection without ASGI: the data plane's GET, POST and DELETE (any other
    method, HEAD above all, goes through ASGI, whose server frames it; the gateway refuses it)."""
    return (method == b"POST" or method == b"GET" or method == b"DELETE") and is_data_plane(path)


def create_app(settings: Settings) -> Dispatcher:
    logs.configure(settings)  # whatever server runs the app: orgwarden's lines in settings.log_format
    engine = create_engine(settings)
    uow = UnitOfWorkFactory(session_factory(engine))
    catalog = load_catalog(settings.models_file)
    box = SecretBox(resolve_secret(settings))
    services = Services.build(uow, settings, box)
    token_grants = UserTokenGrants(uow, services.user_tokens, box)  # user access tokens on the data plane
    keys = KeyCache(CredentialService(uow, box, token_grants), settings.cache_poll_interval_ms / 1000)
    recorder = Recorder(uow, Journal(journal_dir(settings.data_dir, settings.sqlalchemy_url)))
    health = Health(engine, settings.redis_url)
    upstreams = Upstreams(settings, catalog)
    organization_id: list[str | None] = [None]
    webhooks = WebhookSender.from_settings(settings, os.environ)  # through the egress proxy, if any
    alerts = SpendAlerts(uow, webhooks, lambda: organization_id[0])
    limits = build_enforcer(settings, session_factory(engine), catalog, alerts)
    keys.listeners.append(lambda entity_type, _entity_id: limits.changed(entity_type))
    admin_tokens = UserTokenCache(services.user_tokens.resolve)  # the Admin API's, invalidated by the same poll
    keys.listeners.append(admin_tokens.invalidate)
    keys.listeners.append(services.cc_policies.invalidate)  # Claude Code policies, for every credential
    metrics = build_metrics(settings, recorder=recorder, limits=limits, health=health)
    gateway = Gateway(
        keys=keys,
        upstreams=upstreams,
        recorder=recorder,
        catalog=catalog,
        max_body=settings.max_request_bytes,
        organization_id=lambda: organization_id[0],
        limits=limits,
        observer=GatewayObserver(metrics),
        identity=UpstreamIdentity(settings.upstream_identity_header, settings.upstream_identity)
        if settings.upstream_identity_header
        else None,
    )
    gateway.files = FileHandler(gateway, StoredFiles(session_factory(engine)), settings.max_file_bytes)
    gateway.forwarding = Forwarder(gateway)
    gateway.model_access = ModelAccess(services.cc_policies, catalog)
    batches = BatchHandler(
        gateway,
        session_factory(engine),
        box,
        max_body=settings.batch_max_body_bytes,
        poll_interval=settings.batch_poll_interval_seconds,
        public_url=settings.public_url,
        https=settings.tls_certfile is not None,
    )
    gateway.batches = batches

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        org = await services.organizations.current()
        organization_id[0] = org.id if org else None
        await keys.start()
        if webhooks is not None:
            await webhooks.start()
        await alerts.start()
        await limits.start()
        await recorder.start()
        await batches.start()
        if metrics is not None:
            await metrics.start()
        # What start-up built lives as long as the process: take it out of the cyclic collector's
        # view, so that a full collection (every few hundred thousand allocations: every 4th or 5th
        # large report) scans only what requests made, not ~140,000 start-up objects. Measured in
        # bench/RESULTS.md: the reports' periodic 100 ms pauses went away.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # Bounded whatever the database or Redis do: the recorder gets the reserve the server
            # keeps for shutdown (what it cannot write stays in the journal), the rest a second each.
            await _bounded(batches.stop(), 1.0, "message batches")
            await recorder.stop(min(5.0, settings.shutdown_timeout_seconds / 3))
            await keys.stop(timeout=1.0)
            await _bounded(limits.stop(), 1.0, "limits")
            await _bounded(alerts.stop(), 1.0, "spend alerts")  # before the sender: its last alerts go to it
            if webhooks is not None:
                await _bounded(webhooks.stop(), 2.0, "webhooks")
            await _bounded(upstreams.aclose(), 1.0, "upstream connections")
            await _bounded(health.aclose(), 1.0, "health checks")
            await _bounded(engine.dispose(), 2.0, "database connections")
            if metrics is not None:
                await _bounded(metrics.stop(), 1.0, "metrics")

    admin = FastAPI(
        title="orgwarden",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    admin.state.settings = settings
    admin.state.services = services
    admin.state.tenant_guard = gateway.tenant  # the Admin API applies the data plane's tenant restriction
    admin.state.user_tokens = admin_tokens
    admin.state.audit_sink = lambda event: recorder.put("audit", event)  # authorization refusals

    for module in (
        organization,
        invites,
        users,
        workspaces,
        members,
        api_keys,
        rate_limits,
        spend_limits,
        reports,
        analytics,
        claude_code,
        audit_logs,
        tunnels,
        rbac_groups,
        cc_policies,
    ):
        admin.include_router(module.routes.router)
    admin.include_router(invites.public)
    admin.include_router(auth.router)
    admin.include_router(cc_gateway.router)  # Claude Code's gateway sign-in: /managed/settings
    admin.include_router(console.router)  # the web console, /console (its own error pages)
    admin.state.box = box  # seals the sign-in's state cookie
    admin.state.oidc = build_oidc(settings)
    if settings.oidc_recheck_on_refresh:  # every refresh of a device sign-in asks the IdP first
        services.user_tokens.idp = admin.state.oidc

    @admin.get("/health", include_in_schema=False)
    async def health_route() -> Response:
        # For people and monitors: always 200 while the process runs; "degraded" names what does not
        # answer. Per worker: which store counts limits, and how many requests passed unchecked
        # because it was unreachable (rate or spend limits set to fail_open) since this worker started.
        down = await health.check()
        store = "redis" if settings.redis_url else "memory"
        dependencies = {"database": "down" if "database" in down else "up"}
        if settings.redis_url is not None:
            dependencies["redis"] = "down" if "redis" in down else "up"
        return JSONResponse(
            {
                "status": "degraded" if down else "ok",
                "dependencies": dependencies,
                "limits": {"store": store, "unchecked_requests": limits.unchecked},
            }
        )

    @admin.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        # For load balancers: 503 while the database (or Redis, when configured) does not answer.
        down = await health.check()
        if down:
            return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
        return JSONResponse({"status": "ready"})

    if metrics is not None:
        install_endpoint(admin, metrics, health)
    errors.install(admin)
    admin.add_middleware(BodyLimitMiddleware, limit=settings.admin_max_body_bytes)
    telemetry: ASGIApp = TelemetryReceiver(
        keys=keys, claude_code=services.claude_code, max_body=settings.max_request_bytes, tenant=gateway.tenant
    )
    admin_app: ASGIApp = admin
    if metrics is not None:
        admin_app = MetricsMiddleware(admin, metrics, "admin")
        telemetry = MetricsMiddleware(telemetry, metrics, "telemetry", lambda scope: scope["path"])

    def scim_app() -> ASGIApp:  # on the first /scim/v2 request (scim_mount: slow to import)
        from orgwarden.api import scim
        from orgwarden.services.scim import ScimService

        return scim.build(services.scim_tokens, ScimService(uow, services.users))

    admin_app = ScimMount(scim_app, admin_app)  # /scim/v2 answers SCIM's own errors
    # The gateway gives its requests their ids itself (one wrapper less on the hot path).
    return Dispatcher(RequestIdMiddleware(admin_app), gateway, RequestIdMiddleware(telemetry))


def build_enforcer(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], catalog: Catalog, alerts: Alerts | None = None
) -> Enforcer:
    """Limits counted in this process, or in Redis when ``redis_url`` is set (every instance)."""
    source = LimitSource(sessions)
    store: Store
    if settings.redis_url is not None:
        from orgwarden.gateway.redis_limiter import RedisLimiter

        store = RedisLimiter(settings.redis_url, source.baseline, timeout_seconds=settings.redis_timeout_seconds)
    else:
        store = MemoryLimiter(source.baseline)
    return Enforcer(
        store=store,
        source=source,
        catalog=catalog,
        request_burst_seconds=settings.rate_limit_request_burst_seconds,
        rate_fail_open=settings.rate_limits_on_store_failure == "fail_open",
        spend_fail_open=settings.spend_limits_on_store_failure == "fail_open",
        alerts=alerts,
    )


def build_oidc(settings: Settings) -> OidcClient | None:
    """The OpenID Connect relying party, when ``oidc_issuer`` is set (sign-in is off otherwise)."""
    if settings.oidc_issuer is None or settings.oidc_client_id is None:
        return None
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
    return OidcClient(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=secret,
        scopes=settings.oidc_scopes,
        groups_claim=settings.oidc_groups_claim,
        offline_access=settings.oidc_recheck_on_refresh,
    )


async def _bounded(work: Awaitable[None], seconds: float, what: str) -> None:
    """Await ``work`` for at most ``seconds`` (a dependency that hangs must not hold up shutdown)."""
    try:
        await asyncio.wait_for(work, seconds)
    except TimeoutError:
        log.warning("shutdown: %s did not close within %.0f s; left behind", what, seconds)
    except Exception as exc:  # shutting down anyway: say so, without a traceback
        log.warning("shutdown: closing %s failed (%s)", what, type(exc).__name__)


def app_from_environment() -> Dispatcher:
    """Entry point for ``serve --workers N``'s worker processes: settings come from ORGWARDEN_* and
    ORGWARDEN_CONFIG."""
    return create_app(load_settings())
