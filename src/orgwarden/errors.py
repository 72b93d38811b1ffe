"""One error tree; each class carries its Anthropic error type and HTTP status.

    OrgwardenError
    ├── InvalidRequest        400 invalid_request_error
    ├── AuthenticationFailed  401 authentication_error
    ├── BillingError          402 billing_error
    ├── PermissionDenied      403 permission_error
    ├── NotFound              404 not_found_error
    ├── MethodNotAllowed      405 invalid_request_error
    ├── Conflict              409 conflict_error
    ├── RequestTooLarge       413 request_too_large
    ├── RateLimited           429 rate_limit_error
    ├── InternalError         500 api_error
    ├── StorageUnavailable    503 api_error
    ├── UpstreamTimeout       504 timeout_error
    └── Overloaded            529 overloaded_error

Services raise these and never HTTP exceptions; ``api.errors`` renders them into the Anthropic error
envelope in exactly one place. ``error_code`` is the machine-readable cause, sent as
``error.details.error_code`` (where the official SDK looks for it).
"""

from __future__ import annotations

from typing import ClassVar


class OrgwardenError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


class InvalidRequest(OrgwardenError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(OrgwardenError):
    status = 401
    error_type = "authentication_error"


class BillingError(OrgwardenError):
    status = 402
    error_type = "billing_error"


class PermissionDenied(OrgwardenError):
    status = 403
    error_type = "permission_error"


class NotFound(OrgwardenError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(OrgwardenError):
    status = 405
    error_type = "invalid_request_error"


class Conflict(OrgwardenError):
    status = 409
    error_type = "conflict_error"


class RequestTooLarge(OrgwardenError):
    status = 413
    error_type = "request_too_large"


class RateLimited(OrgwardenError):
    status = 429
    error_type = "rate_limit_error"


class InternalError(OrgwardenError):
    status = 500
    error_type = "api_error"


class StorageUnavailable(OrgwardenError):
    """The database cannot be reached or did not answer within its time-outs: worth retrying later
    (503, ``api_error`` type, like Anthropic's own transient server errors; the SDK retries 503s)."""

    status = 503
    error_type = "api_error"


class UpstreamTimeout(OrgwardenError):
    status = 504
    error_type = "timeout_error"


class Overloaded(OrgwardenError):
    status = 529
    error_type = "overloaded_error"


class ConfigError(Exception):
    """A setting is invalid; raised at start-up, printed as one line naming the setting."""
