"""Cost per component from genai-prices, with unknown reported as None (never 0)."""

from __future__ import annotations

import pytest

from bot.llm.messages import Cost, Usage
from bot.llm.pricing import compute_cost


def _total_from_genai_prices(provider: str, model: str, usage: Usage) -> float:
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    price_usage = PriceUsage(input_tokens=usage.prompt_tokens, cache_read_tokens=usage.cache_read,
                             cache_write_tokens=usage.cache_write, output_tokens=usage.output)
    return float(calc_price(price_usage, model, provider_id=provider).total_price)


def test_components_of_a_cached_anthropic_call() -> None:
    usage = Usage(input=2_000, output=1_000, cache_read=100_000, cache_write=10_000)
    cost = compute_cost("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert cost.input == pytest.approx(2_000 * 3 / 1e6)
    assert cost.output == pytest.approx(1_000 * 15 / 1e6)
    assert cost.cache_read == pytest.approx(100_000 * 0.3 / 1e6)
    assert cost.cache_write == pytest.approx(10_000 * 3.75 / 1e6)
    # Our Usage.input excludes cached tokens; genai-prices' input_tokens includes them. The parts must
    # add up to what genai-prices charges for the same call.
    assert cost.total == pytest.approx(_total_from_genai_prices("anthropic", "claude-sonnet-4-5", usage))


def test_long_prompt_tier_applies_to_every_component() -> None:
    usage = Usage(input=150_000, output=1_000, cache_read=60_000)  # 210k prompt tokens > 200k tier
    cost = compute_cost("anthropic", "claude-sonnet-4-5", usage)
    assert cost.input == pytest.approx(150_000 * 6 / 1e6)
    assert cost.cache_read == pytest.approx(60_000 * 0.6 / 1e6)
    assert cost.total == pytest.approx(_total_from_genai_prices("anthropic", "claude-sonnet-4-5", usage))


def test_openai_cached_tokens() -> None:
    usage = Usage(input=1_000, output=100, cache_read=3_000)
    cost = compute_cost("openai", "gpt-4o", usage)
    assert cost.cache_read == pytest.approx(3_000 * 1.25 / 1e6)
    assert cost.cache_write == 0.0
    assert cost.total == pytest.approx(_total_from_genai_prices("openai", "gpt-4o", usage))


def test_preset_provider_ids() -> None:
    cost = compute_cost("deepseek", "deepseek-chat", Usage(input=1_000_000, output=0))
    assert cost.total is not None and cost.total > 0


def test_zero_usage_of_a_known_model_is_zero() -> None:
    assert compute_cost("openai", "gpt-4o", Usage()) == Cost.zero()


@pytest.mark.parametrize(("provider", "model"), [
    ("openai", "gpt-imaginary-7"),
    ("anthropic", "claude-imaginary"),
    ("ollama", "llama3.1:8b"),
    ("my-endpoint", "gpt-4o"),
])
def test_unknown_price_is_none_not_zero(provider: str, model: str) -> None:
    cost = compute_cost(provider, model, Usage(input=100, output=100), base_url="http://127.0.0.1:1/v1")
    assert cost == Cost()
    assert cost.total is None


def test_unknown_plus_known_stays_unknown() -> None:
    known = compute_cost("openai", "gpt-4o", Usage(input=10, output=10))
    assert (known + Cost()).total is None


def test_every_price_table_entry_is_what_genai_prices_says() -> None:
    # bot/llm/price_table.py spares a short run the genai-prices import; it must never disagree with it.
    # Regenerate with `python -m bot.llm.pricing > bot/llm/price_table.py` after upgrading genai-prices.
    from bot.llm.price_table import PRICES
    from bot.llm.pricing import table_entry

    assert PRICES, "the table is empty"
    for key, entry in PRICES.items():
        provider, _, model = key.partition(":")
        assert table_entry(provider, model) == entry, key
