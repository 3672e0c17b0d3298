"""Model names a person types: short aliases (`sonnet`, `gpt-4.1`, `o3`), the catalogue `opi --list-models`
prints, and "did you mean" suggestions for a bare name that is neither an alias nor `provider:model`.

`bot.llm.models.parse_spec` calls `expand_alias` first, so an alias works everywhere a spec does
(`--model`, `OPI_MODEL`, the config file, `/model`). The context windows come from
`bot.llm.models.known_model` and the prices from genai-prices (through `bot.llm.pricing`); both are
imported only by `list_models`, because `bot.llm.models` imports this module at startup.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from bot.llm.errors import ConfigError


@dataclass(frozen=True)
class CatalogEntry:
    spec: str  # provider:model, exactly as the provider's API names the model
    aliases: tuple[str, ...] = ()


# The models worth naming in `--help` and `--list-models`; any other id works as `provider:model`.
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("anthropic:claude-sonnet-4-5", ("sonnet", "claude-sonnet-4-5", "sonnet-4.5")),
    CatalogEntry("anthropic:claude-opus-4-5", ("opus", "claude-opus-4-5", "opus-4.5")),
    CatalogEntry("anthropic:claude-haiku-4-5", ("haiku", "claude-haiku-4-5", "haiku-4.5")),
    CatalogEntry("anthropic:claude-opus-4-1", ("claude-opus-4-1", "opus-4.1")),
    CatalogEntry("anthropic:claude-sonnet-4-0", ("claude-sonnet-4-0", "sonnet-4")),
    CatalogEntry("anthropic:claude-3-7-sonnet-latest", ("claude-3-7-sonnet",)),
    CatalogEntry("anthropic:claude-3-5-haiku-latest", ("claude-3-5-haiku",)),
    CatalogEntry("openai:gpt-5", ("gpt-5",)),
    CatalogEntry("openai:gpt-5-mini", ("gpt-5-mini",)),
    CatalogEntry("openai:gpt-4.1", ("gpt-4.1",)),
    CatalogEntry("openai:gpt-4.1-mini", ("gpt-4.1-mini",)),
    CatalogEntry("openai:gpt-4o", ("gpt-4o",)),
    CatalogEntry("openai:gpt-4o-mini", ("gpt-4o-mini",)),
    CatalogEntry("openai:o3", ("o3",)),
    CatalogEntry("openai:o4-mini", ("o4-mini",)),
    CatalogEntry("deepseek:deepseek-chat", ("deepseek", "deepseek-chat")),
    CatalogEntry("deepseek:deepseek-reasoner", ("deepseek-reasoner",)),
    CatalogEntry("groq:llama-3.3-70b-versatile", ("llama-3.3-70b",)),
)

ALIASES: dict[str, str] = {alias: entry.spec for entry in CATALOG for alias in entry.aliases}


def expand_alias(spec: str) -> str:
    """`sonnet` → `anthropic:claude-sonnet-4-5`; a `provider:model` spec is returned unchanged. A bare
    name that is not an alias raises ConfigError listing the closest real ids."""
    name = spec.strip()
    if ":" in name or not name:
        return spec
    found = ALIASES.get(name.lower())
    if found is not None:
        return found
    raise ConfigError(f"invalid model spec {name!r}: not a known alias, and not PROVIDER:MODEL"
                      f"{suggestion_hint(name)}")


def suggestions(name: str, limit: int = 3) -> list[str]:
    """Real specs close to `name`: those whose model id starts with it first, then near spellings."""
    lowered = name.lower()
    by_id = {entry.spec.partition(":")[2]: entry.spec for entry in CATALOG}
    starting = [spec for model_id, spec in by_id.items() if model_id.startswith(lowered)]
    words = {**by_id, **ALIASES}
    near = [words[word] for word in difflib.get_close_matches(lowered, list(words), n=limit * 2, cutoff=0.6)]
    ordered = list(dict.fromkeys([*starting, *near]))
    return ordered[:limit]


def suggestion_hint(name: str) -> str:
    close = suggestions(name)
    if close:
        return "; did you mean " + " or ".join(close) + "? (opi --list-models lists the known models)"
    return ", e.g. sonnet or openai:gpt-4.1 (opi --list-models shows the known models)"


@dataclass(frozen=True)
class ModelListing:
    spec: str
    aliases: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    input_usd_per_mtok: float | None  # None: genai-prices does not know the price
    output_usd_per_mtok: float | None


def list_models() -> list[ModelListing]:
    """The catalogue with each model's context window and price per million tokens."""
    from bot.llm.messages import Usage
    from bot.llm.models import all_endpoints, model_info
    from bot.llm.pricing import compute_cost

    endpoints = all_endpoints()
    listings = []
    for entry in CATALOG:
        provider, _, model_id = entry.spec.partition(":")
        info = model_info(endpoints[provider], model_id)
        # Priced on a small prompt: a million-token one would cross a long-context tier.
        input_cost = compute_cost(provider, model_id, Usage(input=1000)).input
        output_cost = compute_cost(provider, model_id, Usage(input=1000, output=1000)).output
        listings.append(ModelListing(entry.spec, entry.aliases, info.context_window, info.max_output_tokens,
                                     _per_million(input_cost), _per_million(output_cost)))
    return listings


def _per_million(per_thousand: float | None) -> float | None:
    return None if per_thousand is None else round(per_thousand * 1000, 4)


def format_listing(listings: list[ModelListing]) -> str:
    def usd(value: float | None) -> str:
        return "unknown" if value is None else f"${value:,.2f}"

    rows = [("MODEL", "ALIASES", "CONTEXT", "MAX OUT", "IN $/MTOK", "OUT $/MTOK")]
    for item in listings:
        rows.append((item.spec, ", ".join(item.aliases) or "-", f"{item.context_window:,}",
                     f"{item.max_output_tokens:,}", usd(item.input_usd_per_mtok), usd(item.output_usd_per_mtok)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if column < 2 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.append("")
    lines.append("Prices from genai-prices. Any other model works as PROVIDER:MODEL "
                 "(providers: anthropic, openai, openrouter, groq, deepseek, ollama, or [endpoints.NAME]).")
    return "\n".join(lines) + "\n"
