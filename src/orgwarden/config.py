"""Settings, loaded and validated once at start-up, then passed in (never read as a global).

Sources, highest first: keyword arguments (the CLI's flags), ``ORGWARDEN_*`` environment variables,
a TOML file (``--config`` or ``ORGWARDEN_CONFIG``), defaults. A bad value raises ``ConfigError`` with
a one-line message naming the setting, and the CLI stops with it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orgwarden.errors import ConfigError

CONFIG_ENV = "ORGWARDEN_CONFIG"


def _default_data_dir() -> Path:
    return Path.home() / ".orgwarden"


class Settings(BaseSettings):
    """Every setting orgwarden reads. The README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="ORGWARDEN_", extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the embedded SQLite database lives (``<data_dir>/orgwarden.sqlite3``)."""

    database_url: str | None = None
    """``postgresql://user@host:5432/db`` for production, ``sqlite:///path``; default: SQLite in data_dir."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    public_url: str | None = None
    """The URL users reach orgwarden at, used in invite links; default: the URL of the request."""

    admin_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest Admin API request body; larger ones are refused with 413."""

    invite_ttl_days: int = Field(default=21, ge=1, le=365)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must start with postgresql:// or sqlite:///")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL: ``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'orgwarden.sqlite3'}"
        scheme, rest = url.split(":", 1)
        base = scheme.split("+", 1)[0]
        if base in {"postgresql", "postgres"}:
            return f"postgresql+asyncpg:{rest}"
        return f"sqlite+aiosqlite:{rest}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"invalid setting ORGWARDEN_{name.upper()}: {first['msg']}{shown}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; raise ``ConfigError`` with one line naming the bad one."""
    values: dict[str, Any] = {}
    path = config_file or os.environ.get(CONFIG_ENV)
    if path:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(values) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
        # The file is the lowest-priority source: environment variables override it.
        for name in list(values):
            if f"ORGWARDEN_{name.upper()}" in os.environ:
                del values[name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
