"""The OpenAI Chat Completions provider against the scripted server over real sockets."""

from __future__ import annotations

import pytest

from bot.llm.base import (
    ModelInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from bot.llm.errors import (
    AuthError,
    BadRequestError,
    ConfigError,
    MalformedEventError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
)
from bot.llm.http import MISSING_RESULT_TEXT
from bot.llm.messages import (
    AssistantMessage,
    ImageContent,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from bot.llm.models import EndpointConfig, resolve_model
from bot.llm.openai import OpenAIModel, convert_messages
from tests.fake_llm import ErrorReply, FakeLLMServer, RawReply, Reply, StreamErrorReply
from tests.provider_support import READ_TOOL, request, run


def model_for(server: FakeLLMServer, model: str = "gpt-4o") -> OpenAIModel:
    resolved = resolve_model(f"openai:{model}", env=server.env())
    assert isinstance(resolved, OpenAIModel)
    return resolved


def sse(*chunks: str) -> bytes:
    return b"".join(f"data: {chunk}\n\n".encode() for chunk in chunks)


@pytest.mark.parametrize("field_name", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_become_thinking(fake_llm: FakeLLMServer, field_name: str) -> None:
    fake_llm.enqueue(Reply(text="answer", thinking="step by step", openai_reasoning_field=field_name))
    deltas, message = run(model_for(fake_llm), request())
    assert "".join(d.delta for d in deltas if isinstance(d, ThinkingDelta)) == "step by step"
    thinking, text = message.content
    assert isinstance(thinking, ThinkingContent) and thinking.thinking == "step by step"
    assert isinstance(text, TextContent) and text.text == "answer"
    assert {d.index for d in deltas if isinstance(d, TextDelta)} == {1}


def test_multiple_tool_calls_by_index(fake_llm: FakeLLMServer) -> None:
    calls = [("c1", "read", {"path": "a"}), ("c2", "ls", {}), ("c3", "read", {"path": "c"})]
    fake_llm.enqueue(Reply(text="Looking.", tool_calls=calls))
    deltas, message = run(model_for(fake_llm), request())
    assert [(c.id, c.name, c.arguments) for c in message.tool_calls] == calls
    assert sorted({d.index for d in deltas if isinstance(d, ToolCallDelta)}) == [1, 2, 3]


def test_interleaved_tool_call_chunks_and_object_arguments(fake_llm: FakeLLMServer) -> None:
    base = '{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    fake_llm.enqueue(RawReply(sse(
        base % ('{"tool_calls":[{"index":0,"id":"a","function":{"name":"read","arguments":"{\\"pa"}},'
                '{"index":1,"id":"b","function":{"name":"ls","arguments":{"path":"."}}}]}', "null"),
        base % ('{"tool_calls":[{"index":0,"function":{"arguments":"th\\": 1}"}}]}', "null"),
        base % ("{}", '"stop"'),  # some servers say "stop" even with tool calls
        "[DONE]",
    )))
    _, message = run(model_for(fake_llm), request())
    assert [(c.id, c.arguments) for c in message.tool_calls] == [("a", {"path": 1}), ("b", {"path": "."})]
    assert message.stop_reason == "tool_use"


def test_usage_with_cached_tokens_and_cost(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="ok", usage=Usage(input=1000, output=500, cache_read=4000)))
    _, message = run(model_for(fake_llm), request())
    assert message.usage == Usage(input=1000, output=500, cache_read=4000)
    # gpt-4o: $2.50 in, $10 out, $1.25 cached per million tokens.
    assert message.cost.input == pytest.approx(0.0025)
    assert message.cost.output == pytest.approx(0.005)
    assert message.cost.cache_read == pytest.approx(0.005)
    assert message.cost.cache_write == 0.0
    assert message.cost.total == pytest.approx(0.0125)


def test_deepseek_cache_hit_field(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(sse(
        '{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}',
        '{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":3,"prompt_cache_hit_tokens":60}}',
        "[DONE]",
    )))
    _, message = run(model_for(fake_llm), request())
    assert message.usage == Usage(input=40, output=3, cache_read=60)


def test_missing_usage_means_unknown_cost_not_zero(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(sse('{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}')))
    _, message = run(model_for(fake_llm), request())  # finish_reason but no [DONE]: still complete
    assert message.text == "hi"
    assert message.cost.total is None


def test_request_body_and_headers(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    run(model_for(fake_llm), request(tools=[READ_TOOL], system="SYS", thinking="high"))
    sent = fake_llm.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer test-key"
    body = sent.body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}]
    assert body["tools"] == [{"type": "function", "function": {"name": "read", "description": "Read a file",
                                                              "parameters": READ_TOOL.parameters}}]
    assert body["max_tokens"] == 16_384
    assert "reasoning_effort" not in body  # gpt-4o does not reason


def test_reasoning_effort_for_reasoning_models(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue_many([Reply(text="a"), Reply(text="b")])
    model = model_for(fake_llm, "o4-mini")
    run(model, request(thinking="medium"))
    run(model, request())
    assert fake_llm.requests[0].body["reasoning_effort"] == "medium"
    assert "reasoning_effort" not in fake_llm.requests[1].body


def test_max_tokens_field_by_host() -> None:
    info = ModelInfo(provider="openai", id="o3", api="openai", max_output_tokens=100_000, reasoning=True)
    official = OpenAIModel(info, api_key="k").build_body(request())
    assert official["max_completion_tokens"] == 100_000 and "max_tokens" not in official
    compatible = OpenAIModel(info, api_key="k", base_url="http://localhost:8000/v1").build_body(request())
    assert compatible["max_tokens"] == 100_000


def test_unknown_model_on_compatible_endpoint_sends_no_output_limit(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue_many([Reply(text="a"), Reply(text="b")])
    endpoints = {"local": EndpointConfig(base_url=fake_llm.openai_base_url)}
    model = resolve_model("local:qwen3-coder:30b", endpoints=endpoints, env={})
    assert isinstance(model, OpenAIModel)
    run(model, request())
    assert "max_tokens" not in fake_llm.requests[0].body
    assert "authorization" not in fake_llm.requests[0].headers
    run(model, request(max_output_tokens=2000))
    assert fake_llm.requests[1].body["max_tokens"] == 2000
    assert fake_llm.requests[1].body["model"] == "qwen3-coder:30b"


def test_missing_key_names_the_env_var() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_model("openai:gpt-4o", env={})
    with pytest.raises(ConfigError, match="GROQ_API_KEY"):
        resolve_model("groq:llama-3.3-70b-versatile", env={})


def test_auth_error_names_provider_status_and_message(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(ErrorReply(401, "Incorrect API key provided: sk-...abc.", error_type="invalid_api_key"))
    with pytest.raises(AuthError) as caught:
        run(model_for(fake_llm), request())
    assert str(caught.value) == "openai HTTP 401: Incorrect API key provided: sk-...abc. (invalid_api_key)"


def test_error_inside_the_stream(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(StreamErrorReply(error_type="server_error", message="upstream died", text_before="par"))
    with pytest.raises(ServerError, match="upstream died"):
        run(model_for(fake_llm), request())


def test_malformed_chunk_is_a_clear_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(sse('{"choices":[{"index":0,"delta":{"content":"hi"}', "[DONE]")))
    with pytest.raises(MalformedEventError, match="invalid JSON in stream chunk"):
        run(model_for(fake_llm), request())


def test_invalid_tool_arguments_are_a_clear_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(sse(
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":'
        '{"name":"edit","arguments":"{\\"path\\": "}}]},"finish_reason":"tool_calls"}]}', "[DONE]")))
    with pytest.raises(MalformedEventError, match="tool call 'edit' has invalid JSON arguments"):
        run(model_for(fake_llm), request())


def test_done_without_finish_reason_is_interrupted(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(sse('{"choices":[{"index":0,"delta":{"content":"hi"}}]}', "[DONE]")))
    with pytest.raises(StreamInterrupted, match="without a finish_reason"):
        run(model_for(fake_llm), request())


def test_non_sse_200_is_a_clear_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(b"<html>proxy login</html>", content_type="text/html"))
    with pytest.raises(MalformedEventError, match="expected an event stream, got text/html"):
        run(model_for(fake_llm), request())


def test_content_filter_and_length(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue_many([Reply(text="partial", stop_reason="content_filter"),
                           Reply(text="truncated", stop_reason="length")])
    _, filtered = run(model_for(fake_llm), request())
    assert filtered.stop_reason == "error" and "content filter" in (filtered.error_message or "")
    _, cut = run(model_for(fake_llm), request())
    assert cut.stop_reason == "length" and cut.text == "truncated"






# -- message conversion ---------------------------------------------------------------------------------------
def test_conversion_of_a_tool_using_conversation() -> None:
    history: list[Message] = [
        UserMessage(content=[TextContent(text="look"), ImageContent(data="QUJD", mime_type="image/png")]),
        AssistantMessage(content=[ThinkingContent(thinking="hidden"), TextContent(text="Sure."),
                                  ToolCall(id="c1", name="read", arguments={"path": "a"}),
                                  ToolCall(id="c2", name="shot", arguments={})],
                         provider="openai", model="m", api="openai", stop_reason="tool_use"),
        ToolResultMessage(tool_call_id="c2", tool_name="shot",
                          content=[TextContent(text="png:"), ImageContent(data="REVG", mime_type="image/png")]),
        AssistantMessage(content=[], provider="openai", model="m", api="openai", stop_reason="aborted"),
        UserMessage(content="next"),
    ]
    wire = convert_messages("SYS", history)
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "tool", "tool", "user", "user"]
    assert wire[1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}
    assert wire[2] == {"role": "assistant", "content": "Sure.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"path": "a"}'}},
        {"id": "c2", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]}
    assert wire[3]["tool_call_id"] == "c2" and wire[3]["content"].startswith("png:")
    assert wire[4] == {"role": "tool", "tool_call_id": "c1", "content": MISSING_RESULT_TEXT}
    assert wire[5]["content"][1]["image_url"]["url"] == "data:image/png;base64,REVG"
    assert wire[6] == {"role": "user", "content": "next"}


def test_json_error_envelope_with_status_200(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(b'{"error": {"message": "upstream rate limited", "type": "rate_limit_error"}}',
                              content_type="application/json"))
    with pytest.raises(RateLimitError, match="upstream rate limited"):
        run(model_for(fake_llm), request())


def test_connection_dropped_after_done_loses_nothing(fake_llm: FakeLLMServer) -> None:
    # 5 events: role chunk, content, finish, usage, [DONE]; then the connection closes mid-body.
    fake_llm.enqueue(Reply(text="ok", chunks=1, cut_after=5))
    _, message = run(model_for(fake_llm), request())
    assert message.text == "ok" and message.cost.total is not None


def test_redirect_is_reported_not_followed(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(ErrorReply(301, "moved", headers={"location": "https://elsewhere.example/v1"}))
    with pytest.raises(BadRequestError, match=r"redirects to https://elsewhere\.example/v1") as caught:
        run(model_for(fake_llm), request())
    assert caught.value.status == 301
