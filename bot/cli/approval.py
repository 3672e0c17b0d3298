"""Asking the user before a mutating tool runs: `y` yes, `n` no (with a reason for the model), `a` always.

The agent runs in a worker thread but only the REPL's main thread reads the terminal, so the approver
(called by the agent loop in the worker) hands a request to the main thread and waits for the answer.
Read-only tools never reach the approver: the loop only asks for `tool.mutating` ones.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from bot.llm.messages import ToolCall
from bot.tools.base import Tool

NO_REASON = "no reason given"
CANCELLED_REASON = "the user aborted the turn"


@dataclass
class ApprovalRequest:
    """One question waiting for the main thread. `answer` is None for yes, else the refusal reason."""

    call: ToolCall
    tool_name: str
    answer: str | None = None
    always: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def allow(self, *, always: bool = False) -> None:
        self.answer, self.always = None, always
        self.done.set()

    def refuse(self, reason: str) -> None:
        self.answer = reason.strip() or NO_REASON
        self.done.set()


class Approver:
    """The agent's `approver` hook. Holds the per-session "always allow" set."""

    def __init__(self, *, allow_all: bool = False, cancel: threading.Event | None = None) -> None:
        self.allow_all = allow_all
        self.always: set[str] = set()
        self.requests: queue.Queue[ApprovalRequest] = queue.Queue()
        # The agent's cancel event: a Ctrl+C while waiting for an answer refuses the call.
        self.cancel = cancel

    def __call__(self, call: ToolCall, tool: Tool) -> str | None:
        if self.allow_all or tool.name in self.always:
            return None
        request = ApprovalRequest(call=call, tool_name=tool.name)
        self.requests.put(request)
        while not request.done.wait(0.05):
            if self.cancel is not None and self.cancel.is_set():
                return CANCELLED_REASON
        if request.answer is None and request.always:
            self.always.add(tool.name)
        return request.answer

    def pending(self) -> ApprovalRequest | None:
        try:
            return self.requests.get_nowait()
        except queue.Empty:
            return None


def parse_answer(key: str) -> str | None:
    """Map a key to "y", "n" or "a"; None for anything else, Enter included: the question stays until
    the user answers deliberately."""
    lowered = key.lower()
    return lowered if lowered in ("y", "n", "a") else None
