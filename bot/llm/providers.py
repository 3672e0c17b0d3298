"""The provider registry: which wire APIs opi speaks, and the class that speaks each.

Adding a provider that speaks a new API is one module with an `HttpModel` subclass (see
`bot/llm/http.py`: say where to send, which auth headers, how to encode the body and read the stream)
and one `register_api` line below. A provider that speaks an existing API (an OpenAI-compatible host) is
only an endpoint: a line in `bot.llm.models.BUILTIN_ENDPOINTS` or an `[endpoints.NAME]` table in the
config file.

Classes are named by import path and imported when a model is resolved, so that naming an API costs
nothing at startup (`opi --version` never imports a provider).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from bot.llm.errors import ConfigError

if TYPE_CHECKING:
    from bot.llm.base import Model, ModelInfo


class Endpoint(Protocol):
    """What a provider class reads from an endpoint's configuration (`bot.llm.models.EndpointConfig`)."""

    @property
    def api_key_env(self) -> str | None: ...

    @property
    def max_output_tokens(self) -> int | None: ...

    @property
    def max_tokens_field(self) -> str | None: ...


class ModelFactory(Protocol):
    """A provider class: `from_endpoint` builds a model for one endpoint and model id."""

    def from_endpoint(self, endpoint: Endpoint, info: ModelInfo, *, api_key: str | None, base_url: str,
                      limit_known: bool) -> Model: ...


_APIS: dict[str, str] = {}


def register_api(name: str, target: str) -> None:
    """Register the class for a wire API as "module:ClassName" (imported on first use)."""
    if ":" not in target:
        raise ValueError(f"provider class for API {name!r} must be given as 'module:ClassName', got {target!r}")
    _APIS[name] = target


def api_names() -> tuple[str, ...]:
    return tuple(_APIS)


def check_api(name: str) -> str:
    """`name` if it is a registered API; otherwise a ValueError naming the valid ones."""
    if name not in _APIS:
        raise ValueError(f"unknown api {name!r}: expected one of {', '.join(sorted(_APIS))}")
    return name


def model_factory(api: str) -> ModelFactory:
    try:
        module_name, _, class_name = _APIS[api].partition(":")
    except KeyError:
        raise ConfigError(f"unknown api {api!r}: expected one of {', '.join(sorted(_APIS))}") from None
    factory: ModelFactory = getattr(importlib.import_module(module_name), class_name)
    return factory


register_api("anthropic", "bot.llm.anthropic:AnthropicModel")
register_api("openai", "bot.llm.openai:OpenAIModel")
