"""Cost per assistant message from `genai-prices`, split into input, output, cache read and cache write.

Two things to know about genai-prices:
- its `input_tokens` INCLUDES cache read and cache write tokens, while our `Usage.input` excludes them,
  so we pass `input + cache_read + cache_write`;
- prices can be tiered on the total prompt size (e.g. Anthropic's >200k-token rate): crossing a tier
  re-prices every token of that kind. We apply the same rule per component so the parts add up to
  genai-prices' total.

An unknown model or provider yields `Cost()` (every field None): unknown is never reported as 0.
The import costs ~150 ms, so it happens on the first priced message, not at startup.
"""

from __future__ import annotations

import contextlib
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


def prefetch() -> None:
    """Start importing genai-prices in the background. Providers call this before sending their first
    request, so the import overlaps the wait for the model instead of following it."""
    global _prefetch_started
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
    price = _find_price(provider, model, usage, base_url)
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
