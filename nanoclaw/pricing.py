"""Model prices and the money a model call costs: the price table (the bundled prices.json,
NANOCLAW_PRICES merged over it), its validation, and the match of a dated model name
(claude-sonnet-4-6-20260101, gpt-4o-2024-08-06) to its table entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from nanoclaw.errors import ConfigError
from nanoclaw.models import Usage

PRICE_FIELDS = ("input", "output", "cache_read", "cache_write")
# What may follow a table entry's name in the name of the same model: a release date, or the
# "-latest" alias. Nothing else: gpt-4o-mini is not gpt-4o.
DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)")
MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million tokens; cache_write is the 5-minute cache write."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True)
class PriceTable:
    models: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""  # where the prices come from and when: "list prices, 2026-12-01"


def parse_prices(raw: object, origin: str) -> PriceTable:
    """Pure: a price table from its JSON; ConfigError naming `origin` and the entry if wrong."""
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ConfigError(f"{origin}: a price table is an object with a 'models' object")
    models: dict[str, Price] = {}
    for name, entry in raw["models"].items():
        if not isinstance(entry, dict) or set(entry) != set(PRICE_FIELDS):
            raise ConfigError(f"{origin}: model {name!r} needs exactly {', '.join(PRICE_FIELDS)}")
        values = [entry[k] for k in PRICE_FIELDS]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{origin}: model {name!r}: prices are numbers")
        if not all(0 <= v < 1e6 for v in values):  # also refuses NaN
            raise ConfigError(f"{origin}: model {name!r}: prices are 0 or more")
        models[name] = Price(*(float(v) for v in values))
    parts = [str(raw[k]) for k in ("source", "date") if isinstance(raw.get(k), str | int)]
    return PriceTable(MappingProxyType(models), ", ".join(parts) or origin)


def merge(base: PriceTable, override: PriceTable) -> PriceTable:
    """Pure: the override's entries over the base's, model by model."""
    source = f"{base.source}; {override.source}" if override.models else base.source
    return PriceTable(MappingProxyType({**base.models, **override.models}), source)


def price_of(table: PriceTable, model: str) -> Price | None:
    """Pure: the model's price: its own entry, else the longest entry it is a dated name of."""
    if model in table.models:
        return table.models[model]
    best = ""
    for name in table.models:
        if len(name) > len(best) and model.startswith(name) and DATED.fullmatch(model[len(name) :]):
            best = name
    return table.models[best] if best else None


def cost(usage: Usage, price: Price) -> float:
    """Pure: the USD of these tokens. Input is the uncached input, as the Messages API counts."""
    return (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    ) / MILLION


def priced(table: PriceTable, calls: Iterable[tuple[str, Usage]]) -> tuple[float, set[str]]:
    """Pure: the cost of (model, usage) pairs, and the models without a price (counted 0)."""
    total, unknown = 0.0, set()
    for model, usage in calls:
        price = price_of(table, model)
        if price is None:
            unknown.add(model)
        else:
            total += cost(usage, price)
    return total, unknown


def load_prices(override: Path | None) -> PriceTable:
    """The bundled table with the NANOCLAW_PRICES file merged over it; ConfigError if wrong."""
    bundled = resources.files("nanoclaw").joinpath("prices.json").read_text(encoding="utf-8")
    table = parse_prices(json.loads(bundled), "nanoclaw/prices.json")
    if override is None:
        return table
    try:
        raw = json.loads(override.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"NANOCLAW_PRICES {override}: {exc}") from exc
    return merge(table, parse_prices(raw, f"NANOCLAW_PRICES {override}"))


def price_lines(table: PriceTable) -> list[str]:
    """The effective table as `nanoclaw usage --prices` prints it."""
    lines = [
        f"prices: {table.source} (USD per million tokens)",
        f"{'model':<28}{'input':>9}{'output':>9}{'cache read':>12}{'cache write':>13}",
    ]
    for name in sorted(table.models):
        p = table.models[name]
        lines.append(
            f"{name:<28}{p.input:>9.3f}{p.output:>9.3f}{p.cache_read:>12.3f}{p.cache_write:>13.3f}"
        )
    return lines
