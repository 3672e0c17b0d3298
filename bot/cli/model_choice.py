"""Which model a CLI run uses: a resumed session continues with the model it last used (a `/model` switch
included) unless `--model` says otherwise, in print mode as in the REPL.

When the recorded model cannot be built here (its key is not set, its endpoint is not configured), the
configured one is used and a note says so. `UnavailableModel` lets the REPL open a session whose model
cannot be built at all (no key for anything): the conversation is shown, and a turn ends with the
configuration error until a key is set or `/model` picks another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from bot.agent.config import Settings
from bot.agent.runtime import SessionHandle, resolve_settings_model
from bot.llm.base import Model, ModelInfo, ModelRequest, StreamEvent
from bot.llm.errors import ConfigError, ModelError
from bot.llm.models import parse_spec

# Recorded providers that name no real endpoint: a replayed or mocked session continues with the
# configured model.
NOT_RESUMABLE_PROVIDERS = ("mock", "replay")


@dataclass
class ModelChoice:
    settings: Settings  # with `model` set to the spec actually used
    model: Model | None  # None: build the configured one
    notes: list[str] = field(default_factory=list)


def recorded_model(settings: Settings, handle: SessionHandle, *, explicit_model: bool,
                   env: Mapping[str, str] | None = None) -> ModelChoice:
    env = os.environ if env is None else env
    session = handle.session
    current = session.current_model() if session is not None and session.entries else None
    if explicit_model or not current or not all(current) or current[0] in NOT_RESUMABLE_PROVIDERS:
        return ModelChoice(settings, None)
    spec = f"{current[0]}:{current[1]}"
    if _same_model(spec, settings.model):
        return ModelChoice(settings, None)
    candidate = settings.model_copy(update={"model": spec})
    try:
        model = resolve_settings_model(candidate, env)
    except (ModelError, ValueError) as exc:
        return ModelChoice(settings, None, [f"the session used {spec}, which is not available here ({exc}); "
                                            f"continuing with {settings.model}"])
    return ModelChoice(candidate, model)


def _same_model(spec: str, configured: str) -> bool:
    try:
        return parse_spec(spec) == parse_spec(configured)  # `sonnet` is anthropic:claude-sonnet-4-5
    except ConfigError:
        return False


@dataclass
class UnavailableModel:
    """Stands in for a model that cannot be built; every request fails with the reason."""

    info: ModelInfo
    error: ConfigError

    @staticmethod
    def for_spec(spec: str, error: ConfigError) -> UnavailableModel:
        try:
            provider, model_id = parse_spec(spec)
        except ConfigError:
            provider, model_id = "unavailable", spec
        return UnavailableModel(ModelInfo(provider=provider, id=model_id, api="mock"), error)

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        raise ConfigError(f"{self.error.detail}; or switch with /model PROVIDER:MODEL",
                          provider=self.error.provider)
