"""Console form fields → the arguments of the workspace and limit services. Pure, no I/O.

HTML forms send strings; the Admin API's JSON carries lists, nulls and integers. These functions
translate one into the other and refuse (``InvalidRequest``, so the form re-renders with a 400 and
the message) what cannot be translated. Everything the value *means* (a known geo, a limit in
range, a tag key not starting with "anthropic") is left to the services, so that the console, the
Admin API and the CLI refuse the same things with the same messages.

A form never repeats a field (``console.pages`` refuses that), so multi-choice inputs use one
checkbox name per choice: ``geo_<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from orgwarden.domain import workspaces as ws_rules
from orgwarden.domain.limits import LIMITER_TYPES
from orgwarden.errors import InvalidRequest
from orgwarden.services.rate_limits import LimitChange
from orgwarden.services.workspaces import Residency

_DOLLARS = re.compile(r"\$?\s*([0-9]{1,13})(?:\.([0-9]{1,2}))?")
_INTEGER = re.compile(r"[0-9]{1,16}")
MAX_TAG_LINES = ws_rules.MAX_TAGS + 1  # one more than allowed, so that the service names the excess


def text(form: Mapping[str, str], name: str) -> str:
    """A text field, stripped; a missing field reads as empty."""
    return form.get(name, "").strip()


def optional(form: Mapping[str, str], name: str) -> str | None:
    value = text(form, name)
    return value or None


def cents(form: Mapping[str, str], name: str = "amount") -> str:
    """A US-dollar amount ("500", "499.95", "$12.5") as the API's whole-cents decimal string."""
    raw = text(form, name).replace(",", "")
    if not raw:
        raise InvalidRequest(f"{name}: enter an amount in US dollars, e.g. 500 or 499.95")
    match = _DOLLARS.fullmatch(raw)
    if match is None:
        raise InvalidRequest(
            f"{name}: {raw[:40]!r} is not an amount in US dollars (digits, at most two decimals, e.g. 499.95)"
        )
    whole, fraction = match.group(1), (match.group(2) or "").ljust(2, "0")
    return str(int(whole) * 100 + int(fraction))


def thresholds(form: Mapping[str, str], name: str = "alert_thresholds") -> list[int] | None:
    """Comma-separated percentages; empty keeps the current ones (the defaults on a new limit)."""
    raw = text(form, name)
    if not raw:
        return None
    values = []
    for part in raw.replace(";", ",").split(","):
        item = part.strip().rstrip("%").strip()
        if not _INTEGER.fullmatch(item):
            raise InvalidRequest(f"{name}: {part.strip()[:20]!r} is not a whole percentage (e.g. 50, 80, 100)")
        values.append(int(item))
    return values


def rate_changes(form: Mapping[str, str]) -> list[LimitChange]:
    """One change per limiter type: a number sets it, an empty field clears it."""
    changes = []
    for kind in LIMITER_TYPES:
        raw = text(form, kind).replace(",", "").replace("_", "")
        if not raw:
            changes.append(LimitChange(kind, None))
        elif _INTEGER.fullmatch(raw):
            changes.append(LimitChange(kind, int(raw)))
        else:
            raise InvalidRequest(f"{kind}: {raw[:20]!r} is not a whole number (leave it empty to clear the limit)")
    return changes


def tags(form: Mapping[str, str], name: str = "tags") -> dict[str, str]:
    """``key=value`` lines; blank lines are skipped."""
    found: dict[str, str] = {}
    lines = [line.strip() for line in form.get(name, "").splitlines() if line.strip()]
    for number, line in enumerate(lines[:MAX_TAG_LINES], start=1):
        key, sep, value = line.partition("=")
        if not sep:
            raise InvalidRequest(f"tags: line {number} ({line[:40]!r}) is not of the form key=value")
        key = key.strip()
        if key in found:
            raise InvalidRequest(f"tags: key {key[:40]!r} is given more than once")
        found[key] = value.strip()
    if len(lines) > MAX_TAG_LINES:
        raise InvalidRequest(f"tags: at most {ws_rules.MAX_TAGS} tags, got {len(lines)}")
    return found


def tag_patch(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str | None]:
    """The update that turns ``current`` into ``wanted``: the service merges, null deletes."""
    patch: dict[str, str | None] = {key: None for key in current if key not in wanted}
    patch.update({key: value for key, value in wanted.items() if current.get(key) != value})
    return patch


def tags_text(values: Mapping[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in values.items())


def allowed_geos(form: Mapping[str, str]) -> list[str] | str:
    """``allowed=unrestricted`` or ``allowed=listed`` with one ``geo_<name>`` checkbox per geo."""
    mode = text(form, "allowed") or ws_rules.UNRESTRICTED
    if mode == ws_rules.UNRESTRICTED:
        return ws_rules.UNRESTRICTED
    if mode != "listed":
        raise InvalidRequest(
            f"data_residency.allowed_inference_geos: {mode[:40]!r} is neither 'unrestricted' nor 'listed'"
        )
    return [key.removeprefix("geo_") for key in form if key.startswith("geo_") and form[key]]


def residency(form: Mapping[str, str], *, creating: bool) -> Residency:
    """The residency part of a workspace form (the workspace geo only when creating: it is immutable)."""
    return Residency(
        workspace_geo=optional(form, "workspace_geo") if creating else None,
        allowed_inference_geos=allowed_geos(form),
        default_inference_geo=optional(form, "default_inference_geo"),
    )


def color(form: Mapping[str, str]) -> str | None:
    return optional(form, "display_color")
