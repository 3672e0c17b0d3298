"""What both provider dialects must do alike, written once and run against each (Anthropic Messages and
OpenAI Chat Completions) through the scripted server over real sockets. What only one dialect has stays in
tests/test_anthropic.py and tests/test_openai.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from bot.llm.base import Model, TextDelta, ToolCallDelta
from bot.llm.errors import ContextOverflowError
from bot.llm.messages import ToolCall, Usage
from bot.llm.models import resolve_model
from tests.fake_llm import ErrorReply, FakeLLMServer, Reply
from tests.provider_support import READ_TOOL, request, run


@dataclass(frozen=True)
class Dialect:
    provider: str
    model: str  # a model the price table knows
    tool_call_id: str  # ids in the dialect's own shape
    overflow: ErrorReply  # how the dialect's servers say the prompt is too long
    unknown_model: str  # named like the provider's models, yet in no price table

    def model_for(self, server: FakeLLMServer, model: str | None = None) -> Model:
        return resolve_model(f"{self.provider}:{model or self.model}", env=server.env())


DIALECTS = [
    pytest.param(Dialect("anthropic", "claude-sonnet-4-5", "toolu_1",
                         ErrorReply(400, "prompt is too long: 210000 tokens > 200000 maximum"), "claude-imaginary-9"),
                 id="anthropic"),
    pytest.param(Dialect("openai", "gpt-4o", "call_1",
                         ErrorReply(400, "This model's maximum context length is 128000 tokens.",
                                    error_type="context_length_exceeded"), "gpt-imaginary"),
                 id="openai"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_text_streams_in_several_deltas(fake_llm: FakeLLMServer, dialect: Dialect) -> None:
    fake_llm.enqueue(Reply(text="Hello, streaming world", chunks=5))
    deltas, message = run(dialect.model_for(fake_llm), request())
    pieces = [d.delta for d in deltas if isinstance(d, TextDelta)]
    assert len(pieces) == 5 and "".join(pieces) == "Hello, streaming world"
    assert message.text == "Hello, streaming world"
    assert message.stop_reason == "stop"
    assert (message.provider, message.model, message.api) == (dialect.provider, dialect.model, dialect.provider)
    assert [r.dialect for r in fake_llm.requests] == [dialect.provider]


@pytest.mark.parametrize("text", ["Reading.", None], ids=["after-text", "alone"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_tool_call_arguments_split_mid_token(fake_llm: FakeLLMServer, dialect: Dialect, text: str | None) -> None:
    args = {"path": "src/main.py", "offset": 10, "nested": {"a": [1, 2, "x"]}}
    fake_llm.enqueue(Reply(text=text, tool_calls=[(dialect.tool_call_id, "read", args)], chunks=7))
    deltas, message = run(dialect.model_for(fake_llm), request(tools=[READ_TOOL]))
    pieces = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert len(pieces) == 7
    assert all(p.id == dialect.tool_call_id and p.name == "read" for p in pieces)
    assert message.text == (text or "")
    assert message.tool_calls == [ToolCall(id=dialect.tool_call_id, name="read", arguments=args)]
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_context_overflow_400_is_a_non_retryable_overflow(fake_llm: FakeLLMServer, dialect: Dialect) -> None:
    fake_llm.enqueue(dialect.overflow)
    with pytest.raises(ContextOverflowError, match=re.escape(dialect.overflow.message)) as caught:
        run(dialect.model_for(fake_llm), request())
    assert caught.value.status == 400 and not caught.value.retryable
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_model_has_unknown_cost_not_zero(fake_llm: FakeLLMServer, dialect: Dialect) -> None:
    fake_llm.enqueue(Reply(text="ok", usage=Usage(input=10, output=10)))
    _, message = run(dialect.model_for(fake_llm, dialect.unknown_model), request())
    assert (message.cost.total, message.cost.input, message.cost.output) == (None, None, None)
    assert (message.usage.input, message.usage.output) == (10, 10)  # what was used is still counted
