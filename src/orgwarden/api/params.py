"""Reading query strings and JSON bodies with messages that name the problem.

Arrays arrive as ``name[]=a&name[]=b`` (the SDK) or ``name=a&name=b`` (by hand): both are read.
Bodies are parsed straight from bytes by pydantic models that forbid unknown fields.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from orgwarden.errors import InvalidRequest
from orgwarden.storage.pagination import Cursor

M = TypeVar("M", bound=BaseModel)

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class QueryParams:
    def __init__(self, request: Request) -> None:
        self._params = request.query_params

    def string(self, name: str) -> str | None:
        values = self._params.getlist(name)
        if len(values) > 1:
            raise InvalidRequest(f"{name}: given {len(values)} times; give it once")
        return values[0] if values else None

    def strings(self, name: str, *, allow_empty: bool = False) -> list[str]:
        """Every value of an array parameter; an empty one is refused unless it means something
        (``api_key_ids[]=``: usage no API key authenticated)."""
        values = [*self._params.getlist(name), *self._params.getlist(f"{name}[]")]
        for value in values:
            if value == "" and not allow_empty:
                raise InvalidRequest(f"{name}: empty value")
        return values

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.string(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidRequest(f"{name}: {value!r} is not a boolean (true or false)")

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self.string(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise InvalidRequest(f"{name}: {value!r} is not an integer") from None
        if not low <= number <= high:
            raise InvalidRequest(f"{name}: must be between {low} and {high}, got {number}")
        return number

    def cursor(self) -> Cursor:
        after_id, before_id = self.string("after_id"), self.string("before_id")
        if after_id is not None and before_id is not None:
            raise InvalidRequest("after_id and before_id cannot both be given")
        return Cursor(after_id=after_id, before_id=before_id, limit=self.integer("limit", default=20, low=1, high=1000))


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    if kind == "missing":
        return f"{where}: field required"
    if kind == "json_invalid" and "recursion limit" in str(error["ctx"].get("error", "")):
        return "request body is nested too deeply to parse (the Admin API's JSON parser stops at about 200 levels)"
    if kind == "json_invalid":
        return f"request body is not valid JSON: {error['ctx'].get('error', '')}".rstrip(": ")
    if kind in ("model_type", "model_attributes_type", "dict_type") and not where:
        return "request body must be a JSON object"
    return f"{where}: {error['msg']}" if where else error["msg"]


def has_nul(value: object) -> bool:
    """Whether a string anywhere in ``value`` holds a NUL character, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("request body is required: send a JSON object")
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc.errors()[0])) from None
    except (UnicodeDecodeError, json.JSONDecodeError):  # pragma: no cover - pydantic reports these itself
        raise InvalidRequest("request body is not valid UTF-8 JSON") from None
    for name, value in body.model_dump().items():
        if has_nul(value):
            raise InvalidRequest(f"{name}: must not contain NUL (\\u0000) characters")
    return body


async def parse_optional_body(request: Request, model: type[M]) -> M:
    """Like ``parse_body``, but an empty body means an empty object (e.g. ``POST .../archive``)."""
    raw = await request.body()
    if not raw.strip():
        return model.model_validate({})
    return await parse_body(request, model)
