"""The Anthropic provider against the scripted server over real sockets."""

from __future__ import annotations

from typing import Any

import pytest

from bot.llm.anthropic import THINKING_BUDGETS, AnthropicModel, convert_messages, thinking_params
from bot.llm.base import (
    ModelInfo,
    TextDelta,
    ThinkingDelta,
)
from bot.llm.errors import ConfigError, MalformedEventError, OverloadedError
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
from bot.llm.models import resolve_model
from tests.fake_llm import FakeLLMServer, RawReply, Reply, StreamErrorReply
from tests.provider_support import READ_TOOL, request, run


def model_for(server: FakeLLMServer, model: str = "claude-sonnet-4-5") -> AnthropicModel:
    resolved = resolve_model(f"anthropic:{model}", env=server.env())
    assert isinstance(resolved, AnthropicModel)
    return resolved


def assistant(*content: TextContent | ThinkingContent | ToolCall, api: str = "anthropic",
              stop_reason: Any = "stop") -> AssistantMessage:
    return AssistantMessage(content=list(content), provider="anthropic", model="m", api=api,
                            stop_reason=stop_reason)


def test_thinking_with_signature_and_redacted_block(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="answer", thinking="let me think", thinking_signature="SIG123",
                           redacted_thinking="OPAQUE"))
    deltas, message = run(model_for(fake_llm), request(thinking="medium"))
    assert "".join(d.delta for d in deltas if isinstance(d, ThinkingDelta)) == "let me think"
    redacted, thinking, text = message.content
    assert isinstance(redacted, ThinkingContent) and redacted.redacted and redacted.signature == "OPAQUE"
    assert isinstance(thinking, ThinkingContent) and thinking.thinking == "let me think"
    assert thinking.signature == "SIG123"
    assert isinstance(text, TextContent) and text.text == "answer"
    # The deltas' indexes are the blocks' positions in the final message.
    assert {d.index for d in deltas if isinstance(d, ThinkingDelta)} == {1}
    assert {d.index for d in deltas if isinstance(d, TextDelta)} == {2}


def test_multiple_tool_calls_keep_order(fake_llm: FakeLLMServer) -> None:
    calls = [("t1", "read", {"path": "a"}), ("t2", "ls", {}), ("t3", "read", {"path": "c"})]
    fake_llm.enqueue(Reply(tool_calls=calls))
    _, message = run(model_for(fake_llm), request())
    assert [(c.id, c.name, c.arguments) for c in message.tool_calls] == calls


def test_usage_with_cache_and_cost(fake_llm: FakeLLMServer) -> None:
    usage = Usage(input=1000, output=500, cache_read=20_000, cache_write=3000)
    fake_llm.enqueue(Reply(text="ok", usage=usage))
    _, message = run(model_for(fake_llm), request())
    assert message.usage == usage
    cost = message.cost
    # claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million tokens.
    assert cost.input == pytest.approx(0.003)
    assert cost.output == pytest.approx(0.0075)
    assert cost.cache_read == pytest.approx(0.006)
    assert cost.cache_write == pytest.approx(0.01125)
    assert cost.total == pytest.approx(0.003 + 0.0075 + 0.006 + 0.01125)


def test_request_body_headers_and_cache_breakpoints(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    history: list[Message] = [
        UserMessage(content="read a"),
        assistant(TextContent(text="ok"), ToolCall(id="t1", name="read", arguments={"path": "a"}),
                  stop_reason="tool_use"),
        ToolResultMessage(tool_call_id="t1", tool_name="read", content=[TextContent(text="A")]),
    ]
    run(model_for(fake_llm), request(*history, tools=[READ_TOOL], system="SYS"))
    sent = fake_llm.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "test-key"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.body
    assert body["stream"] is True and body["model"] == "claude-sonnet-4-5"
    assert body["system"] == [{"type": "text", "text": "SYS", "cache_control": {"type": "ephemeral"}}]
    assert body["tools"] == [{"name": "read", "description": "Read a file", "input_schema": READ_TOOL.parameters}]
    assert "thinking" not in body
    last_block = body["messages"][-1]["content"][-1]
    assert last_block["type"] == "tool_result" and last_block["cache_control"] == {"type": "ephemeral"}
    marked = [b for m in body["messages"] for b in m["content"] if "cache_control" in b]
    assert marked == [last_block]


@pytest.mark.parametrize("level", ["low", "medium", "high"])
def test_thinking_budget_in_request(fake_llm: FakeLLMServer, level: Any) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    run(model_for(fake_llm), request(thinking=level, max_output_tokens=4000))
    body = fake_llm.requests[0].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": THINKING_BUDGETS[level]}
    assert body["max_tokens"] == 4000 + THINKING_BUDGETS[level]


def test_thinking_budget_fits_a_small_output_limit() -> None:
    info = ModelInfo(provider="anthropic", id="m", api="anthropic", max_output_tokens=8192, reasoning=True)
    params = thinking_params("high", 8192, info)
    assert params is not None
    max_tokens, thinking = params
    assert max_tokens == 8192 and thinking["budget_tokens"] < max_tokens
    assert thinking_params("off", 8192, info) is None
    no_room = ModelInfo(provider="anthropic", id="m", api="anthropic", max_output_tokens=1500, reasoning=True)
    assert thinking_params("low", 1500, no_room) is None


def test_thinking_ignored_for_model_that_cannot_think(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    run(model_for(fake_llm, "claude-3-5-haiku-latest"), request(thinking="high"))
    assert "thinking" not in fake_llm.requests[0].body


def test_base_url_with_v1_suffix(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    env = {**fake_llm.env(), "ANTHROPIC_BASE_URL": fake_llm.url + "/v1/"}
    model = resolve_model("anthropic:claude-sonnet-4-5", env=env)
    list(model.stream(request()))
    assert fake_llm.requests[0].path == "/v1/messages"


def test_missing_key_names_the_env_var() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        resolve_model("anthropic:claude-sonnet-4-5", env={})
    info = ModelInfo(provider="anthropic", id="m", api="anthropic")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        list(AnthropicModel(info, api_key=None).stream(request()))


def test_overloaded_error_event_is_retryable(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(StreamErrorReply(text_before="partial"))
    with pytest.raises(OverloadedError, match="Overloaded") as caught:
        run(model_for(fake_llm), request())
    assert caught.value.retryable and caught.value.provider == "anthropic"


def test_malformed_event_json_is_a_clear_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(b'event: message_start\ndata: {"type": "message_start", "message": {\n\n'))
    with pytest.raises(MalformedEventError, match="invalid JSON in 'message_start' event"):
        run(model_for(fake_llm), request())


def test_invalid_tool_json_is_a_clear_error(fake_llm: FakeLLMServer) -> None:
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"t1","name":"edit","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"path\\": "}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},'
        b'"usage":{"output_tokens":5}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake_llm.enqueue(RawReply(body))
    with pytest.raises(MalformedEventError, match="tool call 'edit' has invalid JSON arguments"):
        run(model_for(fake_llm), request())


def test_tool_call_cut_by_max_tokens_is_dropped_with_a_note(fake_llm: FakeLLMServer) -> None:
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Writing"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"tool_use","id":"t1","name":"write","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"content\\": \\"abc"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
        b'"usage":{"output_tokens":5}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake_llm.enqueue(RawReply(body))
    _, message = run(model_for(fake_llm), request())
    assert message.stop_reason == "length"
    assert message.text == "Writing" and message.tool_calls == []
    assert "cut off" in (message.error_message or "")


def test_refusal_is_an_error_stop(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="I can't help with that.", stop_reason="refusal"))
    _, message = run(model_for(fake_llm), request())
    assert message.stop_reason == "error" and "refusal" in (message.error_message or "")






# -- message conversion ---------------------------------------------------------------------------------------
def test_thinking_replayed_only_with_signature() -> None:
    history: list[Message] = [
        UserMessage(content="q"),
        assistant(ThinkingContent(thinking="signed", signature="S"),
                  ThinkingContent(thinking="", signature="DATA", redacted=True), TextContent(text="a1")),
        UserMessage(content="q2"),
        assistant(ThinkingContent(thinking="from elsewhere"), TextContent(text="a2"), api="openai"),
        UserMessage(content="q3"),
    ]
    wire = convert_messages(history)
    assert wire[1]["content"] == [{"type": "thinking", "thinking": "signed", "signature": "S"},
                                  {"type": "redacted_thinking", "data": "DATA"},
                                  {"type": "text", "text": "a1"}]
    assert wire[3]["content"] == [{"type": "text", "text": "from elsewhere"}, {"type": "text", "text": "a2"}]


def test_a_cancelled_messages_unsigned_thinking_is_not_replayed_as_text() -> None:
    """A message cancelled mid-stream keeps its thinking without the signature (it arrives last); sent
    back as text, the model's private reasoning would read as something it had said."""
    history: list[Message] = [
        UserMessage(content="q"),
        assistant(ThinkingContent(thinking="private reasoning"), TextContent(text="partial"), stop_reason="aborted"),
        UserMessage(content="go on"),
    ]
    assert convert_messages(history)[1]["content"] == [{"type": "text", "text": "partial"}]


def test_tool_results_merge_into_one_user_message_and_missing_ones_are_synthesized() -> None:
    history: list[Message] = [
        UserMessage(content="go"),
        assistant(ToolCall(id="a", name="read", arguments={}), ToolCall(id="b", name="ls", arguments={}),
                  ToolCall(id="c", name="ls", arguments={}), stop_reason="tool_use"),
        ToolResultMessage(tool_call_id="a", tool_name="read", content=[TextContent(text="A")]),
        ToolResultMessage(tool_call_id="b", tool_name="ls", content=[], is_error=True),
        UserMessage(content="and then?"),
    ]
    wire = convert_messages(history)
    assert [m["role"] for m in wire] == ["user", "assistant", "user"]
    blocks = wire[2]["content"]
    assert [b["type"] for b in blocks] == ["tool_result", "tool_result", "tool_result", "text"]
    assert blocks[0]["tool_use_id"] == "a" and "is_error" not in blocks[0]
    assert blocks[1]["is_error"] is True and blocks[1]["content"] == [{"type": "text", "text": "(no output)"}]
    assert blocks[2]["tool_use_id"] == "c" and blocks[2]["is_error"] is True
    assert blocks[2]["content"][0]["text"] == MISSING_RESULT_TEXT


def test_failed_empty_assistant_messages_are_skipped_and_orphans_dropped() -> None:
    history: list[Message] = [
        UserMessage(content="one"),
        assistant(stop_reason="error"),
        ToolResultMessage(tool_call_id="ghost", tool_name="read", content=[TextContent(text="x")]),
        UserMessage(content="two"),
    ]
    wire = convert_messages(history)
    assert wire == [{"role": "user", "content": [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]}]


def test_images_and_odd_tool_ids() -> None:
    history: list[Message] = [
        UserMessage(content=[TextContent(text="see"), ImageContent(data="QUJD", mime_type="image/png")]),
        assistant(ToolCall(id="call.1:x", name="read", arguments={}), stop_reason="tool_use"),
        ToolResultMessage(tool_call_id="call.1:x", tool_name="read",
                          content=[ImageContent(data="REVG", mime_type="image/jpeg")]),
    ]
    wire = convert_messages(history)
    assert wire[0]["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                 "data": "QUJD"}}
    assert wire[1]["content"][0]["id"] == "call_1_x"
    result = wire[2]["content"][0]
    assert result["tool_use_id"] == "call_1_x"
    assert result["content"][0]["source"]["media_type"] == "image/jpeg"


def test_connection_dropped_after_message_stop_loses_nothing(fake_llm: FakeLLMServer) -> None:
    # 7 events: message_start, ping, block start/delta/stop, message_delta, message_stop; then the
    # connection closes without ending the chunked body.
    fake_llm.enqueue(Reply(text="ok", chunks=1, cut_after=7))
    _, message = run(model_for(fake_llm), request())
    assert message.text == "ok"


def test_message_delta_usage_updates_without_zeroing_prompt_counts(fake_llm: FakeLLMServer) -> None:
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":50,'
        b'"cache_read_input_tokens":400,"cache_creation_input_tokens":0,"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"input_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":30,'
        b'"output_tokens":12}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake_llm.enqueue(RawReply(body))
    _, message = run(model_for(fake_llm), request())
    assert message.usage == Usage(input=50, output=12, cache_read=400, cache_write=30)


def test_unknown_block_kinds_are_skipped_and_indexes_stay_aligned(fake_llm: FakeLLMServer) -> None:
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"server_tool_use","id":"s1","name":"web_search","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"query\\": \\"x\\"}"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"text_delta","text":"found"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        b'event: future_event\ndata: {"type":"future_event"}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":3}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake_llm.enqueue(RawReply(body))
    deltas, message = run(model_for(fake_llm), request())
    assert deltas == [TextDelta(index=0, delta="found")]
    assert message.content == [TextContent(text="found")]
