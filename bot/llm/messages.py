"""Provider-neutral message types.

These serialize to snake_case JSON and are exactly what session files store, so any change here is a
change to the public session format (docs/session-format.md).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def now_ms() -> int:
    return int(time.time() * 1000)


class _Model(BaseModel):
    # Unknown keys from a newer writer are kept so that re-serialising never loses them.
    model_config = ConfigDict(extra="allow")


class TextContent(_Model):
    type: Literal["text"] = "text"
    text: str


class ThinkingContent(_Model):
    type: Literal["thinking"] = "thinking"
    thinking: str
    # Anthropic rejects replayed thinking without its signature; redacted thinking has only `data`.
    signature: str | None = None
    redacted: bool = False


class ImageContent(_Model):
    type: Literal["image"] = "image"
    data: str  # base64
    mime_type: str


class ToolCall(_Model):
    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


AssistantContent = Annotated[TextContent | ThinkingContent | ToolCall, Field(discriminator="type")]
UserContent = Annotated[TextContent | ImageContent, Field(discriminator="type")]

StopReason = Literal["stop", "length", "tool_use", "error", "aborted"]


class Usage(_Model):
    """Token counts. `input` excludes cached tokens: input + cache_read + cache_write is the prompt."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input + self.cache_read + self.cache_write

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
        )


class Cost(_Model):
    """USD per component. None means the price is unknown, which is never the same as 0."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    total: float | None = None

    @staticmethod
    def zero() -> Cost:
        return Cost(input=0.0, output=0.0, cache_read=0.0, cache_write=0.0, total=0.0)

    def __add__(self, other: Cost) -> Cost:
        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return Cost(
            input=add(self.input, other.input),
            output=add(self.output, other.output),
            cache_read=add(self.cache_read, other.cache_read),
            cache_write=add(self.cache_write, other.cache_write),
            total=add(self.total, other.total),
        )


class UserMessage(_Model):
    role: Literal["user"] = "user"
    content: str | list[UserContent]
    timestamp: int = Field(default_factory=now_ms)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(c.text for c in self.content if isinstance(c, TextContent))


class AssistantMessage(_Model):
    role: Literal["assistant"] = "assistant"
    content: list[AssistantContent] = Field(default_factory=list)
    provider: str
    model: str
    api: str
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    stop_reason: StopReason = "stop"
    error_message: str | None = None
    timestamp: int = Field(default_factory=now_ms)

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.content if isinstance(c, TextContent))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [c for c in self.content if isinstance(c, ToolCall)]


class ToolResultMessage(_Model):
    role: Literal["tool_result"] = "tool_result"
    tool_call_id: str
    tool_name: str
    content: list[UserContent]
    is_error: bool = False
    # Structured data for renderers (e.g. an edit's diff); never sent to the model.
    details: dict[str, Any] | None = None
    timestamp: int = Field(default_factory=now_ms)

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.content if isinstance(c, TextContent))


Message = Annotated[UserMessage | AssistantMessage | ToolResultMessage, Field(discriminator="role")]

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)
MESSAGES_ADAPTER: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


def message_from_json(data: str | bytes) -> Message:
    return MESSAGE_ADAPTER.validate_json(data)


def message_to_dict(message: Message) -> dict[str, Any]:
    # None is kept explicit: a null cost means "unknown price", which readers must see.
    return message.model_dump(mode="json")


def text_result(tool_call: ToolCall, text: str, *, is_error: bool = False) -> ToolResultMessage:
    return ToolResultMessage(
        tool_call_id=tool_call.id,
        tool_name=tool_call.name,
        content=[TextContent(text=text)],
        is_error=is_error,
    )
