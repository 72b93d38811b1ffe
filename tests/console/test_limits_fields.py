"""The console's form translations (``console.settings_fields``): what a browser sends, as the
services' arguments. Pure functions, no server."""

from __future__ import annotations

import pytest

from orgwarden.console import settings_fields as fields
from orgwarden.errors import InvalidRequest
from orgwarden.services.rate_limits import LimitChange


@pytest.mark.parametrize(
    ("typed", "cents"),
    [("500", "50000"), ("499.95", "49995"), ("$12.5", "1250"), ("1,234.05", "123405"), ("0", "0"), (" 7 ", "700")],
)
def test_dollars_become_whole_cents(typed: str, cents: str) -> None:
    assert fields.cents({"amount": typed}) == cents


@pytest.mark.parametrize("typed", ["", "12.345", "-5", "5e3", "ten", "1.2.3", "12345678901234"])
def test_amounts_that_are_not_dollars_are_refused_naming_the_field(typed: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^amount: "):
        fields.cents({"amount": typed})


def test_thresholds_are_optional_percentages() -> None:
    assert fields.thresholds({}) is None
    assert fields.thresholds({"alert_thresholds": "50, 80%,100"}) == [50, 80, 100]
    with pytest.raises(InvalidRequest, match="'half' is not a whole percentage"):
        fields.thresholds({"alert_thresholds": "50, half"})


def test_every_limiter_is_set_or_cleared() -> None:
    changes = fields.rate_changes({"requests_per_minute": "1,000", "output_tokens_per_minute": "80_000"})
    assert changes == [
        LimitChange("requests_per_minute", 1000),
        LimitChange("input_tokens_per_minute", None),
        LimitChange("input_tokens_per_minute_cache_aware", None),
        LimitChange("output_tokens_per_minute", 80000),
    ]
    with pytest.raises(InvalidRequest, match=r"^input_tokens_per_minute: '-1' is not a whole number"):
        fields.rate_changes({"input_tokens_per_minute": "-1"})


def test_tags_are_lines_and_an_update_deletes_the_missing_ones() -> None:
    wanted = fields.tags({"tags": "team = ml\n\ncost=a=b\n"})
    assert wanted == {"team": "ml", "cost": "a=b"}
    assert fields.tag_patch({"team": "ml", "old": "x", "cost": "c"}, wanted) == {"old": None, "cost": "a=b"}
    assert fields.tags_text(wanted) == "team=ml\ncost=a=b"
    with pytest.raises(InvalidRequest, match="is given more than once"):
        fields.tags({"tags": "a=1\na=2"})
    with pytest.raises(InvalidRequest, match="at most 50 tags, got 60"):
        fields.tags({"tags": "\n".join(f"k{i}=v" for i in range(60))})


def test_residency_sends_lists_or_unrestricted() -> None:
    assert fields.allowed_geos({}) == "unrestricted"
    assert fields.allowed_geos({"allowed": "listed", "geo_us": "on", "geo_global": "on"}) == ["us", "global"]
    assert fields.allowed_geos({"allowed": "listed"}) == []  # the service refuses it, naming the field
    with pytest.raises(InvalidRequest, match="neither 'unrestricted' nor 'listed'"):
        fields.allowed_geos({"allowed": "some"})
    update = fields.residency({"workspace_geo": "us", "default_inference_geo": "us"}, creating=False)
    assert update.workspace_geo is None  # immutable: never sent on an update
    assert fields.residency({"workspace_geo": "us"}, creating=True).workspace_geo == "us"
