"""What a request cost, exactly: integer picodollars from token counts and the catalogue's prices."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from orgwarden.domain.catalog import PICO_PER_TOKEN_PER_PRICE, Catalog, Model

WEB_SEARCH_USD_PER_1000 = Decimal(10)  # $10 per 1,000 searches (public pricing)
LONG_CONTEXT_TOKENS = 200_000  # above it, a request is in the 200k-1M context window


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class TokenUsage:
    """Usage as metered: the five token kinds and server-tool requests."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read: int = 0
    web_search_requests: int = 0

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_creation_5m + self.cache_creation_1h + self.cache_read

    @property
    def context_window(self) -> str:
        """The context window reports and records name: by all input, cached or not."""
        return "0-200k" if self.total_input <= LONG_CONTEXT_TOKENS else "200k-1M"


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class Cost:
    """Per-kind cost in picodollars; ``total`` is their exact sum."""

    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    web_search: int

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read + self.web_search


def multiplier(catalog: Catalog, model: Model, *, batch: bool, inference_geo: str | None) -> Decimal:
    factor = Decimal(1)
    if batch:
        factor *= catalog.batch_multiplier
    if inference_geo == "us" and model.geo_multiplier_applies:
        factor *= catalog.geo_us_multiplier
    return factor


_TOKEN_TYPES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_WEB_SEARCH_PICO = int(WEB_SEARCH_USD_PER_1000 * 10**12 / 1000)  # per search: whole picodollars


def _rates(catalog: Catalog, model: Model, batch: bool, inference_geo: str | None) -> tuple[int, ...]:
    """Picodollars per token of each type, computed once per model and multiplier and kept on the
    catalogue (every request is priced twice: its worst case before forwarding, its usage after).
    Whole numbers: loading the catalogue refuses a price that is not, under every multiplier."""
    key = (model.id, batch, inference_geo == "us" and model.geo_multiplier_applies)
    rates = catalog.pico_rates.get(key)
    if rates is None:
        factor = multiplier(catalog, model, batch=batch, inference_geo=inference_geo)
        rates = tuple(int(model.prices[kind] * factor * PICO_PER_TOKEN_PER_PRICE) for kind in _TOKEN_TYPES)
        catalog.pico_rates[key] = rates
    return rates


def cost_of(
    catalog: Catalog, model: Model, usage: TokenUsage, *, batch: bool = False, inference_geo: str | None = None
) -> Cost:
    input_, output, write_5m, write_1h, read = _rates(catalog, model, batch, inference_geo)
    return Cost(
        input=usage.input_tokens * input_,
        output=usage.output_tokens * output,
        cache_write_5m=usage.cache_creation_5m * write_5m,
        cache_write_1h=usage.cache_creation_1h * write_1h,
        cache_read=usage.cache_read * read,
        web_search=usage.web_search_requests * _WEB_SEARCH_PICO,
    )


def picodollars_to_cents(picodollars: int) -> Decimal:
    """Cents as an exact decimal (1 cent = 1e10 picodollars), for reports and spend limits."""
    return Decimal(picodollars).scaleb(-10)
