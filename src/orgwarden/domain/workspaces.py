"""Workspace rules: tags, data residency, display colours. Pure validation, no I/O.

Each check raises ``ValueError`` with a message that names the offending field; the service turns it
into a 400.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

UNRESTRICTED: Final = "unrestricted"
KNOWN_INFERENCE_GEOS: Final = ("global", "us")
KNOWN_WORKSPACE_GEOS: Final = ("us",)
DEFAULT_WORKSPACE_GEO: Final = "us"
DEFAULT_INFERENCE_GEO: Final = "global"

MAX_TAGS: Final = 50
MAX_TAG_KEY: Final = 64
MAX_TAG_VALUE: Final = 256
MAX_NAME: Final = 255

# The Console's palette; a new workspace gets one at random unless it names its own.
PALETTE: Final = ("#6C5BB9", "#3C7CDB", "#2E9E6E", "#D97F35", "#C9466C", "#8A6D3B", "#4F8A9E", "#7E57C2")
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")

AllowedGeos = list[str] | str


def random_color() -> str:
    return secrets.choice(PALETTE)


def check_name(name: str, field: str = "name") -> str:
    stripped = name.strip()
    if not stripped:
        raise ValueError(f"{field}: must not be empty")
    if len(stripped) > MAX_NAME:
        raise ValueError(f"{field}: must be at most {MAX_NAME} characters")
    return stripped


def check_color(color: str) -> str:
    if not _COLOR.fullmatch(color):  # not match(): '$' would also accept a trailing newline
        raise ValueError(f"display_color: {color!r} is not a hex colour like '#6C5BB9'")
    return color.upper()


def check_tag_key(key: str) -> None:
    if not key:
        raise ValueError("tags: keys must not be empty")
    if key.lower().startswith("anthropic"):
        raise ValueError(f"tags: key {key!r} may not begin with 'anthropic'")
    if len(key) > MAX_TAG_KEY:
        raise ValueError(f"tags: key {key[:20]!r}... is longer than {MAX_TAG_KEY} characters")


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        check_tag_key(key)
        if len(value) > MAX_TAG_VALUE:
            raise ValueError(f"tags: the value of {key!r} is longer than {MAX_TAG_VALUE} characters")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"tags: at most {MAX_TAGS} tags, got {len(tags)}")
    return dict(tags)


def merge_tags(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """Apply an update: a key set to a string is set, a key set to null is deleted."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            check_tag_key(key)
            merged[key] = value
    return check_tags(merged)


def check_allowed_geos(value: Sequence[str] | str) -> AllowedGeos:
    if isinstance(value, str):
        if value != UNRESTRICTED:
            raise ValueError(
                f"data_residency.allowed_inference_geos: {value!r} is neither 'unrestricted' nor a list of geos"
            )
        return UNRESTRICTED
    if not value:
        raise ValueError("data_residency.allowed_inference_geos: must list at least one geo, or be 'unrestricted'")
    for geo in value:
        check_inference_geo(geo, "data_residency.allowed_inference_geos")
    if len(set(value)) != len(value):
        raise ValueError("data_residency.allowed_inference_geos: lists a geo more than once")
    return list(value)


def check_inference_geo(geo: str, field: str = "data_residency.default_inference_geo") -> str:
    if geo not in KNOWN_INFERENCE_GEOS:
        known = ", ".join(repr(g) for g in KNOWN_INFERENCE_GEOS)
        raise ValueError(f"{field}: unknown inference geo {geo!r} (known: {known})")
    return geo


def check_workspace_geo(geo: str) -> str:
    if geo not in KNOWN_WORKSPACE_GEOS:
        known = ", ".join(repr(g) for g in KNOWN_WORKSPACE_GEOS)
        raise ValueError(f"data_residency.workspace_geo: unknown workspace geo {geo!r} (known: {known})")
    return geo


def check_default_in_allowed(default: str, allowed: AllowedGeos) -> None:
    """The default inference geo must be allowed, unless every geo is."""
    if allowed != UNRESTRICTED and default not in allowed:
        raise ValueError(
            f"data_residency.default_inference_geo: {default!r} is not in allowed_inference_geos {allowed!r}"
        )
