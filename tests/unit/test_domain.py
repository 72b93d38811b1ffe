"""Pure domain rules (workspaces, statuses, roles, policy, clock) and settings validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orgwarden.config import Settings, load_settings
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import parse_rfc3339, rfc3339
from orgwarden.domain.policy import Actor, Permission, allows
from orgwarden.domain.roles import (
    ADDABLE_WORKSPACE_ROLES,
    ASSIGNABLE_ORG_ROLES,
    ORG_ROLES,
    WORKSPACE_ROLES,
    effective_workspace_role,
    workspace_role_at_least,
)
from orgwarden.domain.statuses import api_key_status, invite_status
from orgwarden.errors import ConfigError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_orgwarden_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ORGWARDEN_* variables; these tests set exactly the ones they mean."""
    import os

    for name in list(os.environ):
        if name.startswith("ORGWARDEN_"):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------------------------------
# workspaces: names, tags, geos, colours


def test_a_name_is_stripped_and_must_be_1_to_255_characters() -> None:
    assert rules.check_name("  prod  ") == "prod"
    assert rules.check_name("n" * 255) == "n" * 255
    with pytest.raises(ValueError, match="name: must not be empty"):
        rules.check_name(" \t ")
    with pytest.raises(ValueError, match="name: must be at most 255 characters"):
        rules.check_name("n" * 256)
    with pytest.raises(ValueError, match=r"^org_name: "):
        rules.check_name("", "org_name")


@pytest.mark.parametrize("key", ["anthropic", "Anthropic", "ANTHROPIC_team", "anthropicx", "aNTHROPIC-cost"])
def test_a_tag_key_may_not_begin_with_anthropic_in_any_case(key: str) -> None:
    with pytest.raises(ValueError, match="may not begin with 'anthropic'"):
        rules.check_tag_key(key)
    with pytest.raises(ValueError, match=r"^tags: "):
        rules.check_tags({key: "v"})


@pytest.mark.parametrize("key", ["team", "not-anthropic", "x-anthropic", "anthro", "k" * 64])
def test_other_tag_keys_are_allowed(key: str) -> None:
    rules.check_tag_key(key)
    assert rules.check_tags({key: "v"}) == {key: "v"}


def test_tag_limits() -> None:
    with pytest.raises(ValueError, match="keys must not be empty"):
        rules.check_tag_key("")
    with pytest.raises(ValueError, match="longer than 64"):
        rules.check_tag_key("k" * 65)
    assert rules.check_tags({"k": "v" * 256}) == {"k": "v" * 256}
    with pytest.raises(ValueError, match="longer than 256"):
        rules.check_tags({"k": "v" * 257})
    assert len(rules.check_tags({f"k{i}": "v" for i in range(50)})) == 50
    with pytest.raises(ValueError, match="at most 50 tags, got 51"):
        rules.check_tags({f"k{i}": "v" for i in range(51)})


def test_check_tags_returns_a_copy() -> None:
    tags = {"a": "b"}
    checked = rules.check_tags(tags)
    checked["c"] = "d"
    assert tags == {"a": "b"}


def test_merging_tags_sets_overwrites_and_a_null_deletes() -> None:
    current = {"team": "ml", "env": "prod", "gone": "x"}
    merged = rules.merge_tags(current, {"env": "staging", "owner": "ada", "gone": None, "never-there": None})
    assert merged == {"team": "ml", "env": "staging", "owner": "ada"}
    assert current == {"team": "ml", "env": "prod", "gone": "x"}  # not modified in place
    assert rules.merge_tags(current, {}) == current


def test_merging_tags_checks_new_keys_and_the_total() -> None:
    with pytest.raises(ValueError, match="anthropic"):
        rules.merge_tags({}, {"Anthropic-x": "v"})
    full = {f"k{i}": "v" for i in range(50)}
    with pytest.raises(ValueError, match="at most 50"):
        rules.merge_tags(full, {"extra": "v"})
    assert len(rules.merge_tags(full, {"extra": "v", "k1": None})) == 50
    with pytest.raises(ValueError, match="longer than 256"):
        rules.merge_tags({}, {"k": "v" * 257})


def test_allowed_inference_geos_are_unrestricted_or_a_list_of_known_distinct_geos() -> None:
    assert rules.check_allowed_geos("unrestricted") == "unrestricted"
    assert rules.check_allowed_geos(["us", "global"]) == ["us", "global"]
    assert rules.check_allowed_geos(("us",)) == ["us"]
    with pytest.raises(ValueError, match="neither 'unrestricted' nor a list"):
        rules.check_allowed_geos("us")
    with pytest.raises(ValueError, match="must list at least one geo"):
        rules.check_allowed_geos([])
    with pytest.raises(ValueError, match=r"data_residency\.allowed_inference_geos: unknown inference geo 'eu'"):
        rules.check_allowed_geos(["us", "eu"])
    with pytest.raises(ValueError, match="more than once"):
        rules.check_allowed_geos(["us", "us"])


def test_inference_and_workspace_geos_must_be_known() -> None:
    for geo in rules.KNOWN_INFERENCE_GEOS:
        assert rules.check_inference_geo(geo) == geo
    with pytest.raises(ValueError, match=r"^data_residency\.default_inference_geo: unknown inference geo 'eu'"):
        rules.check_inference_geo("eu")
    assert rules.check_workspace_geo("us") == "us"
    with pytest.raises(ValueError, match=r"^data_residency\.workspace_geo: unknown workspace geo 'global'"):
        rules.check_workspace_geo("global")
    assert rules.DEFAULT_WORKSPACE_GEO in rules.KNOWN_WORKSPACE_GEOS
    assert rules.DEFAULT_INFERENCE_GEO in rules.KNOWN_INFERENCE_GEOS


def test_the_default_inference_geo_must_be_among_the_allowed_unless_unrestricted() -> None:
    rules.check_default_in_allowed("global", "unrestricted")
    rules.check_default_in_allowed("us", ["us"])
    with pytest.raises(ValueError, match=r"^data_residency\.default_inference_geo: 'global' is not in"):
        rules.check_default_in_allowed("global", ["us"])


@pytest.mark.parametrize(("color", "stored"), [("#6c5bb9", "#6C5BB9"), ("#000000", "#000000"), ("#AbCdEf", "#ABCDEF")])
def test_a_display_color_is_a_hex_colour_stored_upper_case(color: str, stored: str) -> None:
    assert rules.check_color(color) == stored


@pytest.mark.parametrize("color", ["red", "#fff", "#1234567", "123456", "#12345G", "", "#123456\n", " #123456"])
def test_other_display_colors_are_refused_naming_the_field(color: str) -> None:
    with pytest.raises(ValueError, match=r"^display_color: "):
        rules.check_color(color)


def test_a_random_color_comes_from_the_palette_and_passes_the_check() -> None:
    for _ in range(50):
        color = rules.random_color()
        assert color in rules.PALETTE
        assert rules.check_color(color) == color


# --------------------------------------------------------------------------------------------------
# statuses derived from the clock


def test_a_pending_invite_past_its_expiry_reads_expired() -> None:
    assert invite_status("pending", NOW + timedelta(seconds=1), NOW) == "pending"
    assert invite_status("pending", NOW, NOW) == "expired"  # expiry is inclusive
    assert invite_status("pending", NOW - timedelta(days=1), NOW) == "expired"


@pytest.mark.parametrize("stored", ["accepted", "deleted"])
def test_an_accepted_or_deleted_invite_keeps_its_status_after_expiry(stored: str) -> None:
    assert invite_status(stored, NOW - timedelta(days=30), NOW) == stored


def test_a_naive_expiry_is_read_as_utc() -> None:
    naive_past = (NOW - timedelta(minutes=1)).replace(tzinfo=None)
    naive_future = (NOW + timedelta(minutes=1)).replace(tzinfo=None)
    assert invite_status("pending", naive_past, NOW) == "expired"
    assert invite_status("pending", naive_future, NOW) == "pending"
    assert api_key_status("active", naive_past, NOW) == "expired"


@pytest.mark.parametrize("stored", ["active", "inactive"])
def test_an_active_or_inactive_key_past_its_expiry_reads_expired(stored: str) -> None:
    assert api_key_status(stored, NOW - timedelta(seconds=1), NOW) == "expired"
    assert api_key_status(stored, NOW, NOW) == "expired"
    assert api_key_status(stored, NOW + timedelta(seconds=1), NOW) == stored
    assert api_key_status(stored, None, NOW) == stored


def test_an_archived_key_stays_archived_after_expiry() -> None:
    assert api_key_status("archived", NOW - timedelta(days=1), NOW) == "archived"
    assert api_key_status("archived", None, NOW) == "archived"


# --------------------------------------------------------------------------------------------------
# roles and policy


@pytest.mark.parametrize("member_role", [None, *sorted(WORKSPACE_ROLES)])
def test_an_organization_admin_is_a_workspace_admin_everywhere(member_role: str | None) -> None:
    assert effective_workspace_role("admin", member_role) == "workspace_admin"


@pytest.mark.parametrize("org_role", sorted(ORG_ROLES - {"admin", "billing"}))
def test_everyone_else_has_exactly_their_membership_role(org_role: str) -> None:
    assert effective_workspace_role(org_role, None) is None
    for role in WORKSPACE_ROLES:
        assert effective_workspace_role(org_role, role) == role


def test_an_organization_billing_member_is_at_least_workspace_billing_everywhere() -> None:
    assert effective_workspace_role("billing", None) == "workspace_billing"
    for role in WORKSPACE_ROLES:
        assert effective_workspace_role("billing", role) == role


def test_workspace_roles_are_ranked() -> None:
    assert workspace_role_at_least("workspace_admin", "workspace_developer")
    assert workspace_role_at_least("workspace_developer", "workspace_developer")
    assert workspace_role_at_least("workspace_developer", "workspace_restricted_developer")
    assert not workspace_role_at_least("workspace_user", "workspace_developer")
    assert not workspace_role_at_least("workspace_billing", "workspace_user")
    assert not workspace_role_at_least(None, "workspace_billing")


def test_admin_and_workspace_billing_cannot_be_granted_directly() -> None:
    assert "admin" in ORG_ROLES
    assert "admin" not in ASSIGNABLE_ORG_ROLES
    assert ORG_ROLES - {"admin"} == ASSIGNABLE_ORG_ROLES
    assert WORKSPACE_ROLES - {"workspace_billing"} == ADDABLE_WORKSPACE_ROLES


@pytest.mark.parametrize("permission", list(Permission))
def test_only_admin_keys_the_cli_and_the_system_may_use_the_admin_api(permission: Permission) -> None:
    for kind in ("admin_api_key", "cli", "system"):
        assert allows(Actor(kind, "a", "org"), permission)  # type: ignore[arg-type]
    for kind in ("api_key", "invite_token"):
        assert not allows(Actor(kind, "a", "org"), permission)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# clock


def test_timestamps_are_rfc3339_with_microseconds_and_z() -> None:
    assert rfc3339(datetime(2024, 10, 30, 23, 58, 27, 427722, tzinfo=UTC)) == "2024-10-30T23:58:27.427722Z"
    assert rfc3339(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00.000000Z"
    plus_two = datetime.fromisoformat("2024-01-01T02:00:00+02:00")
    assert rfc3339(plus_two) == "2024-01-01T00:00:00.000000Z"
    assert rfc3339(datetime(2024, 1, 1)) == "2024-01-01T00:00:00.000000Z"  # naive is UTC
    assert rfc3339(None) is None


def test_parsing_needs_an_offset_and_stays_in_range() -> None:
    assert parse_rfc3339("2024-10-30T23:58:27.427722Z") == datetime(2024, 10, 30, 23, 58, 27, 427722, tzinfo=UTC)
    assert parse_rfc3339("2024-01-01T02:00:00+02:00") == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="no time zone offset"):
        parse_rfc3339("2024-01-01T00:00:00")
    with pytest.raises(ValueError, match="out of range"):
        parse_rfc3339("9999-12-31T23:59:59-05:00")
    with pytest.raises(ValueError, match="Invalid isoformat string"):
        parse_rfc3339("yesterday")


# --------------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize(
    ("overrides", "setting", "shown"),
    [
        ({"port": "notaport"}, "ORGWARDEN_PORT", "'notaport'"),
        ({"port": 0}, "ORGWARDEN_PORT", "0"),
        ({"workers": 257}, "ORGWARDEN_WORKERS", "257"),
        ({"database_url": "mysql://x"}, "ORGWARDEN_DATABASE_URL", "'mysql://x'"),
        ({"log_level": "loud"}, "ORGWARDEN_LOG_LEVEL", "'loud'"),
        ({"public_url": "example.com"}, "ORGWARDEN_PUBLIC_URL", "'example.com'"),
        ({"admin_max_body_bytes": 10}, "ORGWARDEN_ADMIN_MAX_BODY_BYTES", "10"),
        ({"invite_ttl_days": 0}, "ORGWARDEN_INVITE_TTL_DAYS", "0"),
    ],
)
def test_a_bad_setting_raises_one_line_naming_it(overrides: dict[str, object], setting: str, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {setting}: ")
    assert message.endswith(f"(got {shown})")


def test_a_bad_environment_variable_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORGWARDEN_PORT", "http")
    with pytest.raises(ConfigError, match=r"^invalid setting ORGWARDEN_PORT: .*\(got 'http'\)$"):
        load_settings()


def test_settings_come_from_overrides_then_environment_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "orgwarden.toml"
    config.write_text('port = 7000\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    monkeypatch.setenv("ORGWARDEN_PORT", "7100")
    settings = load_settings(config, log_level="warning", workers=None)
    assert settings.host == "0.0.0.0"  # the file
    assert settings.port == 7100  # the environment beats the file
    assert settings.log_level == "warning"  # an override beats both
    assert settings.workers == 1  # None means "not given"
    monkeypatch.setenv("ORGWARDEN_CONFIG", str(config))
    monkeypatch.delenv("ORGWARDEN_PORT")
    assert load_settings().port == 7000  # ORGWARDEN_CONFIG names the file when no path is given


def test_a_bad_config_file_raises_one_line(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("port = 8000\nprot = 8001\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'prot'$"):
        load_settings(unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="is not valid TOML") as caught:
        load_settings(broken)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.toml")


def test_database_urls_map_to_the_async_drivers(tmp_path: Path) -> None:
    assert Settings(database_url="postgresql://u@h:5432/d").sqlalchemy_url == "postgresql+asyncpg://u@h:5432/d"
    assert Settings(database_url="postgres://u@h/d").sqlalchemy_url == "postgresql+asyncpg://u@h/d"
    assert not Settings(database_url="postgres://u@h/d").is_sqlite
    default = Settings(data_dir=tmp_path)
    assert default.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'orgwarden.sqlite3'}"
    assert default.is_sqlite
    assert Settings(public_url="https://ow.example.com/").public_url == "https://ow.example.com"


def test_the_defaults() -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers, settings.log_level) == ("127.0.0.1", 8080, 1, "info")
    assert settings.admin_max_body_bytes == 1_048_576
    assert settings.invite_ttl_days == 21
    assert settings.data_dir == Path.home() / ".orgwarden"
