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
from typing import TYPE_CHECKING, Any

from bot.llm.base import (
    ModelInfo,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingLevel,
    ToolCallDelta,
    ToolSpec,
)
from bot.llm.errors import MalformedEventError, StreamInterrupted
from bot.llm.http import HttpModel, error_for_stream_event, join_url, parse_json_object, safe_tool_id
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


class AnthropicModel(HttpModel):
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, info: ModelInfo, *, api_key: str | None, base_url: str = DEFAULT_BASE_URL,
                 api_key_env: str = "ANTHROPIC_API_KEY") -> None:
        super().__init__(info, api_key=api_key, base_url=base_url, api_key_env=api_key_env)
        self._wire = _AnthropicWire()
        self._system: tuple[str, bytes] | None = None
        self._tools: tuple[list[ToolSpec], bytes] | None = None

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, info: ModelInfo, *, api_key: str | None, base_url: str,
                      limit_known: bool) -> AnthropicModel:
        return cls(info, api_key=api_key, base_url=base_url,
                   api_key_env=endpoint.api_key_env or "ANTHROPIC_API_KEY")

    @property
    def url(self) -> str:
        # ANTHROPIC_BASE_URL is the host root (as in the SDKs); tolerate one that already ends in /v1.
        base = self.base_url.rstrip("/")
        return join_url(base, "messages" if base.endswith("/v1") else "v1/messages")

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": API_VERSION}

    def encode_body(self, request: ModelRequest) -> bytes:
        """Model, limits and thinking first, then the parts a prompt cache reuses, in its order: tools,
        system, messages. Everything but the newest messages comes from the previous request's bytes."""
        max_tokens = request.max_output_tokens or self.info.max_output_tokens
        head: dict[str, Any] = {"model": self.info.id, "max_tokens": max_tokens, "stream": True}
        thinking = thinking_params(request.thinking, max_tokens, self.info)
        if thinking is not None:
            head["max_tokens"], head["thinking"] = thinking
        parts = [encode_json(head)[:-1]]
        if request.tools:
            parts.append(b',"tools":' + self._tools_json(request.tools))
        if request.system:
            parts.append(b',"system":' + self._system_json(request.system))
        parts.append(b',"messages":' + json_array(self._wire.encode(request.messages)) + b"}")
        return b"".join(parts)

    def _system_json(self, system: str) -> bytes:
        if self._system is None or self._system[0] != system:
            self._system = (system, encode_json([{"type": "text", "text": system, "cache_control": EPHEMERAL}]))
        return self._system[1]

    def _tools_json(self, tools: list[ToolSpec]) -> bytes:
        if self._tools is None or not same_items(self._tools[0], tools):
            self._tools = (list(tools), encode_json([tool_schema(tool) for tool in tools]))
        return self._tools[1]

    def new_parser(self) -> _StreamParser:
        return _StreamParser(self.info.provider)


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
    return {"name": tool.name, "description": tool.description, "input_schema": compact_schema(tool.parameters)}


def convert_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages → Anthropic `messages`. Consecutive same-role messages are merged (tool results of
    one turn become one user message, results first), and the last block carries a cache breakpoint."""
    return [json.loads(unit) for unit in _AnthropicWire().encode(messages)]


Block = tuple[dict[str, Any], bytes]  # a content block and its encoded JSON


class _AnthropicWire(WireBuilder):
    """Each message's blocks are converted and encoded once; a message whose role is the same as the one
    before is merged into it, so the last wire message stays open (the state's tail) until another role
    comes."""

    def __init__(self) -> None:
        super().__init__()
        self._blocks: IdentityCache[tuple[str, list[Block]]] = IdentityCache()

    def add(self, state: WireState, message: Message) -> None:
        role, blocks = self._blocks.get(message, _role_and_blocks)
        if not blocks:
            return
        if state.tail_role == role:
            state.tail.extend(blocks)
            return
        if state.tail_role is not None:
            state.units.append(_unit(state.tail_role, [encoded for _, encoded in state.tail]))
        state.tail_role, state.tail = role, list(blocks)

    def close(self, state: WireState) -> list[bytes]:
        if state.tail_role is None:
            return state.units
        encoded = [data for _, data in state.tail]
        for position in range(len(state.tail) - 1, -1, -1):
            block = state.tail[position][0]
            # Thinking blocks cannot carry cache_control; every other kind can.
            if block["type"] not in ("thinking", "redacted_thinking"):
                encoded[position] = encode_json({**block, "cache_control": EPHEMERAL})
                break
        return [*state.units, _unit(state.tail_role, encoded)]


def _unit(role: str, blocks: list[bytes]) -> bytes:
    return b'{"role":"' + role.encode() + b'","content":' + json_array(blocks) + b"}"


def _role_and_blocks(message: Message) -> tuple[str, list[Block]]:
    if isinstance(message, UserMessage):
        role, blocks = "user", user_blocks(message.content)
    elif isinstance(message, AssistantMessage):
        role, blocks = "assistant", assistant_blocks(message)
    else:
        role, blocks = "user", [tool_result_block(message)]
    return role, [(block, encode_json(block)) for block in blocks]


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
            elif not ours and block.thinking.strip():
                # Another API's reasoning is shown as text. This API's own thinking without a signature (a
                # cancelled message's partial) is left out: as text it would read as something said aloud.
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
    usage_seen: bool = False  # a proxy may strip usage: then the cost is unknown, never 0

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

    def complete(self) -> bool:
        return self.finished  # a connection dropped after message_stop lost nothing

    def usage_known(self) -> bool:
        return self.usage_seen

    def _read_usage(self, usage: dict[str, Any], *, final: bool = False) -> None:
        # message_start carries the prompt counts; message_delta the cumulative output count, and in
        # newer API versions the prompt counts again. Some proxies send zeros there: keep the earlier ones.
        fields = {"input_tokens": "input", "output_tokens": "output",
                  "cache_read_input_tokens": "cache_read", "cache_creation_input_tokens": "cache_write"}
        for wire_name, ours in fields.items():
            value = usage.get(wire_name)
            if isinstance(value, int) and (value or not final or ours == "output"):
                setattr(self.usage, ours, value)
                self.usage_seen = True

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
