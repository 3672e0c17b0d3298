"""Events the agent emits to subscribers. `opi --json` prints each one as a JSON line."""

from __future__ import annotations

import json
from collections.abc import Mapping
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


# -- one line per event, for a person watching (print mode's stderr, the action's log) -----------------------
def brief_arguments(arguments: Mapping[str, Any], limit: int = 120) -> str:
    parts = []
    for key, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text.replace("\r", "⏎").replace("\n", "⏎")
        if len(text) > 60:
            text = text[:57] + "..."
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else "(no output)"


def human_line(event: Event) -> str | None:
    """The line a person sees for `event` (tool calls, failed tools, retries, warnings, compactions),
    or None for events that show nothing. Always one line."""
    line: str | None = None
    if isinstance(event, ToolStart):
        line = f"→ {event.tool_call.name} {brief_arguments(event.tool_call.arguments)}".rstrip()
    elif isinstance(event, ToolEnd) and event.is_error:
        line = f"  ✗ {event.tool_name}: {first_line(event.text)}"
    elif isinstance(event, Retry):
        line = f"retry {event.attempt} in {event.delay_seconds:.1f}s: {event.error}"
    elif isinstance(event, Warning):
        line = f"warning: {event.message}"
    elif isinstance(event, CompactionEnd):
        line = (f"compacted context ({event.reason}): {event.tokens_before} → {event.tokens_after} tokens"
                + (" (fallback summary)" if event.summary_fallback else ""))
    return line.replace("\r", " ").replace("\n", " ") if line is not None else None


_SHOWN: dict[str, type[Event]] = {"tool_start": ToolStart, "tool_end": ToolEnd, "retry": Retry,
                                   "warning": Warning, "compaction_end": CompactionEnd}


def shown_event(data: Mapping[str, Any]) -> Event | None:
    """An event received as JSON (from the action's worker) that `human_line` shows; None for any other
    kind or a malformed one."""
    kind = _SHOWN.get(str(data.get("type")))
    if kind is None:
        return None
    try:
        return kind.model_validate(data)
    except ValueError:
        return None

