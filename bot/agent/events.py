"""Events the agent emits to subscribers. `opi --json` prints each one as a JSON line."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bot.llm.messages import Cost, Message, ToolCall, Usage


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: str

    def to_json(self) -> str:
        return self.model_dump_json()


class AgentStart(Event):
    type: Literal["agent_start"] = "agent_start"
    model: str


class AgentEnd(Event):
    type: Literal["agent_end"] = "agent_end"
    outcome: str
    turns: int
    usage: Usage
    cost: Cost
    error: str | None = None


class TurnStart(Event):
    type: Literal["turn_start"] = "turn_start"
    turn: int


class TurnEnd(Event):
    type: Literal["turn_end"] = "turn_end"
    turn: int


class MessageStart(Event):
    type: Literal["message_start"] = "message_start"
    role: str


class MessageUpdate(Event):
    """One streamed fragment of the assistant message in progress."""

    type: Literal["message_update"] = "message_update"
    kind: Literal["text", "thinking", "tool_call"]
    index: int
    delta: str
    tool_name: str | None = None


class MessageEnd(Event):
    type: Literal["message_end"] = "message_end"
    message: Message


class ToolStart(Event):
    type: Literal["tool_start"] = "tool_start"
    tool_call: ToolCall


class ToolEnd(Event):
    type: Literal["tool_end"] = "tool_end"
    tool_call_id: str
    tool_name: str
    is_error: bool
    text: str
    details: dict[str, Any] | None = None


class Retry(Event):
    type: Literal["retry"] = "retry"
    attempt: int
    delay_seconds: float
    error: str


class CompactionStart(Event):
    type: Literal["compaction_start"] = "compaction_start"
    reason: Literal["threshold", "manual", "overflow"]
    tokens_before: int


class CompactionEnd(Event):
    type: Literal["compaction_end"] = "compaction_end"
    reason: Literal["threshold", "manual", "overflow"]
    tokens_before: int
    tokens_after: int
    summary_fallback: bool = False


class Warning(Event):
    type: Literal["warning"] = "warning"
    message: str
