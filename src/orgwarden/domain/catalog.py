"""The model catalogue: ids, aliases, rate-limit groups and prices, read from a data file.

Money is exact: prices are decimal strings in USD per million tokens, and a cost is an integer number
of picodollars (1e-12 USD). Loading refuses a price that would not come out as a whole number of
picodollars per token under every multiplier (cache writes 1.25x and 2x, cache read 0.1x, batch,
inference geo), so every sum of costs is an exact integer, all the way to the reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

PICODOLLARS_PER_USD = 10**12
TOKENS_PER_PRICE_UNIT = 10**6  # prices are per million tokens
# Picodollars per token for a price of P USD per million tokens: P * 1e12 / 1e6.
PICO_PER_TOKEN_PER_PRICE = Decimal(PICODOLLARS_PER_USD // TOKENS_PER_PRICE_UNIT)

TOKEN_TYPES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
_DEFAULT_FACTORS = {"cache_write_5m": Decimal("1.25"), "cache_write_1h": Decimal("2"), "cache_read": Decimal("0.1")}


class CatalogError(ValueError):
    """The models file is wrong; the message names the model and field."""


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    display_name: str
    created_at: datetime
    aliases: tuple[str, ...]
    group: str
    max_input_tokens: int | None
    max_tokens: int | None
    prices: Mapping[str, Decimal]  # token type -> USD per million tokens
    geo_multiplier_applies: bool = False


@dataclass(frozen=True, slots=True)
class Catalog:
    models: tuple[Model, ...]
    batch_multiplier: Decimal
    geo_us_multiplier: Decimal
    _by_name: Mapping[str, Model] = field(repr=False, default_factory=dict)
    # Picodollars per token by (model id, batch, US geo), filled as ``pricing.cost_of`` meets them.
    pico_rates: dict[tuple[str, bool, bool], tuple[int, ...]] = field(repr=False, compare=False, default_factory=dict)

    def find(self, name: str) -> Model | None:
        """A model by id or alias."""
        return self._by_name.get(name)


def _decimal(value: Any, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise CatalogError(f"{where}: {value!r} is not a decimal number") from None
    if not number.is_finite() or number < 0:
        raise CatalogError(f"{where}: must be a non-negative number")
    return number


def _exact(price: Decimal, multipliers: list[Decimal], where: str) -> None:
    for factor in multipliers:
        per_token = price * factor * PICO_PER_TOKEN_PER_PRICE
        if per_token != per_token.to_integral_value():
            raise CatalogError(f"{where}: {price} USD/MTok x {factor} is not a whole number of picodollars per token")


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Build a catalogue from the parsed models file, or raise ``CatalogError``."""
    raw_multipliers = data.get("multipliers", {})
    batch = _decimal(raw_multipliers.get("batch", "0.5"), "multipliers.batch")
    geo = _decimal(raw_multipliers.get("inference_geo_us", "1.1"), "multipliers.inference_geo_us")
    geo_models = set(raw_multipliers.get("inference_geo_us_from", []))
    combos = [Decimal(1), batch, geo, batch * geo]
    models: list[Model] = []
    by_name: dict[str, Model] = {}
    for index, raw in enumerate(data.get("models", [])):
        where = f"models[{index}]"
        try:
            model_id = str(raw["id"])
            where = f"model {model_id}"
            prices = {
                "input": _decimal(raw["input"], f"{where}: input"),
                "output": _decimal(raw["output"], f"{where}: output"),
            }
            for token_type, factor in _DEFAULT_FACTORS.items():
                given = raw.get(token_type)
                prices[token_type] = (
                    _decimal(given, f"{where}: {token_type}") if given is not None else prices["input"] * factor
                )
            created = datetime.fromisoformat(str(raw["created_at"]).replace("Z", "+00:00"))
            model = Model(
                id=model_id,
                display_name=str(raw["display_name"]),
                created_at=created,
                aliases=tuple(str(a) for a in raw.get("aliases", [])),
                group=str(raw.get("group", model_id)),
                max_input_tokens=raw.get("max_input_tokens"),
                max_tokens=raw.get("max_tokens"),
                prices=prices,
                geo_multiplier_applies=model_id in geo_models,
            )
        except KeyError as exc:
            raise CatalogError(f"{where}: missing field {exc.args[0]!r}") from None
        except ValueError as exc:
            if isinstance(exc, CatalogError):
                raise
            raise CatalogError(f"{where}: {exc}") from None
        for token_type, price in prices.items():
            _exact(price, combos, f"{where}: {token_type}")
        for name in (model.id, *model.aliases):
            if name in by_name:
                raise CatalogError(f"{where}: the name {name!r} is used twice")
            by_name[name] = model
        models.append(model)
    if not models:
        raise CatalogError("the models file lists no models")
    return Catalog(tuple(models), batch, geo, by_name)
