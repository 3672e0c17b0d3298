"""Building request bodies so that a turn costs the same at turn 400 as at turn 1.

Stored messages never change once they are in a conversation, and each request repeats every earlier
message. So the providers:
- convert each message to its wire form once (`IdentityCache`, keyed by the message object);
- remember how far they got in the previous request (`WireBuilder`): when the new request starts with the
  same messages, only the new ones are converted, and earlier messages are reused as encoded JSON bytes;
- assemble the body from those bytes instead of re-encoding the whole conversation (`encode_json`).

The provider-neutral clean-up of a conversation (`prepare_history` in `bot.llm.http`) runs here message by
message with the same rules, so it too costs only the new messages.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bot.llm.messages import AssistantMessage, Message, TextContent, ToolCall, ToolResultMessage

T = TypeVar("T")

MISSING_RESULT_TEXT = "No result: the tool call was not executed (the run was interrupted or aborted)."

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as httpx would send `json=value`."""
    return _ENCODER.encode(value).encode("utf-8")


class IdentityCache(Generic[T]):
    """Values computed from objects, kept while the object lives. Keyed by identity because messages are
    not hashable (and equal-but-distinct messages simply convert again)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], T]] = {}

    def get(self, obj: Any, build: Callable[[Any], T]) -> T:
        key = id(obj)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is obj:
            return hit[1]
        value = build(obj)
        entries = self._entries

        def forget(ref: weakref.ref[Any], key: int = key) -> None:
            current = entries.get(key)
            if current is not None and current[0] is ref:
                del entries[key]

        self._entries[key] = (weakref.ref(obj, forget), value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class WireState:
    """Where a conversion stands after some messages: `units` are finished wire messages (encoded), `tail`
    is what a provider keeps open (Anthropic: the blocks of a message the next one may merge into; OpenAI:
    images waiting to follow the tool results), `pending` the tool calls still waiting for a result."""

    units: list[bytes] = field(default_factory=list)
    tail_role: str | None = None
    tail: list[Any] = field(default_factory=list)
    pending: list[ToolCall] = field(default_factory=list)

    def copy(self) -> WireState:
        return WireState(list(self.units), self.tail_role, list(self.tail), list(self.pending))


class WireBuilder:
    """Converts a conversation to a list of encoded wire messages, resuming from the previous call when
    the conversation only grew. Subclasses say how one message is added (`add`) and how the open tail is
    closed (`close`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_messages: list[Message] = []
        self._last_state = WireState()

    def encode(self, messages: Sequence[Message]) -> list[bytes]:
        messages = list(messages)
        with self._lock:
            previous, state = self._last_messages, self._last_state
        known = len(previous)
        # List equality checks identity first, element by element in C: cheap for a shared prefix.
        if known and len(messages) >= known and messages[:known] == previous:
            state, start = state.copy(), known
        else:
            state, start = WireState(), 0
        for message in messages[start:]:
            self._add_prepared(state, message)
        with self._lock:
            self._last_messages, self._last_state = messages, state
        final = state.copy()
        self._flush_pending(final)
        return self.close(final)

    # -- the conversation clean-up, one message at a time (see bot.llm.http.prepare_history) ------------
    def _add_prepared(self, state: WireState, message: Message) -> None:
        if isinstance(message, ToolResultMessage):
            match = next((call for call in state.pending if call.id == message.tool_call_id), None)
            if match is not None:  # a result without its call in the message before would be rejected
                state.pending.remove(match)
                self.add(state, message)
            return
        self._flush_pending(state)
        if isinstance(message, AssistantMessage):
            if not has_content(message):
                return  # a failed or aborted message with nothing usable
            state.pending.extend(message.tool_calls)
        self.add(state, message)

    def _flush_pending(self, state: WireState) -> None:
        calls, state.pending = state.pending, []
        for call in calls:
            self.add(state, missing_result(call))

    # -- provider hooks ----------------------------------------------------------------------------------
    def add(self, state: WireState, message: Message) -> None:
        raise NotImplementedError

    def close(self, state: WireState) -> list[bytes]:
        """The finished list of wire messages; `state` is a copy the builder may change."""
        raise NotImplementedError


def has_content(message: AssistantMessage) -> bool:
    return any(not isinstance(block, TextContent) or block.text for block in message.content)


def missing_result(call: ToolCall) -> ToolResultMessage:
    return ToolResultMessage(tool_call_id=call.id, tool_name=call.name,
                             content=[TextContent(text=MISSING_RESULT_TEXT)], is_error=True)


def json_array(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def same_items(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


# -- tool schemas --------------------------------------------------------------------------------------
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with what the model does not need removed, so every request is smaller:
    pydantic's generated `title`s (the property name again), `additionalProperties: false`, and the
    `anyOf [X, null]` + `default: null` of an optional parameter (an omitted parameter is the same as
    null). The tool still validates with its full parameter model, so an unknown or null argument is
    still answered with a clear error."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if (key == "title" and isinstance(value, str)) or (key == "additionalProperties" and value is False):
            continue
        if (key == "properties" and isinstance(value, dict)) or (key in ("$defs", "definitions") and isinstance(value, dict)):
            out[key] = {name: compact_schema(sub) if isinstance(sub, dict) else sub for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [compact_schema(sub) if isinstance(sub, dict) else sub for sub in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = compact_schema(value)
        else:
            out[key] = value
    return _drop_null_option(out)


def _drop_null_option(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not isinstance(options, list) or schema.get("default") is not None or "default" not in schema:
        return schema
    real = [option for option in options if option != {"type": "null"}]
    if len(real) != 1 or len(real) == len(options) or not isinstance(real[0], dict):
        return schema
    merged = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**real[0], **merged}
