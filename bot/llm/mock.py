"""An in-process model for tests and offline runs: queue replies with `enqueue()`, inspect `requests`.

It streams its replies through the same event types as the HTTP providers, so the agent cannot tell it
apart from a real one. Running out of queued replies is an error, never a silent empty answer.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator

from bot.llm.base import Done, ModelInfo, ModelRequest, StreamEvent, TextDelta, ToolCallDelta
from bot.llm.errors import ModelError
from bot.llm.messages import AssistantMessage, TextContent, ToolCall, Usage

Reply = AssistantMessage | ModelError


class MockModel:
    def __init__(self, info: ModelInfo | None = None) -> None:
        self.info = info or ModelInfo(provider="mock", id="mock", api="mock")
        self.replies: deque[Reply] = deque()
        self.requests: list[ModelRequest] = []

    def enqueue(self, reply: str | Reply, *, tool_calls: list[ToolCall] | None = None,
                usage: Usage | None = None) -> None:
        """Queue a reply: text, an AssistantMessage, or an error to raise."""
        if isinstance(reply, str):
            content: list[TextContent | ToolCall] = [TextContent(text=reply)] if reply else []
            content.extend(tool_calls or [])
            reply = AssistantMessage(
                content=list(content),
                provider=self.info.provider,
                model=self.info.id,
                api=self.info.api,
                usage=usage or Usage(),
                stop_reason="tool_use" if tool_calls else "stop",
            )
        self.replies.append(reply)

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        self.requests.append(request)
        if not self.replies:
            raise ModelError("no more scripted replies", provider="mock")
        reply = self.replies.popleft()
        if isinstance(reply, ModelError):
            raise reply
        for index, block in enumerate(reply.content):
            if isinstance(block, TextContent):
                yield TextDelta(index=index, delta=block.text)
            elif isinstance(block, ToolCall):
                yield ToolCallDelta(index=index, id=block.id, name=block.name,
                                    delta=json.dumps(block.arguments))
        yield Done(message=reply.model_copy(deep=True))
