"""Model specs (`provider:model`), endpoints, and what we know about models' limits.

A spec is `PROVIDER:MODEL`, split at the first colon (so `ollama:llama3.1:8b` is model `llama3.1:8b`).
PROVIDER is one of:
- `anthropic` (Anthropic Messages; `ANTHROPIC_API_KEY`, base URL `ANTHROPIC_BASE_URL`),
- `openai` (Chat Completions; `OPENAI_API_KEY`, base URL `OPENAI_BASE_URL`),
- a built-in OpenAI-compatible preset: `openrouter`, `groq`, `deepseek`, `ollama` (no key),
- a named endpoint from the config file (`[endpoints.NAME] base_url=, api_key_env=, api=`), which may
  also override a preset,
- `mock` (the in-process MockModel) and `replay:PATH` (replays a recorded session).

Context window and output limit come from the endpoint config if set, else `KNOWN_MODELS`, else
defaults: 200k/32k for an unknown `claude-*` model, 128k/16k otherwise. Unknown `claude-*` models are
assumed to support thinking (every current Claude does); other unknown models are not sent a reasoning
effort.

This module is imported at startup (the config loader uses `EndpointConfig`), so providers are imported
only when a model is resolved. Which class speaks an endpoint's `api` is the registry's business
(`bot.llm.providers`); nothing here names a provider class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.llm.base import THINKING_LEVELS, Model, ModelInfo
from bot.llm.catalog import expand_alias
from bot.llm.errors import ConfigError
from bot.llm.providers import check_api, model_factory

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class EndpointConfig(BaseModel):
    """A named API endpoint. In TOML the table name is the endpoint name:

        [endpoints.together]
        base_url = "https://api.together.xyz/v1"
        api_key_env = "TOGETHER_API_KEY"
        api = "openai"
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = ""  # filled from the table name when empty
    base_url: str
    api_key_env: str | None = None  # None: the server needs no key (e.g. a local Ollama)
    api: str = "openai"  # a wire API registered in bot.llm.providers
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    # Env var that overrides base_url (only the built-in anthropic/openai endpoints set one).
    base_url_env: str | None = None
    # OpenAI API only: which field carries the output limit (default: by host, see bot/llm/openai.py).
    max_tokens_field: MaxTokensField | None = None

    @field_validator("api")
    @classmethod
    def _known_api(cls, value: str) -> str:
        return check_api(value)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


BUILTIN_ENDPOINTS: dict[str, EndpointConfig] = {
    "anthropic": EndpointConfig(name="anthropic", base_url="https://api.anthropic.com",
                                api_key_env="ANTHROPIC_API_KEY", api="anthropic",
                                base_url_env="ANTHROPIC_BASE_URL"),
    "openai": EndpointConfig(name="openai", base_url="https://api.openai.com/v1",
                             api_key_env="OPENAI_API_KEY", api="openai", base_url_env="OPENAI_BASE_URL"),
    "openrouter": EndpointConfig(name="openrouter", base_url="https://openrouter.ai/api/v1",
                                 api_key_env="OPENROUTER_API_KEY"),
    "groq": EndpointConfig(name="groq", base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY"),
    "deepseek": EndpointConfig(name="deepseek", base_url="https://api.deepseek.com/v1",
                               api_key_env="DEEPSEEK_API_KEY"),
    "ollama": EndpointConfig(name="ollama", base_url="http://localhost:11434/v1", api_key_env=None),
}
SPECIAL_PROVIDERS = ("mock", "replay")


@dataclass(frozen=True)
class KnownModel:
    context_window: int
    max_output_tokens: int
    reasoning: bool = False


# Keyed by normalised id prefix (see `_normalise`); the longest matching prefix wins, so dated ids
# (claude-sonnet-4-5-20250929) and vendor-prefixed ids (anthropic/claude-sonnet-4.5) match too.
KNOWN_MODELS: dict[str, KnownModel] = {
    "claude-opus-4-5": KnownModel(200_000, 64_000, True),
    "claude-opus-4-1": KnownModel(200_000, 32_000, True),
    "claude-opus-4": KnownModel(200_000, 32_000, True),
    "claude-sonnet-4-5": KnownModel(200_000, 64_000, True),
    "claude-sonnet-4": KnownModel(200_000, 64_000, True),
    "claude-haiku-4-5": KnownModel(200_000, 64_000, True),
    "claude-3-7-sonnet": KnownModel(200_000, 64_000, True),
    "claude-3-5-sonnet": KnownModel(200_000, 8_192),
    "claude-3-5-haiku": KnownModel(200_000, 8_192),
    "claude-3-opus": KnownModel(200_000, 4_096),
    "claude-3-haiku": KnownModel(200_000, 4_096),
    "gpt-5": KnownModel(400_000, 128_000, True),
    "gpt-5-chat": KnownModel(128_000, 16_384),
    "gpt-4-1": KnownModel(1_047_576, 32_768),
    "gpt-4o": KnownModel(128_000, 16_384),
    "gpt-4-turbo": KnownModel(128_000, 4_096),
    "o1": KnownModel(200_000, 100_000, True),
    "o1-mini": KnownModel(128_000, 65_536, True),
    "o3": KnownModel(200_000, 100_000, True),
    "o4-mini": KnownModel(200_000, 100_000, True),
    "deepseek-chat": KnownModel(128_000, 8_192),
    "deepseek-reasoner": KnownModel(128_000, 64_000),  # always thinks; takes no reasoning_effort
    "llama-3-3-70b-versatile": KnownModel(131_072, 32_768),
    "llama-3-1-8b-instant": KnownModel(131_072, 131_072),
}
DEFAULT_CONTEXT_WINDOW = 128_000
DEFAULT_MAX_OUTPUT_TOKENS = 16_384
DEFAULT_CLAUDE = KnownModel(200_000, 32_000, True)


def _normalise(model_id: str) -> str:
    return model_id.lower().rsplit("/", 1)[-1].replace(".", "-")


def known_model(model_id: str) -> KnownModel | None:
    key = _normalise(model_id)
    matches = [prefix for prefix in KNOWN_MODELS
               if key == prefix or key.startswith(prefix + "-") or key.startswith(prefix + ":")]
    return KNOWN_MODELS[max(matches, key=len)] if matches else None


def parse_spec(spec: str) -> tuple[str, str]:
    """`provider:model` → (provider, model). A missing part is a ConfigError with a usable hint."""
    provider, sep, model = expand_alias(spec).strip().partition(":")  # `sonnet` → anthropic:…
    provider = provider.strip().lower()
    if not sep or not provider or not model.strip():
        raise ConfigError(f"invalid model spec {spec!r}: expected PROVIDER:MODEL{_guess_hint(spec)}")
    return provider, model.strip()


def _guess_hint(spec: str) -> str:
    bare = spec.strip().strip(":")
    if bare.startswith("claude"):
        return f", e.g. anthropic:{bare}"
    if bare.startswith(("gpt-", "o1", "o3", "o4")):
        return f", e.g. openai:{bare}"
    return ", e.g. anthropic:claude-sonnet-4-5 or openai:gpt-4o"


def all_endpoints(endpoints: Mapping[str, EndpointConfig] | None = None) -> dict[str, EndpointConfig]:
    """Built-in presets overlaid with configured endpoints (a configured name replaces a preset)."""
    merged = dict(BUILTIN_ENDPOINTS)
    for name, endpoint in (endpoints or {}).items():
        key = name.lower()
        if key in SPECIAL_PROVIDERS:
            raise ConfigError(f"endpoint name {name!r} is reserved")
        merged[key] = endpoint if endpoint.name else endpoint.model_copy(update={"name": key})
    return merged


def provider_names(endpoints: Mapping[str, EndpointConfig] | None = None) -> list[str]:
    return [*all_endpoints(endpoints), *SPECIAL_PROVIDERS]


def model_info(endpoint: EndpointConfig, model_id: str) -> ModelInfo:
    known = known_model(model_id)
    if known is None and _normalise(model_id).startswith("claude"):
        known = DEFAULT_CLAUDE
    return ModelInfo(
        provider=endpoint.name, id=model_id, api=endpoint.api,
        context_window=endpoint.context_window or (known.context_window if known else DEFAULT_CONTEXT_WINDOW),
        max_output_tokens=endpoint.max_output_tokens or (
            known.max_output_tokens if known else DEFAULT_MAX_OUTPUT_TOKENS),
        reasoning=known.reasoning if known else False,
    )


def resolve_model(spec: str, endpoints: Mapping[str, EndpointConfig] | None = None,
                  env: Mapping[str, str] | None = None, thinking: str = "off") -> Model:
    """Build the model a spec names. Raises ConfigError for an unknown provider, a missing API key or
    a bad thinking level. A thinking level on a model that cannot think is ignored, not an error."""
    env = os.environ if env is None else env
    if thinking not in THINKING_LEVELS:
        raise ConfigError(f"invalid thinking level {thinking!r}: expected one of {', '.join(THINKING_LEVELS)}")
    provider, model_id = parse_spec(spec)
    merged = all_endpoints(endpoints)  # validates configured names even when they are not used
    if provider == "mock":
        from bot.llm.mock import MockModel

        return MockModel(ModelInfo(provider="mock", id=model_id, api="mock"))
    if provider == "replay":
        return _replay_model(model_id)
    endpoint = merged.get(provider)
    if endpoint is None:
        raise ConfigError(f"unknown provider {provider!r} in model spec {spec!r}; valid providers: "
                          f"{', '.join(provider_names(endpoints))} (add others as [endpoints.NAME] in config)")
    return _http_model(endpoint, model_id, env)


def _http_model(endpoint: EndpointConfig, model_id: str, env: Mapping[str, str]) -> Model:
    base_url = endpoint.base_url
    if endpoint.base_url_env and env.get(endpoint.base_url_env):
        base_url = env[endpoint.base_url_env].rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{endpoint.base_url_env} must be an http:// or https:// URL, got {base_url!r}")
    api_key = env.get(endpoint.api_key_env) if endpoint.api_key_env else None
    info = model_info(endpoint, model_id)
    if endpoint.api_key_env and not api_key:
        raise ConfigError(f"no API key for {info.spec}: set {endpoint.api_key_env}", provider=endpoint.name)
    limit_known = endpoint.max_output_tokens is not None or known_model(model_id) is not None
    return model_factory(endpoint.api).from_endpoint(endpoint, info, api_key=api_key, base_url=base_url,
                                                     limit_known=limit_known)


def _replay_model(path: str) -> Model:
    # The recording is a session file, which only the agent layer reads.
    raise ConfigError(f"replay:{path}: a replay model is built by the agent layer "
                      "(bot.agent.runtime.resolve_settings_model), which reads the recorded session")
