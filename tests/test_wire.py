"""Request bodies built incrementally (bot/llm/wire.py): reusing the previous request's work never changes
what is sent, whatever the conversation does between two requests; tool schemas are compacted without
losing a parameter; and the provider registry builds a newly registered API from one registration."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bot.llm import providers
from bot.llm.base import ModelInfo, ModelRequest, ToolSpec
from bot.llm.errors import ConfigError
from bot.llm.http import HttpModel, prepare_history
from bot.llm.messages import (
    AssistantMessage,
    ImageContent,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from bot.llm.models import EndpointConfig, resolve_model
from bot.llm.openai import OpenAIModel
from bot.llm.wire import IdentityCache, compact_schema
from tests.fake_llm import FakeLLMServer, Reply
from tests.provider_support import READ_TOOL, run

DIALECTS = ["anthropic", "openai"]


def fresh_model(dialect: str) -> HttpModel:
    return resolve_model({"anthropic": "anthropic:claude-sonnet-4-5", "openai": "openai:gpt-4o"}[dialect],
                         env={"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"})  # type: ignore[return-value]


def assistant(*content: Any, api: str = "anthropic", stop_reason: Any = "tool_use") -> AssistantMessage:
    return AssistantMessage(content=list(content), provider="p", model="m", api=api, stop_reason=stop_reason)


def result(call_id: str, *content: Any, name: str = "read") -> ToolResultMessage:
    return ToolResultMessage(tool_call_id=call_id, tool_name=name, content=list(content) or [TextContent(text="ok")])


def tricky_conversation() -> list[Message]:
    """Every shape the clean-up and the merging rules care about, in the order an agent produces them."""
    return [
        UserMessage(content="go"),
        assistant(ThinkingContent(thinking="hmm", signature="S"), ToolCall(id="a", name="read", arguments={}),
                  ToolCall(id="b", name="ls", arguments={"path": "."})),
        result("a", TextContent(text="A")),
        result("b", ImageContent(data="QUJD", mime_type="image/png"), name="ls"),
        assistant(stop_reason="error"),  # failed with nothing usable: dropped
        result("ghost", TextContent(text="orphan")),  # no call before it: dropped
        UserMessage(content=[TextContent(text="look"), ImageContent(data="REVG", mime_type="image/jpeg")]),
        assistant(TextContent(text="calling"), ToolCall(id="c", name="bash", arguments={"command": "ls"})),
        # the result of c never arrives (interrupted): a synthesized error result stands in
        UserMessage(content="and now?"),
        assistant(ToolCall(id="d", name="read", arguments={"path": "x"})),
        result("d", TextContent(text="")),
        assistant(TextContent(text="done"), stop_reason="stop"),
        UserMessage(content="thanks"),
    ]


def body(model: HttpModel, messages: list[Message]) -> dict[str, Any]:
    return model.build_body(ModelRequest(system="SYS", messages=messages, tools=[READ_TOOL]))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_growing_conversation_is_sent_exactly_as_a_fresh_conversion_would_send_it(dialect: str) -> None:
    reused = fresh_model(dialect)
    conversation = tricky_conversation()
    for end in range(1, len(conversation) + 1):
        assert body(reused, conversation[:end]) == body(fresh_model(dialect), conversation[:end]), end


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_conversation_that_changed_between_requests_is_converted_again(dialect: str) -> None:
    # A branch switch, a compaction or a fork replaces earlier messages: the previous request's work
    # must not leak into the new one.
    reused = fresh_model(dialect)
    conversation = tricky_conversation()
    body(reused, conversation)
    branched = [*conversation[:3], UserMessage(content="a different path")]
    assert body(reused, branched) == body(fresh_model(dialect), branched)
    compacted = [UserMessage(content="summary of earlier work"), *conversation[7:]]
    assert body(reused, compacted) == body(fresh_model(dialect), compacted)
    assert body(reused, conversation) == body(fresh_model(dialect), conversation)  # and back again


@pytest.mark.parametrize("dialect", DIALECTS)
def test_retrying_the_same_request_sends_the_same_bytes(dialect: str) -> None:
    model = fresh_model(dialect)
    request = ModelRequest(system="SYS", messages=tricky_conversation(), tools=[READ_TOOL])
    assert model.encode_body(request) == model.encode_body(request)


def test_anthropic_marks_only_the_newest_block_for_the_cache_on_every_request() -> None:
    model = fresh_model("anthropic")
    conversation = tricky_conversation()
    for end in range(1, len(conversation) + 1):
        sent = body(model, conversation[:end])
        marked = [block for message in sent["messages"] for block in message["content"] if "cache_control" in block]
        assert marked == [sent["messages"][-1]["content"][-1]]
        assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_incremental_clean_up_follows_prepare_history() -> None:
    conversation = tricky_conversation()
    prepared = prepare_history(conversation)
    kinds = [(m.role, getattr(m, "tool_call_id", None)) for m in prepared]
    assert ("tool_result", "ghost") not in kinds
    assert ("tool_result", "c") in kinds  # synthesized
    openai_roles = [m["role"] for m in body(fresh_model("openai"), conversation)["messages"]]
    assert openai_roles.count("tool") == sum(1 for m in prepared if m.role == "tool_result")


def test_identity_cache_forgets_an_object_when_it_is_freed() -> None:
    cache: IdentityCache[str] = IdentityCache()
    message = UserMessage(content="x")
    assert cache.get(message, lambda m: m.content) == "x"
    assert cache.get(message, lambda m: "rebuilt") == "x"
    del message
    assert len(cache) == 0
    equal_but_new = UserMessage(content="x")
    assert cache.get(equal_but_new, lambda m: "rebuilt") == "rebuilt"


# -- tool schemas --------------------------------------------------------------------------------------
def test_compact_schema_drops_titles_and_null_options_but_keeps_every_parameter() -> None:
    schema = {
        "title": "Params", "type": "object", "additionalProperties": False,
        "properties": {
            # a parameter literally named "title" is a parameter, not an annotation
            "title": {"title": "Title", "type": "string", "description": "the title"},
            "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None,
                      "title": "Limit", "description": "max"},
            "mode": {"anyOf": [{"type": "string"}, {"type": "integer"}], "title": "Mode"},
            "tags": {"type": "array", "items": {"title": "Tag", "type": "string"}, "default": ["a"]},
        },
        "required": ["title"],
    }
    assert compact_schema(schema) == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "the title"},
            "limit": {"type": "integer", "minimum": 1, "description": "max"},
            "mode": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
        },
        "required": ["title"],
    }


def test_every_real_tool_keeps_its_parameters_on_the_wire() -> None:
    from bot.tools.registry import TOOL_CLASSES

    for tool in (cls() for cls in TOOL_CLASSES.values()):
        full, compact = tool.schema(), compact_schema(tool.schema())
        assert set(compact["properties"]) == set(full["properties"]), tool.name
        assert compact.get("required") == full.get("required"), tool.name
        assert all(prop.get("description") for prop in compact["properties"].values()), tool.name
        assert '"title"' not in json.dumps(compact), tool.name  # no tool has a parameter named title


# -- the provider registry --------------------------------------------------------------------------
class EchoCompatibleModel(OpenAIModel):
    """A provider registered by a test: an OpenAI-compatible wire with its own auth header."""

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-echo-key": api_key}


def test_a_registered_api_is_one_line_and_is_resolved_like_the_built_in_ones(
        fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "_APIS", dict(providers._APIS))
    providers.register_api("echo", f"{__name__}:EchoCompatibleModel")
    endpoint = EndpointConfig(base_url=fake_llm.openai_base_url, api="echo", api_key_env="ECHO_KEY")
    model = resolve_model("mine:echo-1", endpoints={"mine": endpoint}, env={"ECHO_KEY": "secret"})
    assert isinstance(model, EchoCompatibleModel)
    fake_llm.enqueue(Reply(text="hello"))
    _, message = run(model, ModelRequest(system="S", messages=[UserMessage(content="hi")]))
    assert message.text == "hello"
    assert fake_llm.requests[0].headers["x-echo-key"] == "secret"
    with pytest.raises(ConfigError, match="set ECHO_KEY"):
        resolve_model("mine:echo-1", endpoints={"mine": endpoint}, env={})


def test_an_unknown_api_names_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown api 'gemini': expected one of anthropic, openai"):
        EndpointConfig(base_url="https://example.com", api="gemini")


def test_a_registration_must_name_module_and_class() -> None:
    with pytest.raises(ValueError, match="module:ClassName"):
        providers.register_api("broken", "just_a_module")


# -- start-up ---------------------------------------------------------------------------------------
def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_version_is_answered_without_importing_the_cli() -> None:
    out = run_python("import sys; sys.argv[1:] = ['--version']; import bot.launcher as launcher; "
                     "launcher.main(); print(sorted(m for m in sys.modules if m.startswith('bot.')))")
    assert out.splitlines()[0].startswith("opi ")
    assert out.splitlines()[1] == "['bot.launcher']"


def test_the_launcher_exits_with_the_commands_code_and_flushed_output(tmp_path: Any) -> None:
    done = subprocess.run([sys.executable, "-m", "bot", "--no-such-flag"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "--no-such-flag" in done.stderr
    done = subprocess.run([sys.executable, "-m", "bot", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("opi ")


def test_pricing_a_catalogued_model_does_not_import_genai_prices() -> None:
    out = run_python("import sys; from bot.llm.pricing import compute_cost; from bot.llm.messages import Usage; "
                     "cost = compute_cost('anthropic', 'claude-sonnet-4-5', Usage(input=1000, output=100)); "
                     "print(cost.total, 'genai_prices' in sys.modules)")
    total, imported = out.split()
    assert float(total) > 0 and imported == "False"


def test_tool_specs_on_the_wire_are_encoded_once_per_tool_set() -> None:
    model = fresh_model("anthropic")
    tools = [ToolSpec("read", "Read", {"type": "object", "properties": {}})]
    first = model.encode_body(ModelRequest(system="S", messages=[UserMessage(content="a")], tools=tools))
    tools[0] = ToolSpec("read", "Read a file, changed", {"type": "object", "properties": {}})
    second = model.encode_body(ModelRequest(system="S", messages=[UserMessage(content="a")], tools=tools))
    assert b"Read a file, changed" in second and b"changed" not in first
    assert isinstance(model.info, ModelInfo)


def test_the_client_without_certificates_is_only_for_plain_http_without_a_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.llm.http import shared_client

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    verifying = shared_client("https://api.anthropic.com/v1/messages")
    assert shared_client("http://127.0.0.1:8080/v1/messages") is not verifying
    assert shared_client(None) is verifying
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert shared_client("http://127.0.0.1:8080/v1/messages") is verifying  # the proxy settings apply
