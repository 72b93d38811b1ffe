"""Rendering every refusal as Anthropic's error envelope, in exactly one place.

    {"type": "error", "error": {"type": T, "message": M, "details": {"error_code": C}}, "request_id": "req_..."}

``details`` is present only when there is a machine-readable code. Unknown exceptions (bugs) are
answered by ``middleware.RequestIdMiddleware``: a 500 ``api_error`` with a generic message, the traceback
logged once with the request id, never sent to the client. A database that cannot be reached or
answers too late (``storage.failures.is_unavailable``) is no bug: 503 ``api_error`` "storage
unavailable: ..." with ``retry-after``, logged as one line.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from orgwarden.api.refusals import audit_denied
from orgwarden.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    OrgwardenError,
    PermissionDenied,
    StorageUnavailable,
)
from orgwarden.gateway.refusal import Refusal
from orgwarden.storage.failures import STORAGE_UNAVAILABLE, describe, is_unavailable

log = logging.getLogger("orgwarden.api")

RETRY_AFTER = "5"  # seconds, on a 503 storage unavailable


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def envelope(
    error_type: str, message: str, request_id: str, *, error_code: str | None = None, **extra: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message, **extra}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": request_id}


def error_response(exc: OrgwardenError, request_id: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = envelope(exc.error_type, exc.message, request_id, error_code=exc.error_code)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _orgwarden_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrgwardenError)
    if isinstance(exc, PermissionDenied):
        await audit_denied(request, exc.message)  # an authenticated actor's refusal is audited
    return error_response(exc, request_id_of(request))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return error_response(InvalidRequest(message), request_id_of(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error: OrgwardenError = NotFound(f"no such endpoint: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")
    else:
        error = InvalidRequest(str(exc.detail))
        error.status = exc.status_code  # type: ignore[misc]
    return error_response(error, request_id_of(request))


async def _refusal(request: Request, exc: Exception) -> Response:
    """A refusal written for every surface (the tenant restriction's): the data plane's envelope."""
    assert isinstance(exc, Refusal)
    error: dict[str, Any] = {"type": exc.kind, "message": exc.message, **exc.extra}
    if exc.code is not None:
        error["details"] = {"error_code": exc.code}
    body = {"type": "error", "error": error, "request_id": request_id_of(request)}
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in exc.headers}
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged once, with the request id, by middleware.RequestIdMiddleware (the exception goes on there).
    return error_response(InternalError("an internal error occurred; it has been logged"), request_id_of(request))


def storage_unavailable(request_id: str) -> JSONResponse:
    return error_response(StorageUnavailable(STORAGE_UNAVAILABLE), request_id, {"retry-after": RETRY_AFTER})


async def _storage_error(request: Request, exc: Exception) -> Response:
    """Database (and connection) errors: 503 when the database cannot be reached, else a bug (500)."""
    request_id = request_id_of(request)
    if is_unavailable(exc):
        path = request.url.path
        log.warning("storage unavailable in %s %s (%s): %s", request.method, path, request_id, describe(exc))
        return storage_unavailable(request_id)
    log.error("unhandled error in %s %s (%s)", request.method, request.url.path, request_id, exc_info=exc)
    return error_response(InternalError("an internal error occurred; it has been logged"), request_id)


def install(app: FastAPI) -> None:
    app.add_exception_handler(sqlalchemy.exc.SQLAlchemyError, _storage_error)
    app.add_exception_handler(OSError, _storage_error)
    app.add_exception_handler(TimeoutError, _storage_error)
    app.add_exception_handler(OrgwardenError, _orgwarden_error)
    app.add_exception_handler(Refusal, _refusal)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
