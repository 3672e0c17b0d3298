"""Helpers shared by the provider tests (Anthropic and OpenAI dialects alike)."""

from __future__ import annotations

from typing import Any

from bot.llm.base import Done, Model, ModelRequest, StreamEvent, ToolSpec, UsageReport
from bot.llm.messages import AssistantMessage, Message, UserMessage

READ_TOOL = ToolSpec("read", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}})


def request(*messages: Message, **kwargs: Any) -> ModelRequest:
    return ModelRequest(system=kwargs.pop("system", "You are terse."),
                        messages=list(messages) or [UserMessage(content="hi")], **kwargs)


def run(model: Model, req: ModelRequest) -> tuple[list[StreamEvent], AssistantMessage]:
    """Stream to the end; exactly one Done, and it comes last. Returns the content deltas (usage reports
    left out: `usage_reports` has them) and the final message."""
    events = list(model.stream(req))
    assert sum(isinstance(e, Done) for e in events) == 1 and isinstance(events[-1], Done)
    return [e for e in events[:-1] if not isinstance(e, UsageReport)], events[-1].message


def usage_reports(model: Model, req: ModelRequest) -> list[UsageReport]:
    return [e for e in model.stream(req) if isinstance(e, UsageReport)]


def model_for_dialect(server: Any, dialect: str) -> Model:
    """The real provider for `dialect`, pointed at the scripted server."""
    from bot.llm.models import resolve_model

    spec = {"anthropic": "anthropic:claude-sonnet-4-5", "openai": "openai:gpt-4o"}[dialect]
    return resolve_model(spec, env=server.env())
