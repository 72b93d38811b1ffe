"""The simulator's JSON Schema work: a minimal valid instance of a tool's ``input_schema``, and a small
checker, so a simulated ``tool_use`` input always validates against the schema it answers.

``instance`` builds the smallest value the schema admits: ``const``, else the first ``enum`` value,
else ``default``, else by type (``""`` padded to ``minLength``, the lowest number the bounds and
``multipleOf`` allow, ``minItems`` items, the ``required`` properties of an object), following
``$ref`` to ``#/$defs/...`` or ``#/definitions/...`` and taking the first branch of ``anyOf`` /
``oneOf`` (``allOf`` branches are merged). ``problems`` checks the same keywords (and
``additionalProperties: false``, ``maxLength``, ``maxItems``, ``maximum``) and says what is wrong.
Neither reads ``pattern`` or ``format`` beyond a few well-known formats: a schema that needs more is
answered with the simplest instance the rest of it allows. Recursion is bounded (``MAX_DEPTH``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 16
MAX_STEPS = 20_000  # schema nodes visited by one top-level call: wide anyOf trees cannot blow up
MAX_STRING = 4096  # the longest minLength honoured
MAX_ITEMS = 64  # the most minItems honoured
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class _Exhausted(Exception):
    """The step budget of one top-level call ran out."""


def _step(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _Exhausted


def _resolve(schema: Any, root: Mapping[str, Any], depth: int, budget: list[int]) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` followed (and ``allOf`` merged); ``{}`` for anything unusable."""
    _step(budget)
    if depth > MAX_DEPTH or not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {**_resolve(target, root, depth + 1, budget), **rest}
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            branch = _resolve(part, root, depth + 1, budget)
            required = [*_list(merged.get("required")), *_list(branch.get("required"))]
            properties = {**_dict(branch.get("properties")), **_dict(merged.get("properties"))}
            merged = {**branch, **merged, "required": required, "properties": properties}
        return merged
    return schema


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _type_of(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        return next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _number(schema: Mapping[str, Any], integer: bool) -> int | float:
    low: float = -math.inf
    for key, strict in (("minimum", False), ("exclusiveMinimum", True)):
        bound = schema.get(key)
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            continue
        candidate = (math.floor(bound) + 1 if integer else bound + 1) if strict else bound
        low = max(low, candidate)
    value: float = 0 if low == -math.inf else low
    if integer:
        value = math.ceil(value)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = math.ceil(value / step) * step
    return int(value) if integer or float(value).is_integer() else value


def instance(schema: Any) -> Any:
    """The minimal value ``schema`` admits (see the module docstring); ``{}`` for a schema too big to
    work through."""
    try:
        return _instance(schema, schema if isinstance(schema, dict) else {}, 0, [MAX_STEPS])
    except (_Exhausted, OverflowError, ValueError):
        return {}


def problems(schema: Any, value: Any) -> list[str]:
    """What makes ``value`` invalid against ``schema`` (empty when it validates)."""
    try:
        return _problems(schema, value, schema if isinstance(schema, dict) else {}, 0, [MAX_STEPS])
    except (_Exhausted, OverflowError, ValueError):
        return ["the schema is too complex to check"]


def _instance(schema: Any, root: Mapping[str, Any], depth: int, budget: list[int]) -> Any:
    _step(budget)
    node = _resolve(schema, root, depth, budget)
    if depth > MAX_DEPTH:
        return None
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    if "default" in node and not _problems(node, node["default"], root, depth, budget):
        return node["default"]
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            return _instance(branches[0], root, depth + 1, budget)
    kind = _type_of(node)
    if kind == "string":
        fmt = _FORMATS.get(str(node.get("format")))
        if fmt is not None:
            return fmt
        length = node.get("minLength")
        return "x" * min(length, MAX_STRING) if isinstance(length, int) and length > 0 else ""
    if kind in ("integer", "number"):
        return _number(node, kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "array":
        count = node.get("minItems")
        count = min(count, MAX_ITEMS) if isinstance(count, int) and count > 0 else 0
        prefix = node.get("prefixItems")
        items = list(prefix) if isinstance(prefix, list) else []
        while len(items) < count:
            items.append(node.get("items", {}))
        return [_instance(item, root, depth + 1, budget) for item in items]
    if kind == "object":
        properties = node.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = node.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: _instance(properties.get(name, {}), root, depth + 1, budget) for name in names}
    return {}


def _problems(schema: Any, value: Any, root: Mapping[str, Any], depth: int, budget: list[int]) -> list[str]:
    _step(budget)
    node = _resolve(schema, root, depth, budget)
    if depth > MAX_DEPTH:
        return ["nested too deeply"]
    if "const" in node and value != node["const"]:
        return [f"{value!r} is not {node['const']!r}"]
    if isinstance(node.get("enum"), list) and value not in node["enum"]:
        return [f"{value!r} is not one of {node['enum']!r}"]
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if (
            isinstance(branches, list)
            and branches
            and all(_problems(b, value, root, depth + 1, budget) for b in branches)
        ):
            return [f"{value!r} matches none of {key}"]
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
    if kinds is not None and not any(_is(kind, value) for kind in kinds):
        return [f"{value!r} is not of type {'/'.join(map(str, kinds))}"]
    if isinstance(value, str):
        return _string_problems(node, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_problems(node, value)
    if isinstance(value, list):
        return _array_problems(node, value, root, depth, budget)
    if isinstance(value, dict):
        return _object_problems(node, value, root, depth, budget)
    return []


def _is(kind: Any, value: Any) -> bool:
    if kind == "null":
        return value is None
    if isinstance(value, bool) and kind != "boolean":
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(str(kind), ()))


def _string_problems(node: Mapping[str, Any], value: str) -> list[str]:
    low, high = node.get("minLength"), node.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        return [f"{value!r} is shorter than {low}"]
    if isinstance(high, int) and len(value) > high:
        return [f"{value!r} is longer than {high}"]
    return []


def _number_problems(node: Mapping[str, Any], value: float) -> list[str]:
    for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = node.get(key)
        if not isinstance(bound, int | float) or isinstance(bound, bool):
            continue
        low, strict = key.endswith("inimum"), key.startswith("exclusive")
        if (value < bound if low else value > bound) or (strict and value == bound):
            return [f"{value!r} breaks {key} {bound!r}"]
    step = node.get("multipleOf")
    if isinstance(step, int | float) and step > 0 and not float(value / step).is_integer():
        return [f"{value!r} is not a multiple of {step!r}"]
    return []


def _array_problems(
    node: Mapping[str, Any], value: list[Any], root: Mapping[str, Any], depth: int, budget: list[int]
) -> list[str]:
    low, high = node.get("minItems"), node.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        return [f"fewer than {low} items"]
    if isinstance(high, int) and len(value) > high:
        return [f"more than {high} items"]
    prefix = node.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    found: list[str] = []
    for index, item in enumerate(value):
        sub = prefix[index] if index < len(prefix) else node.get("items", {})
        found += [f"[{index}]: {p}" for p in _problems(sub, item, root, depth + 1, budget)]
    return found


def _object_problems(
    node: Mapping[str, Any], value: dict[str, Any], root: Mapping[str, Any], depth: int, budget: list[int]
) -> list[str]:
    properties = node.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = node.get("required")
    found = [f"{name}: required" for name in _list(required) if isinstance(name, str) and name not in value]
    extra = node.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            found += [f"{name}: {p}" for p in _problems(properties[name], item, root, depth + 1, budget)]
        elif extra is False:
            found.append(f"{name}: not allowed")
        elif isinstance(extra, dict):
            found += [f"{name}: {p}" for p in _problems(extra, item, root, depth + 1, budget)]
    return found


def fill(schema: Any, given: Mapping[str, Any]) -> Any:
    """The minimal instance of ``schema`` with each of ``given``'s properties laid over it, one at a
    time, kept only when the result still validates: what a directive's arguments become."""
    value = instance(schema)
    if not isinstance(value, dict):
        return value
    for name, item in given.items():
        candidate = {**value, name: item}
        if not problems(schema, candidate):
            value = candidate
    return value
