"""Model specs, endpoints and model limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.llm.anthropic import AnthropicModel
from bot.llm.base import ModelRequest
from bot.llm.errors import ConfigError
from bot.llm.mock import MockModel
from bot.llm.models import (
    BUILTIN_ENDPOINTS,
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_OUTPUT_TOKENS,
    EndpointConfig,
    known_model,
    parse_spec,
    provider_names,
    resolve_model,
)
from bot.llm.openai import OpenAIModel
from bot.llm.retry import RetryPolicy, complete

KEYS = {"ANTHROPIC_API_KEY": "a-key", "OPENAI_API_KEY": "o-key", "OPENROUTER_API_KEY": "r-key",
        "GROQ_API_KEY": "g-key", "DEEPSEEK_API_KEY": "d-key"}


def test_parse_spec_splits_at_the_first_colon() -> None:
    assert parse_spec("anthropic:claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    assert parse_spec("ollama:llama3.1:8b") == ("ollama", "llama3.1:8b")
    assert parse_spec(" OpenAI:gpt-4o ") == ("openai", "gpt-4o")


@pytest.mark.parametrize(("spec", "hint"), [
    ("claude-sonnet", "anthropic:claude-sonnet-4-5"),  # bare real ids and aliases resolve (bot/llm/catalog.py)
    ("gpt4o", "openai:gpt-4o"),
    ("anthropic:", "PROVIDER:MODEL"),
    (":gpt-4o", "PROVIDER:MODEL"),
    ("", "PROVIDER:MODEL"),
])
def test_bad_specs_say_what_is_expected(spec: str, hint: str) -> None:
    with pytest.raises(ConfigError, match="invalid model spec") as caught:
        parse_spec(spec)
    assert hint in str(caught.value)


def test_unknown_provider_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_model("nowhere:model-x", env=KEYS)
    message = str(caught.value)
    for name in ("anthropic", "openai", "openrouter", "groq", "deepseek", "ollama", "mock", "replay"):
        assert name in message
    assert "[endpoints.NAME]" in message


def test_builtin_providers_and_env_base_urls() -> None:
    env = {**KEYS, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    anthropic = resolve_model("anthropic:claude-sonnet-4-5", env=env)
    assert isinstance(anthropic, AnthropicModel)
    assert anthropic.url == "http://127.0.0.1:9/v1/messages"
    assert anthropic.api_key == "a-key"
    openai = resolve_model("openai:gpt-4o", env=env)
    assert isinstance(openai, OpenAIModel)
    assert openai.url == "http://127.0.0.1:9/v1/chat/completions"
    default = resolve_model("openai:gpt-4o", env=KEYS)
    assert isinstance(default, OpenAIModel)
    assert default.url == "https://api.openai.com/v1/chat/completions"
    assert default.max_tokens_field == "max_completion_tokens"


@pytest.mark.parametrize(("name", "url"), [
    ("openrouter", "https://openrouter.ai/api/v1/chat/completions"),
    ("groq", "https://api.groq.com/openai/v1/chat/completions"),
    ("deepseek", "https://api.deepseek.com/v1/chat/completions"),
    ("ollama", "http://localhost:11434/v1/chat/completions"),
])
def test_presets(name: str, url: str) -> None:
    model = resolve_model(f"{name}:some/model", env=KEYS)
    assert isinstance(model, OpenAIModel)
    assert model.url == url
    assert model.info.provider == name and model.info.id == "some/model"
    assert model.max_tokens_field == "max_tokens"


def test_ollama_needs_no_key() -> None:
    model = resolve_model("ollama:qwen2.5-coder", env={})
    assert isinstance(model, OpenAIModel)
    assert "authorization" not in model.headers()


def test_configured_endpoint_and_overriding_a_preset() -> None:
    endpoints = {
        "together": EndpointConfig(base_url="https://api.together.xyz/v1/", api_key_env="TOGETHER_API_KEY",
                                   context_window=32_000, max_output_tokens=4_000),
        "ollama": EndpointConfig(base_url="http://gpu-box:11434/v1"),
        "corp": EndpointConfig(base_url="https://llm.corp.example", api_key_env="CORP_KEY", api="anthropic"),
    }
    together = resolve_model("together:meta/llama-3", endpoints=endpoints, env={"TOGETHER_API_KEY": "t"})
    assert isinstance(together, OpenAIModel)
    assert together.url == "https://api.together.xyz/v1/chat/completions"
    assert (together.info.context_window, together.info.max_output_tokens) == (32_000, 4_000)
    assert together.send_max_tokens
    ollama = resolve_model("ollama:llama3", endpoints=endpoints, env={})
    assert isinstance(ollama, OpenAIModel) and ollama.url.startswith("http://gpu-box:11434/")
    corp = resolve_model("corp:claude-opus-4-5", endpoints=endpoints, env={"CORP_KEY": "c"})
    assert isinstance(corp, AnthropicModel) and corp.info.provider == "corp"
    with pytest.raises(ConfigError, match="TOGETHER_API_KEY"):
        resolve_model("together:x", endpoints=endpoints, env={})
    assert "together" in provider_names(endpoints)


def test_endpoint_config_validation() -> None:
    with pytest.raises(ValidationError, match="base_url must start with http"):
        EndpointConfig(base_url="api.example.com")
    with pytest.raises(ValidationError, match="api"):
        EndpointConfig.model_validate({"base_url": "https://x", "api": "gemini"})
    with pytest.raises(ValidationError, match="api_key_name"):
        EndpointConfig.model_validate({"base_url": "https://x", "api_key_name": "X"})  # a typo is reported
    with pytest.raises(ConfigError, match="reserved"):
        resolve_model("mock:x", endpoints={"mock": EndpointConfig(base_url="https://x")})


def test_bad_base_url_env_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_BASE_URL"):
        resolve_model("anthropic:claude-sonnet-4-5", env={**KEYS, "ANTHROPIC_BASE_URL": "localhost:8080"})


def test_known_model_limits() -> None:
    sonnet = resolve_model("anthropic:claude-sonnet-4-5-20250929", env=KEYS).info
    assert (sonnet.context_window, sonnet.max_output_tokens, sonnet.reasoning) == (200_000, 64_000, True)
    haiku35 = resolve_model("anthropic:claude-3-5-haiku-latest", env=KEYS).info
    assert (haiku35.max_output_tokens, haiku35.reasoning) == (8_192, False)
    routed = resolve_model("openrouter:anthropic/claude-sonnet-4.5", env=KEYS).info
    assert routed.context_window == 200_000
    mini = known_model("gpt-4o-mini-2024-07-18")
    assert mini is not None and mini.max_output_tokens == 16_384
    assert known_model("gpt-4.1-mini") == known_model("gpt-4-1")
    assert known_model("o3-mini") is not None and known_model("o3-mini").reasoning  # type: ignore[union-attr]
    assert known_model("o30") is None


def test_unknown_model_defaults() -> None:
    info = resolve_model("openai:brand-new-model", env=KEYS).info
    assert (info.context_window, info.max_output_tokens, info.reasoning) == (
        DEFAULT_CONTEXT_WINDOW, DEFAULT_MAX_OUTPUT_TOKENS, False)
    claude = resolve_model("anthropic:claude-future-9", env=KEYS).info
    assert claude.context_window == 200_000 and claude.reasoning


def test_mock_and_thinking_validation() -> None:
    mock = resolve_model("mock:scripted", env={})
    assert isinstance(mock, MockModel) and mock.info.id == "scripted"
    with pytest.raises(ConfigError, match="invalid thinking level 'max'"):
        resolve_model("mock:x", thinking="max")


def test_replay_spec_uses_the_replay_model(tmp_path: Path) -> None:
    from bot.agent.config import Settings
    from bot.agent.runtime import resolve_settings_model
    from bot.agent.session import Session
    from bot.llm.messages import AssistantMessage, TextContent, UserMessage
    from bot.llm.replay import ReplayModel

    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match="not found") as caught:
        resolve_settings_model(Settings(model=f"replay:{missing}"), {})
    assert str(missing) in str(caught.value)
    recorded = Session.create(tmp_path / "rec.jsonl", cwd=tmp_path, model="anthropic:claude-sonnet-4-5")
    recorded.append_message(UserMessage(content="hi"))
    recorded.append_message(AssistantMessage(content=[TextContent(text="hello")], provider="anthropic",
                                             model="claude-sonnet-4-5", api="anthropic"))
    recorded.close()
    model = resolve_settings_model(Settings(model=f"replay:{tmp_path / 'rec.jsonl'}"), {}, workspace=tmp_path)
    assert isinstance(model, ReplayModel) and model.workspace == tmp_path
    assert (model.info.provider, model.info.id, model.remaining) == ("replay", "anthropic:claude-sonnet-4-5", 1)
    # It answers with the recorded message, free, and then has nothing left to replay.
    reply = complete(model, ModelRequest(system="s", messages=[UserMessage(content="hi")]), RetryPolicy())
    assert (reply.text, reply.provider, reply.api, reply.cost.total) == ("hello", "replay", "replay", 0.0)
    assert (model.replayed, model.remaining) == (1, 0)
    # The model layer never reads the file itself.
    with pytest.raises(ConfigError, match="agent layer"):
        resolve_model(f"replay:{tmp_path / 'rec.jsonl'}", env={})


def test_builtin_endpoints_are_named() -> None:
    assert all(endpoint.name == name for name, endpoint in BUILTIN_ENDPOINTS.items())
