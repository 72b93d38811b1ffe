"""A workspace's data residency applied to one Messages request: the geo it runs in, or a 400.

One rule for every place a Messages request enters (``/v1/messages``, each request of a Message
Batch): a geo outside the workspace's ``allowed_inference_geos`` is refused; ``null`` is refused
where the workspace requires a geo (it has an allow-list or a default other than ``global``); a
request that names none runs in the workspace's default, which the caller inserts when it is not
``global`` so that the upstream sees what was checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orgwarden.domain.workspaces import UNRESTRICTED
from orgwarden.gateway.refusal import Refusal
from orgwarden.services.credentials import KeyGrant


def resolve_geo(request: Mapping[str, Any], grant: KeyGrant, field: str = "inference_geo") -> tuple[str, bool]:
    """The request's geo, and whether the workspace's default must be inserted (it named none).
    ``field`` names the field in a refusal (``requests[3].params.inference_geo`` in a batch)."""
    allowed = grant.allowed_inference_geos
    default = grant.default_inference_geo
    geo = request.get("inference_geo")
    if geo is None:
        if "inference_geo" in request and (allowed != UNRESTRICTED or default != "global"):
            raise Refusal(
                400,
                "invalid_request_error",
                f"{field}: null is not allowed in workspace {grant.workspace_id}, which requires an inference"
                f" geo (allowed: {allowed}); name one, or leave the field out for the workspace's default"
                f" ({default!r})",
            )
        return default, default != "global"
    if not isinstance(geo, str):
        raise Refusal(400, "invalid_request_error", f"{field}: must be a string")
    if allowed != UNRESTRICTED and geo not in allowed:
        raise Refusal(
            400,
            "invalid_request_error",
            f"{field}: {geo!r} is not allowed in workspace {grant.workspace_id} (allowed: {allowed})",
        )
    return geo, False
