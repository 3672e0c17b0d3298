"""The contract between the agent and a model: a request in, a stream of events out.

A provider is one small generator (`Model.stream`) that yields `StreamEvent`s and finishes with exactly
one `Done`. Errors are raised as `bot.llm.errors.ModelError` subclasses; retrying is the caller's job
(`bot.llm.retry`), so a provider never sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.llm.messages import AssistantMessage, Cost, Message, Usage
from bot.llm.thinking import THINKING_LEVELS as THINKING_LEVELS
from bot.llm.thinking import ThinkingLevel as ThinkingLevel


@dataclass(frozen=True)
class ModelInfo:
    provider: str  # the name in the spec: "anthropic", "openai", or a configured endpoint name
    id: str  # the model id sent to the API
    api: str  # the wire API (a name registered in bot.llm.providers), or "mock" / "replay"
    context_window: int = 128_000
    max_output_tokens: int = 16_384
    reasoning: bool = False

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.id}"


@dataclass(frozen=True)
class ToolSpec:
    """What the model sees of a tool. `parameters` is a JSON schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ModelRequest:
    system: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    thinking: ThinkingLevel = "off"
    max_output_tokens: int | None = None
    # Set by the caller to cancel a stream in flight (Ctrl+C, wall-time limit).
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class TextDelta:
    index: int
    delta: str
    type: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True)
class ThinkingDelta:
    index: int
    delta: str
    type: Literal["thinking_delta"] = "thinking_delta"


@dataclass(frozen=True)
class ToolCallDelta:
    """A fragment of a tool call's JSON arguments as the provider streamed it."""

    index: int
    id: str
    name: str
    delta: str
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(frozen=True)
class UsageReport:
    """What the response in progress has cost so far, each time the provider reports usage mid-stream
    (Anthropic's message_start and message_delta, OpenAI's last chunk). `Done` carries the final figures;
    this one is what a caller counts when the stream is cut or cancelled before `Done`, since the
    provider bills the tokens it reported either way."""

    usage: Usage
    cost: Cost
    type: Literal["usage"] = "usage"


@dataclass(frozen=True)
class Done:
    message: AssistantMessage
    type: Literal["done"] = "done"


StreamEvent = TextDelta | ThinkingDelta | ToolCallDelta | UsageReport | Done


class Model(Protocol):
    info: ModelInfo

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]: ...
