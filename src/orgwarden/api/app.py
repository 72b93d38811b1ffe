"""The app factory: the one place where settings, storage, services and routes are wired together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from orgwarden import __version__
from orgwarden.api import errors
from orgwarden.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from orgwarden.api.routes import api_keys, invites, members, organization, users, workspaces
from orgwarden.config import Settings, load_settings
from orgwarden.services.container import Services
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWorkFactory


def create_app(settings: Settings) -> FastAPI:
    engine = create_engine(settings)
    uow = UnitOfWorkFactory(session_factory(engine))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(
        title="orgwarden",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.services = Services.build(uow, settings)

    for module in (organization, invites, users, workspaces, members, api_keys):
        app.include_router(module.routes.router)
    app.include_router(invites.public)

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.admin_max_body_bytes)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response, errors included, gets an id
    return app


def app_from_environment() -> FastAPI:
    """Entry point for uvicorn's workers: settings come from ORGWARDEN_* and ORGWARDEN_CONFIG."""
    return create_app(load_settings())
