"""The price table and cost arithmetic: the bundled table, dated model names, the
NANOCLAW_PRICES override merged over it, and what a wrong table says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanoclaw.errors import ConfigError
from nanoclaw.models import Usage
from nanoclaw.pricing import (
    Price,
    PriceTable,
    cost,
    load_prices,
    parse_prices,
    price_lines,
    price_of,
    priced,
)

# 1M of each kind of token: the cost is the sum of the four prices
MILLION_EACH = Usage(1, 1_000_000, 1_000_000, 1_000_000, 1_000_000)


@pytest.mark.parametrize(
    ("model", "usage", "usd"),
    [
        ("claude-sonnet-4-6", MILLION_EACH, 3 + 15 + 0.3 + 3.75),
        ("claude-sonnet-4-6-20260101", Usage(1, 1000, 500), (1000 * 3 + 500 * 15) / 1e6),
        (
            "claude-sonnet-4-5-20250929",
            Usage(1, 0, 0, 10_000, 2000),
            (10_000 * 0.3 + 2000 * 3.75) / 1e6,
        ),
        ("claude-sonnet-4-20250514", Usage(1, 100, 100), (100 * 3 + 100 * 15) / 1e6),
        ("claude-opus-4-1-20250805", MILLION_EACH, 15 + 75 + 1.5 + 18.75),
        (
            "claude-opus-4-5",
            Usage(1, 2000, 1000, 50_000, 0),
            (2000 * 5 + 1000 * 25 + 50_000 * 0.5) / 1e6,
        ),
        ("claude-haiku-4-5-20251001", MILLION_EACH, 1 + 5 + 0.1 + 1.25),
        (
            "gpt-4o-2024-08-06",
            Usage(1, 1000, 1000, 1000),
            (1000 * 2.5 + 1000 * 10 + 1000 * 1.25) / 1e6,
        ),
        ("gpt-4o-mini", Usage(1, 1_000_000, 1_000_000), 0.15 + 0.6),
        ("gpt-4.1-2025-04-14", Usage(1, 1_000_000), 2.0),
        ("gpt-5", Usage(1, 0, 1_000_000, 1_000_000), 10 + 0.125),
        ("gpt-5-mini-2025-08-07", Usage(1, 1_000_000, 1_000_000), 0.25 + 2),
        ("o4-mini", Usage(1, 1_000_000), 1.1),
        ("o3-latest", Usage(1, 0, 1_000_000), 8.0),
    ],
)
def test_cost_of_the_bundled_prices(model: str, usage: Usage, usd: float) -> None:
    table = load_prices(None)
    price = price_of(table, model)
    assert price is not None, model
    assert cost(usage, price) == pytest.approx(usd)


@pytest.mark.parametrize(
    "model",
    [
        "claude-sonnet-4-6-preview",  # not a date: another model
        "gpt-4o-audio-preview",
        "gpt-4o-minimal",
        "claude-sonnet-4-6-2026",  # a half date
        "my-local-llama",
        "",
    ],
)
def test_only_dated_names_fall_back_to_their_entry(model: str) -> None:
    assert price_of(load_prices(None), model) is None


def test_the_longest_entry_wins_and_exact_names_first() -> None:
    table = parse_prices(
        {
            "models": {
                "a": {"input": 1, "output": 1, "cache_read": 0, "cache_write": 1},
                "a-mini": {"input": 2, "output": 2, "cache_read": 0, "cache_write": 2},
                "a-mini-20250101": {"input": 9, "output": 9, "cache_read": 0, "cache_write": 9},
            }
        },
        "test",
    )
    assert price_of(table, "a-mini-20250101") == Price(9, 9, 0, 9)
    assert price_of(table, "a-mini-20260101") == Price(2, 2, 0, 2)
    assert price_of(table, "a-20260101") == Price(1, 1, 0, 1)
    assert price_of(table, "a-mini-x") is None


def test_the_bundled_table_states_its_source_and_covers_the_current_models() -> None:
    raw = json.loads((Path(__file__).parent.parent / "nanoclaw" / "prices.json").read_text())
    assert raw["source"] == "list prices" and raw["date"] and raw["currency"] == "USD"
    table = load_prices(None)
    assert table.source == f"list prices, {raw['date']}"
    for model in ("claude-opus-4-5", "claude-sonnet-4-6", "claude-haiku-4-5", "gpt-5", "gpt-4.1"):
        assert model in table.models
    # every Anthropic entry: reads a tenth of the input, 5-minute writes 1.25 times it
    for name, p in table.models.items():
        if name.startswith("claude-"):
            assert p.cache_read == pytest.approx(p.input / 10), name
            assert p.cache_write == pytest.approx(p.input * 1.25), name


def test_the_override_file_is_merged_over_the_bundled_table(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    override.write_text(
        json.dumps(
            {
                "source": "our contract",
                "date": "2026-11-01",
                "models": {
                    "claude-sonnet-4-6": {
                        "input": 2,
                        "output": 10,
                        "cache_read": 0.2,
                        "cache_write": 2.5,
                    },
                    "llama-3.3-70b": {
                        "input": 0.5,
                        "output": 0.5,
                        "cache_read": 0,
                        "cache_write": 0,
                    },
                },
            }
        )
    )
    table = load_prices(override)
    assert table.source.endswith("; our contract, 2026-11-01")
    sonnet = price_of(table, "claude-sonnet-4-6-20260101")
    assert sonnet == Price(2, 10, 0.2, 2.5)
    assert cost(Usage(1, 1_000_000, 1_000_000), sonnet) == pytest.approx(12)
    assert price_of(table, "llama-3.3-70b") == Price(0.5, 0.5, 0, 0)
    assert price_of(table, "claude-haiku-4-5") == Price(1, 5, 0.1, 1.25)  # untouched
    usd, unknown = priced(
        table, [("llama-3.3-70b", Usage(1, 2_000_000)), ("mystery", MILLION_EACH)]
    )
    assert usd == pytest.approx(1.0) and unknown == {"mystery"}
    printed = price_lines(table)
    assert printed[0].startswith("prices: list prices, ")
    [llama] = [line for line in printed if line.startswith("llama-3.3-70b ")]
    assert llama.split() == ["llama-3.3-70b", "0.500", "0.500", "0.000", "0.000"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "NANOCLAW_PRICES"),
        ("[]", "a price table is an object with a 'models' object"),
        ('{"models": {"m": {"input": 1}}}', "model 'm' needs exactly input, output"),
        (
            '{"models": {"m": {"input": "1", "output": 1, "cache_read": 1, "cache_write": 1}}}',
            "model 'm': prices are numbers",
        ),
        (
            '{"models": {"m": {"input": -1, "output": 1, "cache_read": 1, "cache_write": 1}}}',
            "model 'm': prices are 0 or more",
        ),
    ],
)
def test_a_wrong_override_names_the_file_and_the_fault(
    tmp_path: Path, content: str, message: str
) -> None:
    override = tmp_path / "p.json"
    override.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_prices(override)
    assert message in str(info.value) and str(override) in str(info.value)
    with pytest.raises(ConfigError, match="No such file"):
        load_prices(tmp_path / "missing.json")


def test_an_empty_table_prices_nothing() -> None:
    assert price_of(PriceTable(), "claude-sonnet-4-6") is None
    assert priced(PriceTable(), [("m", MILLION_EACH)]) == (0.0, {"m"})
