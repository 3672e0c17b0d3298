"""Anthropic Messages API, streamed (`anthropic:MODEL`).

- Prompt caching: `cache_control: ephemeral` on the system prompt block and on the last content block of
  the last message, so each turn reads the previous turn's prefix from the cache.
- Thinking: `request.thinking` low/medium/high → `budget_tokens` 2048/8192/16384 (`THINKING_BUDGETS`).
  `max_tokens` must exceed the budget, so it becomes the output limit plus the budget, capped at the
  model's maximum (and the budget shrinks if it would not fit). Models known not to think ignore it.
- Thinking blocks go back to the API only with their signature (redacted ones as `redacted_thinking`,
  whose opaque data we keep in `ThinkingContent.signature`); unsigned thinking (e.g. from another
  provider) is sent as plain text so the context is not lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.llm.base import (
    Done,
    ModelInfo,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingLevel,
    ToolCallDelta,
    ToolSpec,
)
from bot.llm.errors import ConfigError, MalformedEventError, StreamInterrupted
from bot.llm.http import (
    error_for_stream_event,
    join_url,
    parse_json_object,
    prepare_history,
    safe_tool_id,
    stream_events,
)
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
from bot.llm.pricing import compute_cost, prefetch

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
THINKING_BUDGETS: dict[ThinkingLevel, int] = {"low": 2048, "medium": 8192, "high": 16384}
MIN_THINKING_BUDGET = 1024  # the API's minimum
EPHEMERAL = {"type": "ephemeral"}
EMPTY_TEXT = "(empty)"  # the API rejects empty text blocks

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "tool_use": "tool_use",
    "max_tokens": "length", "model_context_window_exceeded": "length", "refusal": "error",
}


class AnthropicModel:
    def __init__(self, info: ModelInfo, *, api_key: str | None, base_url: str = DEFAULT_BASE_URL,
                 api_key_env: str = "ANTHROPIC_API_KEY") -> None:
        self.info = info
        self.api_key = api_key
        self.base_url = base_url
        self.api_key_env = api_key_env

    @property
    def url(self) -> str:
        # ANTHROPIC_BASE_URL is the host root (as in the SDKs); tolerate one that already ends in /v1.
        base = self.base_url.rstrip("/")
        return join_url(base, "messages" if base.endswith("/v1") else "v1/messages")

    def headers(self) -> dict[str, str]:
        if not self.api_key:
            raise ConfigError(f"no API key for {self.info.spec}: set {self.api_key_env}",
                              provider=self.info.provider)
        return {"x-api-key": self.api_key, "anthropic-version": API_VERSION,
                "content-type": "application/json", "accept": "text/event-stream"}

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        max_tokens = request.max_output_tokens or self.info.max_output_tokens
        body: dict[str, Any] = {"model": self.info.id, "max_tokens": max_tokens, "stream": True,
                                "messages": convert_messages(request.messages)}
        if request.system:
            body["system"] = [{"type": "text", "text": request.system, "cache_control": EPHEMERAL}]
        if request.tools:
            body["tools"] = [tool_schema(tool) for tool in request.tools]
        thinking = thinking_params(request.thinking, max_tokens, self.info)
        if thinking is not None:
            body["max_tokens"], body["thinking"] = thinking
        return body

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        headers = self.headers()
        body = self.build_body(request)
        prefetch()
        parser = _StreamParser(self.info.provider)
        try:
            for name, data in stream_events(self.info.provider, self.url, headers, body, request.cancel):
                yield from parser.feed(name, data)
        except StreamInterrupted:
            if not parser.finished:  # a connection dropped after message_stop lost nothing
                raise
        message = parser.finish(self.info)
        base_url = None if self.base_url == DEFAULT_BASE_URL else self.base_url
        message.cost = compute_cost(self.info.provider, self.info.id, message.usage, base_url=base_url)
        yield Done(message=message)


# -- request ------------------------------------------------------------------------------------------------
def thinking_params(level: ThinkingLevel, max_tokens: int, info: ModelInfo) -> tuple[int, dict[str, Any]] | None:
    """(max_tokens, thinking param), or None when thinking is off or the model cannot think."""
    if level == "off" or not info.reasoning:
        return None
    budget = THINKING_BUDGETS[level]
    limit = max(info.max_output_tokens, max_tokens)
    total = min(max_tokens + budget, limit)
    if total <= budget:
        budget = total - MIN_THINKING_BUDGET
    if budget < MIN_THINKING_BUDGET:
        return None  # no room to think within the output limit
    return total, {"type": "enabled", "budget_tokens": budget}


def tool_schema(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


def convert_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages → Anthropic `messages`. Consecutive same-role messages are merged (tool results of
    one turn become one user message, results first), and the last block carries a cache breakpoint."""
    wire: list[dict[str, Any]] = []
    for message in prepare_history(messages):
        if isinstance(message, UserMessage):
            role, blocks = "user", user_blocks(message.content)
        elif isinstance(message, AssistantMessage):
            role, blocks = "assistant", assistant_blocks(message)
        else:
            role, blocks = "user", [tool_result_block(message)]
        if not blocks:
            continue
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    _mark_cache_breakpoint(wire)
    return wire


def user_blocks(content: str | list[UserContent]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content or EMPTY_TEXT}]
    blocks = [_user_block(part) for part in content if not (isinstance(part, TextContent) and not part.text)]
    return blocks or [{"type": "text", "text": EMPTY_TEXT}]


def _user_block(part: UserContent) -> dict[str, Any]:
    if isinstance(part, ImageContent):
        return {"type": "image", "source": {"type": "base64", "media_type": part.mime_type, "data": part.data}}
    return {"type": "text", "text": part.text}


def assistant_blocks(message: AssistantMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    ours = message.api == "anthropic"  # signatures are only valid for the API that issued them
    for block in message.content:
        if isinstance(block, TextContent):
            if block.text:
                blocks.append({"type": "text", "text": block.text})
        elif isinstance(block, ThinkingContent):
            if block.redacted:
                if ours and block.signature:
                    blocks.append({"type": "redacted_thinking", "data": block.signature})
            elif ours and block.signature:
                blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
            elif block.thinking.strip():
                blocks.append({"type": "text", "text": block.thinking})
        else:
            blocks.append({"type": "tool_use", "id": safe_tool_id(block.id), "name": block.name,
                           "input": block.arguments})
    return blocks


def tool_result_block(message: ToolResultMessage) -> dict[str, Any]:
    content = [_user_block(part) for part in message.content if not (isinstance(part, TextContent)
                                                                     and not part.text)]
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": safe_tool_id(message.tool_call_id),
                             "content": content or [{"type": "text", "text": "(no output)"}]}
    if message.is_error:
        block["is_error"] = True
    return block


def _mark_cache_breakpoint(wire: list[dict[str, Any]]) -> None:
    if not wire:
        return
    for block in reversed(wire[-1]["content"]):
        # Thinking blocks cannot carry cache_control; every other kind can.
        if block["type"] not in ("thinking", "redacted_thinking"):
            block["cache_control"] = EPHEMERAL
            return


_KEPT_KINDS = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})


# -- response -----------------------------------------------------------------------------------------------
@dataclass
class _Block:
    position: int  # index in our message's content
    kind: str  # text | thinking | redacted_thinking | tool_use
    text: list[str] = field(default_factory=list)
    signature: str | None = None
    tool_id: str = ""
    tool_name: str = ""
    initial_input: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, Any] | None = None
    invalid_json: str | None = None  # why the arguments did not parse


@dataclass
class _StreamParser:
    provider: str
    blocks: dict[int, _Block] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    started: bool = False
    finished: bool = False

    def feed(self, name: str, data: str) -> Iterator[StreamEvent]:
        if name == "ping":
            return
        event = parse_json_object(self.provider, data, f"'{name}' event")
        kind = str(event.get("type") or name)
        if kind == "error":
            error = event.get("error")
            error = error if isinstance(error, dict) else {}
            raise error_for_stream_event(self.provider, str(error.get("type") or ""),
                                         str(error.get("message") or data))
        if kind == "message_start":
            self.started = True
            self._read_usage(event.get("message", {}).get("usage") or {})
        elif kind == "content_block_start":
            self._start_block(event)
        elif kind == "content_block_delta":
            yield from self._delta(event)
        elif kind == "content_block_stop":
            self._stop_block(event)
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self._read_usage(event.get("usage") or {}, final=True)
        elif kind == "message_stop":
            self.finished = True
        # Unknown event types are skipped, as the API's versioning policy asks clients to do.

    def _read_usage(self, usage: dict[str, Any], *, final: bool = False) -> None:
        # message_start carries the prompt counts; message_delta the cumulative output count, and in
        # newer API versions the prompt counts again. Some proxies send zeros there: keep the earlier ones.
        fields = {"input_tokens": "input", "output_tokens": "output",
                  "cache_read_input_tokens": "cache_read", "cache_creation_input_tokens": "cache_write"}
        for wire_name, ours in fields.items():
            value = usage.get(wire_name)
            if isinstance(value, int) and (value or not final or ours == "output"):
                setattr(self.usage, ours, value)

    def _block(self, event: dict[str, Any]) -> _Block:
        index = event.get("index")
        if not isinstance(index, int) or index not in self.blocks:
            raise MalformedEventError(f"event for unknown content block {index!r}: {json.dumps(event)[:200]}",
                                      provider=self.provider)
        return self.blocks[index]

    def _start_block(self, event: dict[str, Any]) -> None:
        index, start = event.get("index"), event.get("content_block") or {}
        if not isinstance(index, int):
            raise MalformedEventError(f"content_block_start without an index: {json.dumps(event)[:200]}",
                                      provider=self.provider)
        kind = str(start.get("type"))
        # Positions count only the kinds we keep (not e.g. server tool blocks), so a delta's index is
        # the block's index in the final message.
        kept = sum(1 for b in self.blocks.values() if b.kind in _KEPT_KINDS)
        block = _Block(position=kept if kind in _KEPT_KINDS else -1, kind=kind)
        if block.kind == "text" and start.get("text"):
            block.text.append(start["text"])
        elif block.kind == "redacted_thinking":
            block.signature = str(start.get("data") or "")
        elif block.kind == "tool_use":
            block.tool_id, block.tool_name = str(start.get("id") or ""), str(start.get("name") or "")
            if isinstance(start.get("input"), dict):
                block.initial_input = start["input"]
        self.blocks[index] = block

    def _delta(self, event: dict[str, Any]) -> Iterator[StreamEvent]:
        block = self._block(event)
        if block.position < 0:
            return  # a block kind we do not keep (server-side tools and their results)
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            block.text.append(delta.get("text", ""))
            yield TextDelta(index=block.position, delta=delta.get("text", ""))
        elif kind == "thinking_delta":
            block.text.append(delta.get("thinking", ""))
            yield ThinkingDelta(index=block.position, delta=delta.get("thinking", ""))
        elif kind == "signature_delta":
            block.signature = (block.signature or "") + delta.get("signature", "")
        elif kind == "input_json_delta":
            block.text.append(delta.get("partial_json", ""))
            yield ToolCallDelta(index=block.position, id=block.tool_id, name=block.tool_name,
                                delta=delta.get("partial_json", ""))

    def _stop_block(self, event: dict[str, Any]) -> None:
        block = self._block(event)
        if block.kind != "tool_use":
            return
        raw = "".join(block.text)
        if not raw.strip():
            block.arguments = dict(block.initial_input)
            return
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            block.invalid_json = f"{exc.msg} at {exc.pos}: {raw[:200]}"
            return
        if isinstance(value, dict):
            block.arguments = value
        else:
            block.invalid_json = f"not a JSON object: {raw[:200]}"

    def finish(self, info: ModelInfo) -> AssistantMessage:
        if not self.finished:
            what = "before message_stop" if self.started else "before message_start"
            raise StreamInterrupted(f"stream ended {what}", provider=self.provider)
        content: list[AssistantContent] = []
        error_message: str | None = None
        stop = _STOP_REASONS.get(self.stop_reason or "end_turn", "stop")
        for block in sorted(self.blocks.values(), key=lambda b: b.position):
            if block.kind == "text":
                content.append(TextContent(text="".join(block.text)))
            elif block.kind == "thinking":
                content.append(ThinkingContent(thinking="".join(block.text), signature=block.signature))
            elif block.kind == "redacted_thinking":
                content.append(ThinkingContent(thinking="", signature=block.signature, redacted=True))
            elif block.kind == "tool_use":
                if block.invalid_json is not None:
                    if stop != "length":
                        raise MalformedEventError(
                            f"tool call {block.tool_name!r} has invalid JSON arguments ({block.invalid_json})",
                            provider=self.provider)
                    # Cut off by max_tokens: the call is unusable, the rest of the message is not.
                    error_message = f"tool call {block.tool_name!r} was cut off by the output token limit"
                    continue
                content.append(ToolCall(id=block.tool_id, name=block.tool_name, arguments=block.arguments or {}))
        if self.stop_reason == "refusal":
            error_message = "the model declined to respond (stop_reason: refusal)"
        if stop == "tool_use" and not any(isinstance(c, ToolCall) for c in content):
            stop = "stop"
        return AssistantMessage(content=content, provider=info.provider, model=info.id, api="anthropic",
                                usage=self.usage, stop_reason=stop, error_message=error_message)
