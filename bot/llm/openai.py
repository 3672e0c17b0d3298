"""OpenAI Chat Completions, streamed (`openai:MODEL` and every OpenAI-compatible endpoint).

Compatible servers differ in small ways, handled here:
- the output limit is `max_completion_tokens` on api.openai.com (reasoning models reject `max_tokens`)
  and `max_tokens` elsewhere, which is what OpenRouter, Groq, DeepSeek, Ollama and vLLM all accept;
  for an endpoint and model whose limit we do not know we send none rather than guess too high;
- reasoning arrives as `delta.reasoning_content` (DeepSeek, vLLM) or `delta.reasoning` (OpenRouter);
- cached prompt tokens are `usage.prompt_tokens_details.cached_tokens` (DeepSeek: `prompt_cache_hit_tokens`);
- tool-call arguments may arrive as a JSON object instead of a string;
- a stream that ends after `finish_reason` but without `[DONE]` is complete (its usage may be missing,
  and then the cost is unknown, not 0).
`reasoning_effort` (low/medium/high) is sent only to models known to reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from bot.llm.base import (
    ModelInfo,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolSpec,
)
from bot.llm.errors import ConfigError, MalformedEventError, StreamInterrupted
from bot.llm.http import HttpModel, error_for_stream_event, join_url, parse_json_object, parse_tool_arguments
from bot.llm.messages import (
    AssistantContent,
    AssistantMessage,
    ImageContent,
    Message,
    StopReason,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserContent,
    UserMessage,
)
from bot.llm.wire import (
    IdentityCache,
    WireBuilder,
    WireState,
    compact_schema,
    encode_json,
    json_array,
    same_items,
)

if TYPE_CHECKING:
    from bot.llm.providers import Endpoint

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

_FINISH_REASONS: dict[str, StopReason] = {
    "stop": "stop", "tool_calls": "tool_use", "function_call": "tool_use", "length": "length",
    "content_filter": "error",
}


def default_max_tokens_field(base_url: str) -> MaxTokensField:
    return "max_completion_tokens" if "api.openai.com" in base_url else "max_tokens"


class OpenAIModel(HttpModel):
    default_base_url = DEFAULT_BASE_URL
    key_required = False  # a local server (Ollama, vLLM) needs none; an endpoint naming a key var does

    def __init__(self, info: ModelInfo, *, api_key: str | None, base_url: str = DEFAULT_BASE_URL,
                 api_key_env: str | None = "OPENAI_API_KEY", max_tokens_field: MaxTokensField | None = None,
                 send_max_tokens: bool = True) -> None:
        super().__init__(info, api_key=api_key, base_url=base_url, api_key_env=api_key_env)
        self.max_tokens_field = max_tokens_field or default_max_tokens_field(base_url)
        # False for an unknown model on a compatible server: its real limit may be below our default.
        self.send_max_tokens = send_max_tokens
        self._wire = _OpenAIWire()
        self._system: tuple[str, bytes] | None = None
        self._tools: tuple[list[ToolSpec], bytes] | None = None

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, info: ModelInfo, *, api_key: str | None, base_url: str,
                      limit_known: bool) -> OpenAIModel:
        # An unknown model on a compatible server may have a lower output limit than our default: send
        # none and let the server apply its own (official OpenAI models are all in the table).
        field = endpoint.max_tokens_field
        if field not in (None, "max_tokens", "max_completion_tokens"):
            raise ConfigError(f"max_tokens_field must be max_tokens or max_completion_tokens, got {field!r}")
        return cls(info, api_key=api_key, base_url=base_url, api_key_env=endpoint.api_key_env,
                   max_tokens_field=cast(MaxTokensField | None, field), send_max_tokens=limit_known)

    @property
    def url(self) -> str:
        # OPENAI_BASE_URL includes the version path (".../v1"), as in the SDKs.
        return join_url(self.base_url, "chat/completions")

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def encode_body(self, request: ModelRequest) -> bytes:
        """Everything but the messages first; earlier messages come from the previous request's bytes."""
        head: dict[str, Any] = {"model": self.info.id, "stream": True, "stream_options": {"include_usage": True}}
        limit = request.max_output_tokens or (self.info.max_output_tokens if self.send_max_tokens else None)
        if limit:
            head[self.max_tokens_field] = limit
        if request.thinking != "off" and self.info.reasoning:
            head["reasoning_effort"] = request.thinking
        parts = [encode_json(head)[:-1]]
        if request.tools:
            parts.append(b',"tools":' + self._tools_json(request.tools))
        system = [self._system_json(request.system)] if request.system else []
        parts.append(b',"messages":' + json_array([*system, *self._wire.encode(request.messages)]) + b"}")
        return b"".join(parts)

    def _system_json(self, system: str) -> bytes:
        if self._system is None or self._system[0] != system:
            self._system = (system, encode_json({"role": "system", "content": system}))
        return self._system[1]

    def _tools_json(self, tools: list[ToolSpec]) -> bytes:
        if self._tools is None or not same_items(self._tools[0], tools):
            self._tools = (list(tools), encode_json([tool_schema(tool) for tool in tools]))
        return self._tools[1]

    def new_parser(self) -> _StreamParser:
        return _StreamParser(self.info.provider)


# -- request ------------------------------------------------------------------------------------------------
def tool_schema(tool: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": compact_schema(tool.parameters)}}


def convert_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages → Chat Completions `messages`. Thinking is not sent back (the API has no field for it
    and DeepSeek rejects `reasoning_content` in requests). Images in tool results, which `role: tool`
    cannot carry, follow the turn's tool messages as one user message."""
    head: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    return head + [json.loads(unit) for unit in _OpenAIWire().encode(messages)]


class _OpenAIWire(WireBuilder):
    """Each message is converted and encoded once. The state's tail holds the images of the current
    turn's tool results until a message of another kind comes."""

    def __init__(self) -> None:
        super().__init__()
        self._converted: IdentityCache[tuple[bytes | None, list[dict[str, Any]]]] = IdentityCache()

    def add(self, state: WireState, message: Message) -> None:
        if not isinstance(message, ToolResultMessage) and state.tail:
            state.units.append(encode_json({"role": "user", "content": state.tail}))
            state.tail = []
        encoded, images = self._converted.get(message, _encoded_message)
        if encoded is not None:
            state.units.append(encoded)
        state.tail.extend(images)

    def close(self, state: WireState) -> list[bytes]:
        if state.tail:
            return [*state.units, encode_json({"role": "user", "content": state.tail})]
        return state.units


def _encoded_message(message: Message) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The message's encoded wire form (None when it has nothing to send) and, for a tool result, the
    images that must follow in a user message."""
    if isinstance(message, UserMessage):
        return encode_json({"role": "user", "content": user_content(message.content)}), []
    if isinstance(message, AssistantMessage):
        converted = assistant_message(message)
        return (encode_json(converted) if converted is not None else None), []
    return encode_json(tool_message(message)), _images_of(message)


def user_content(content: str | list[UserContent]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if all(isinstance(part, TextContent) for part in content):
        return "".join(part.text for part in content if isinstance(part, TextContent))
    return [_part(part) for part in content]


def _part(part: UserContent) -> dict[str, Any]:
    if isinstance(part, ImageContent):
        return {"type": "image_url", "image_url": {"url": f"data:{part.mime_type};base64,{part.data}"}}
    return {"type": "text", "text": part.text}


def assistant_message(message: AssistantMessage) -> dict[str, Any] | None:
    text = "".join(block.text for block in message.content if isinstance(block, TextContent))
    calls = [{"id": call.id, "type": "function",
              "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
             for call in message.tool_calls]
    if not text and not calls:
        return None
    converted: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        converted["tool_calls"] = calls
    return converted


def tool_message(message: ToolResultMessage) -> dict[str, Any]:
    text = message.text
    if any(isinstance(part, ImageContent) for part in message.content):
        text = (text + "\n" if text else "") + "(images follow in the next message)"
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": text or "(no output)"}


def _images_of(message: ToolResultMessage) -> list[dict[str, Any]]:
    images = [_part(part) for part in message.content if isinstance(part, ImageContent)]
    if not images:
        return []
    return [{"type": "text", "text": f"Images returned by the {message.tool_name} tool:"}, *images]


# -- response -----------------------------------------------------------------------------------------------
@dataclass
class _Call:
    position: int
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamParser:
    provider: str
    order: list[tuple[str, int]] = field(default_factory=list)  # ("text"|"thinking"|"call", key) in order
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    usage_seen: bool = False
    finish_reason: str | None = None
    done: bool = False

    def _position(self, kind: str, key: int = 0) -> int:
        if (kind, key) not in self.order:
            self.order.append((kind, key))
        return self.order.index((kind, key))

    def complete(self) -> bool:
        return self.done and self.finish_reason is not None  # a drop after [DONE] lost nothing

    def usage_known(self) -> bool:
        return self.usage_seen

    def feed(self, name: str, data: str) -> Iterator[StreamEvent]:
        if data.strip() == "[DONE]":
            self.done = True
            return
        if self.done:
            return  # reading on to the end of the body keeps the connection reusable
        chunk = parse_json_object(self.provider, data, "stream chunk")
        error = chunk.get("error")
        if error:
            details = error if isinstance(error, dict) else {"message": str(error)}
            raise error_for_stream_event(self.provider, str(details.get("type") or ""),
                                         str(details.get("message") or data), details.get("code"))
        if isinstance(chunk.get("usage"), dict):
            self._read_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # we never ask for n > 1
            yield from self._delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _delta(self, delta: dict[str, Any]) -> Iterator[StreamEvent]:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.thinking.append(reasoning)
            yield ThinkingDelta(index=self._position("thinking"), delta=reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.text.append(content)
            yield TextDelta(index=self._position("text"), delta=content)
        for offset, call_delta in enumerate(delta.get("tool_calls") or []):
            yield from self._tool_call(offset, call_delta)

    def _tool_call(self, offset: int, delta: dict[str, Any]) -> Iterator[StreamEvent]:
        key = delta.get("index", offset)
        key = key if isinstance(key, int) else offset
        function = delta.get("function") or {}
        call = self.calls.get(key)
        if call is None:
            call = _Call(position=self._position("call", key), id=str(delta.get("id") or f"call_{key}"),
                         name=str(function.get("name") or ""))
            self.calls[key] = call
        elif not call.name and function.get("name"):
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the parsed object
            arguments = json.dumps(arguments)
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
            yield ToolCallDelta(index=call.position, id=call.id, name=call.name, delta=arguments)

    def _read_usage(self, usage: dict[str, Any]) -> None:
        prompt = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int((details.get("cached_tokens") if isinstance(details, dict) else 0) or
                     usage.get("prompt_cache_hit_tokens") or 0)
        self.usage = Usage(input=max(0, prompt - cached), output=int(usage.get("completion_tokens") or 0),
                           cache_read=cached)
        self.usage_seen = True

    def finish(self, info: ModelInfo) -> AssistantMessage:
        if self.finish_reason is None:
            what = "after [DONE]" if self.done else "before the final chunk"
            raise StreamInterrupted(f"stream ended {what} without a finish_reason", provider=self.provider)
        stop = _FINISH_REASONS.get(self.finish_reason, "stop")
        error_message = ("the response was blocked by the provider's content filter"
                         if self.finish_reason == "content_filter" else None)
        content: list[AssistantContent] = []
        for kind, key in self.order:
            if kind == "thinking":
                content.append(ThinkingContent(thinking="".join(self.thinking)))
            elif kind == "text":
                content.append(TextContent(text="".join(self.text)))
            else:
                call = self.calls[key]
                try:
                    arguments = parse_tool_arguments(self.provider, call.name, "".join(call.arguments))
                except MalformedEventError:
                    if stop != "length":
                        raise
                    # Cut off by the output limit: the call is unusable, the rest of the message is not.
                    error_message = f"tool call {call.name!r} was cut off by the output token limit"
                    continue
                content.append(ToolCall(id=call.id, name=call.name, arguments=arguments))
        has_calls = any(isinstance(block, ToolCall) for block in content)
        # Some compatible servers report "stop" with tool calls, or "tool_calls" with none.
        if stop in ("stop", "tool_use"):
            stop = "tool_use" if has_calls else "stop"
        return AssistantMessage(content=content, provider=info.provider, model=info.id, api="openai",
                                usage=self.usage, stop_reason=stop, error_message=error_message)
