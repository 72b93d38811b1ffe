"""Data files shipped with orgwarden (the model catalogue), and their loader."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from orgwarden.domain.catalog import Catalog, CatalogError, parse_catalog
from orgwarden.errors import ConfigError


def load_catalog(path: Path | None = None) -> Catalog:
    """The shipped ``models.json``, or an operator's replacement (``ORGWARDEN_MODELS_FILE``)."""
    try:
        text = path.read_text() if path else resources.files(__package__).joinpath("models.json").read_text()
        return parse_catalog(json.loads(text))
    except OSError as exc:
        raise ConfigError(f"invalid setting ORGWARDEN_MODELS_FILE: cannot read {path}: {exc.strerror}") from None
    except (ValueError, CatalogError) as exc:
        raise ConfigError(f"invalid setting ORGWARDEN_MODELS_FILE: {path or 'models.json'}: {exc}") from None
