"""Cost per assistant message from `genai-prices`, split into input, output, cache read and cache write.

Two things to know about genai-prices:
- its `input_tokens` INCLUDES cache read and cache write tokens, while our `Usage.input` excludes them,
  so we pass `input + cache_read + cache_write`;
- prices can be tiered on the total prompt size (e.g. Anthropic's >200k-token rate): crossing a tier
  re-prices every token of that kind. We apply the same rule per component so the parts add up to
  genai-prices' total.

An unknown model or provider yields `Cost()` (every field None): unknown is never reported as 0.

Importing genai-prices costs ~100 ms of CPU, a third of a short run. So the models opi names in its
catalogue are priced from `bot.llm.price_table` (generated from genai-prices with
`python -m bot.llm.pricing > bot/llm/price_table.py`; tests/test_pricing.py checks every entry against the
installed genai-prices), and genai-prices is imported only for other models, in the background while the
first request is in flight (`prefetch`). Prices that genai-prices makes conditional (e.g. on the time of
day) are never put in the table.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bot.llm.messages import Cost, Usage

# Our provider names → genai-prices provider ids, where they differ or are worth stating.
_PROVIDER_IDS = {
    "anthropic": "anthropic",
    "openai": "openai",
    "openrouter": "openrouter",
    "groq": "groq",
    "deepseek": "deepseek",
}


_prefetch_lock = threading.Lock()
_prefetch_started = False


def prefetch(provider: str | None = None, model: str | None = None) -> None:
    """Start importing genai-prices in the background, unless the price table has this model. Providers
    call this before sending a request, so the import overlaps the wait for the model instead of
    following it."""
    global _prefetch_started
    if provider is not None and model is not None and _table_price(provider, model) is not None:
        return
    with _prefetch_lock:
        if _prefetch_started or "genai_prices" in sys.modules:
            return
        _prefetch_started = True
    threading.Thread(target=_import_prices, name="opi-prices-import", daemon=True).start()


def _import_prices() -> None:
    with contextlib.suppress(Exception):  # compute_cost reports the problem as an unknown cost
        import genai_prices  # noqa: F401


def compute_cost(provider: str, model: str, usage: Usage, *, base_url: str | None = None) -> Cost:
    """USD cost of one message. `provider` is our provider/endpoint name; for a configured endpoint
    with a name genai-prices does not know, its `base_url` is used to recognise the provider."""
    # The table holds what genai-prices' first lookup (by provider id) would find.
    price = _table_price(provider, model) or _find_price(provider, model, usage, base_url)
    if price is None:
        return Cost()
    total_input = usage.input + usage.cache_read + usage.cache_write
    input_rate = _rate(getattr(price, "input_mtok", None), total_input)
    if input_rate is None:
        return Cost()
    output_rate = _rate(getattr(price, "output_mtok", None), total_input)
    # A model without a separate cache price bills those tokens as ordinary input (as genai-prices does).
    read_rate = _rate(getattr(price, "cache_read_mtok", None), total_input)
    write_rate = _rate(getattr(price, "cache_write_mtok", None), total_input)
    parts: dict[str, Decimal | None] = {
        "input": _usd(usage.input, input_rate),
        "output": _usd(usage.output, output_rate) if output_rate is not None else None,
        "cache_read": _usd(usage.cache_read, read_rate if read_rate is not None else input_rate),
        "cache_write": _usd(usage.cache_write, write_rate if write_rate is not None else input_rate),
    }
    known = [value for value in parts.values() if value is not None]
    total = float(sum(known, Decimal(0))) if len(known) == len(parts) else None
    return Cost(total=total, **{name: None if value is None else float(value) for name, value in parts.items()})


def _find_price(provider: str, model: str, usage: Usage, base_url: str | None) -> Any | None:
    try:
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price
    except ImportError:  # pragma: no cover - a declared dependency; unknown beats a crash
        return None
    price_usage = PriceUsage(input_tokens=usage.input + usage.cache_read + usage.cache_write,
                             cache_read_tokens=usage.cache_read, cache_write_tokens=usage.cache_write,
                             output_tokens=usage.output)
    provider_id = _PROVIDER_IDS.get(provider, provider)
    lookups: list[Callable[[], Any]] = [lambda: calc_price(price_usage, model, provider_id=provider_id)]
    if base_url:
        lookups.append(lambda: calc_price(price_usage, model, provider_api_url=base_url))
    for lookup in lookups:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return lookup().model_price
        except LookupError:
            continue
        except Exception:  # a pricing-data problem must never fail a model call
            return None
    return None


class _TablePrice:
    """A `bot.llm.price_table` entry in the shape genai-prices' ModelPrice has (what `_rate` reads)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        for name in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"):
            setattr(self, name, _table_rate(entry.get(name)))


class _Tier:
    def __init__(self, start: int, price: str) -> None:
        self.start, self.price = start, Decimal(price)


class _Tiered:
    def __init__(self, base: str, tiers: list[tuple[int, str]]) -> None:
        self.base, self.tiers = Decimal(base), [_Tier(start, price) for start, price in tiers]


def _table_rate(value: Any) -> Decimal | _Tiered | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Decimal(value)
    return _Tiered(value["base"], [tuple(tier) for tier in value["tiers"]])


_table: dict[tuple[str, str], _TablePrice | None] = {}


def _table_price(provider: str, model: str) -> _TablePrice | None:
    key = (_PROVIDER_IDS.get(provider, provider), model)
    if key not in _table:
        from bot.llm.price_table import PRICES

        entry = PRICES.get(f"{key[0]}:{key[1]}")
        _table[key] = _TablePrice(entry) if entry is not None else None
    return _table[key]


def _rate(price: Any, total_input_tokens: int) -> Decimal | None:
    """USD per million tokens, after applying a tier if the prompt crossed its threshold."""
    if price is None:
        return None
    if isinstance(price, Decimal | int | float):
        return Decimal(price)
    base = getattr(price, "base", None)
    tiers = getattr(price, "tiers", None)
    if base is None:
        return None
    rate = Decimal(base)
    for tier in sorted(tiers or [], key=lambda t: t.start):
        if total_input_tokens > tier.start:
            rate = Decimal(tier.price)
    return rate


def _usd(tokens: int, rate_per_million: Decimal) -> Decimal:
    return rate_per_million * tokens / Decimal(1_000_000)


# -- the price table --------------------------------------------------------------------------------------
def table_entry(provider_id: str, model: str) -> dict[str, Any] | None:
    """genai-prices' default price for a model as a price-table entry, or None when it has none or makes it
    conditional (a list of prices chosen by date or time of day)."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = calc_price(PriceUsage(input_tokens=1, output_tokens=1), model, provider_id=provider_id)
    except LookupError:
        return None
    if isinstance(found.model.prices, list):
        return None
    entry: dict[str, Any] = {}
    for name in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"):
        value = getattr(found.model_price, name, None)
        if value is None:
            continue
        if isinstance(value, Decimal | int | float):
            entry[name] = str(value)
        else:
            entry[name] = {"base": str(value.base), "tiers": [[tier.start, str(tier.price)] for tier in value.tiers]}
    return entry or None


def generate_table() -> str:
    """The source of bot/llm/price_table.py for the models in opi's catalogue."""
    from bot.llm.catalog import CATALOG

    lines = ['"""Prices of the models in opi\'s catalogue, from genai-prices, so pricing them needs no import of',
             'genai-prices. Generated by `python -m bot.llm.pricing > bot/llm/price_table.py`; do not edit."""',
             "", "from typing import Any", "", "PRICES: dict[str, dict[str, Any]] = {"]
    for entry in CATALOG:
        provider, _, model = entry.spec.partition(":")
        price = table_entry(_PROVIDER_IDS.get(provider, provider), model)
        if price is not None:
            key = json.dumps(f"{_PROVIDER_IDS.get(provider, provider)}:{model}")
            lines.append(f"    {key}: {json.dumps(price)},")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(generate_table(), end="")
