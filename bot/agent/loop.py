"""The agent loop: ask the model, run the tools it calls, feed the results back, until it answers.

Every way out of the loop other than a final answer is an exception caught in `run`, so each outcome
is explicit and a limit is never mistaken for success. Every message is handed to the conversation as
soon as it exists; a session-backed conversation writes it to disk at that moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from bot.agent import events as ev
from bot.agent.session import ContextItem, Entry, InMemoryConversation
from bot.llm.base import (
    Model,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolSpec,
    UsageReport,
)
from bot.llm.errors import Aborted, ContextOverflowError, ModelError
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    text_result,
)
from bot.llm.retry import RetryPolicy, complete
from bot.llm.wire import same_items
from bot.tools.base import Tool, ToolContext


class Outcome(StrEnum):
    COMPLETED = "completed"
    MAX_TURNS = "max_turns"
    MAX_COST = "max_cost"
    TIMEOUT = "timeout"
    ERROR = "error"
    ABORTED = "aborted"


class LimitReached(Exception):
    def __init__(self, outcome: Outcome, detail: str) -> None:
        self.outcome = outcome
        super().__init__(detail)


class AgentError(Exception):
    """The model ended its message with an error, or a provider failure outlived its retries."""


@dataclass
class Limits:
    max_turns: int | None = 50
    max_cost_usd: float | None = None
    max_wall_seconds: float | None = None


@dataclass
class RunResult:
    """How a run ended. `usage`/`cost` are the conversation's totals (a resumed session's earlier spend
    included); `run_usage`/`run_cost` are what this run alone spent (model turns and compactions)."""

    outcome: Outcome
    final_text: str
    turns: int
    usage: Usage
    cost: Cost
    error: str | None = None
    compactions: int = 0
    duration_seconds: float = 0.0
    model_error: ModelError | None = field(default=None, repr=False)
    run_usage: Usage = field(default_factory=Usage)
    run_cost: Cost = field(default_factory=Cost.zero)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.COMPLETED


class Conversation(Protocol):
    """Where messages live. The session-backed one persists each append before returning; the
    in-memory one (`InMemoryConversation`) is the same thing over a session that is never written."""

    def context(self) -> list[Message]: ...

    def append(self, message: Message) -> None: ...

    def items(self) -> list[ContextItem]:
        """The context with the entry each message comes from (what a compactor cuts)."""
        ...

    def latest_compaction(self) -> Entry | None: ...

    def apply_compaction(self, **fields: Any) -> Entry:
        """Record a compaction (persisted first), then switch the context to its summary."""
        ...


CompactionReason = Literal["threshold", "overflow", "manual"]


@dataclass(frozen=True)
class CompactionRequest:
    """All a compactor gets: the conversation, the model to summarise with, and what else the next
    request carries (system prompt and tool schemas count against the same bound)."""

    reason: CompactionReason
    conversation: Conversation
    model: Model
    system_prompt: str
    tools: Sequence[ToolSpec]
    retry: RetryPolicy
    cancel: threading.Event
    emit: Callable[[ev.Event], None]
    instructions: str | None = None


class Compacted(Protocol):
    """What a compaction reports back; the loop adds the summary calls' spend to its totals."""

    @property
    def usage(self) -> Usage: ...

    @property
    def cost(self) -> Cost: ...


class Compactor(Protocol):
    """Keeps the context under its bound. The loop asks `needs_compaction` before every model request
    (after the previous turn, or the new prompt, entered the context), calls `compact` when it says so
    or when the provider reports an overflow, and counts what came back."""

    def needs_compaction(self, request: CompactionRequest) -> bool: ...

    def compact(self, request: CompactionRequest) -> Compacted | None: ...

    def context_tokens(self, request: CompactionRequest) -> tuple[int, int]:
        """(tokens the next request carries, the bound): for footers."""
        ...


# Returns None to allow, or the reason the user refused (sent back to the model).
Approver = Callable[[ToolCall, Tool], str | None]
Subscriber = Callable[[ev.Event], None]


class Agent:
    def __init__(self, model: Model, tools: Sequence[Tool], tool_context: ToolContext, system_prompt: str,
                 *, limits: Limits | None = None, conversation: Conversation | None = None,
                 thinking: str = "off", retry: RetryPolicy | None = None,
                 compactor: Compactor | None = None, approver: Approver | None = None,
                 usage: Usage | None = None, cost: Cost | None = None) -> None:
        self.model = model
        self.tools = {tool.name: tool for tool in tools}
        self.tool_context = tool_context
        self.system_prompt = system_prompt
        self.limits = limits or Limits()
        self.conversation = conversation or InMemoryConversation()
        self.thinking = thinking
        self.retry = retry or RetryPolicy()
        self.compactor = compactor
        self.approver = approver
        self.subscribers: list[Subscriber] = []
        self.usage = usage or Usage()  # cumulative, restored on resume
        self.cost = cost or Cost.zero()
        # What this run() spent, apart from what a resumed session had spent before: the cost limit is
        # per run, so continuing a thread in CI gets a fresh budget rather than an exhausted one.
        self.run_usage = Usage()
        self.run_cost = Cost.zero()
        self.run_known_cost = 0.0  # the priced part of run_cost: the cost limit's lower bound once one is unknown
        self._cost_warned = False
        self.turns = 0
        self.compactions = 0
        self.last_assistant: AssistantMessage | None = None
        # One event, shared with the tools once: setting it stops the model stream and running tools.
        self.cancel = tool_context.cancel
        self._deadline: float | None = None

    # -- events ------------------------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def emit(self, event: ev.Event) -> None:
        for subscriber in self.subscribers:
            subscriber(event)

    def add_spend(self, usage: Usage, cost: Cost) -> None:
        """Count a model call's usage and cost (assistant turns and compaction summaries alike)."""
        self.usage = self.usage + usage
        self.cost = self.cost + cost
        self.run_usage = self.run_usage + usage
        self.run_cost = self.run_cost + cost
        if cost.total is not None:
            self.run_known_cost += cost.total

    def append(self, message: Message) -> None:
        self.emit(ev.MessageStart(role=message.role))
        self.conversation.append(message)
        self.emit(ev.MessageEnd(message=message))

    # -- compaction --------------------------------------------------------------------------------
    def compaction_request(self, reason: CompactionReason = "manual",
                           instructions: str | None = None) -> CompactionRequest:
        return CompactionRequest(reason=reason, conversation=self.conversation, model=self.model,
                                 system_prompt=self.system_prompt, tools=self.tool_specs(), retry=self.retry,
                                 cancel=self.cancel, emit=self.emit, instructions=instructions)

    def compact(self, reason: CompactionReason = "manual", instructions: str | None = None) -> Compacted | None:
        """Compact now (None: no compactor, or nothing to summarise). Counted here, for every reason."""
        if self.compactor is None:
            return None
        result = self.compactor.compact(self.compaction_request(reason, instructions))
        if result is not None:
            self.compactions += 1
            self.add_spend(result.usage, result.cost)
        return result

    def context_tokens(self) -> tuple[int, int] | None:
        """(tokens the next request carries, the compaction bound), or None without a compactor."""
        if self.compactor is None:
            return None
        return self.compactor.context_tokens(self.compaction_request())

    _tool_specs: tuple[tuple[Tool, ...], list[ToolSpec]] | None = None

    def tool_specs(self) -> list[ToolSpec]:
        # Built once per tool set, not per turn: the same ToolSpec objects every turn also let the
        # provider reuse its encoded tool schemas.
        tools = tuple(self.tools.values())
        cached = self._tool_specs
        if cached is None or not same_items(cached[0], tools):
            cached = self._tool_specs = (tools, [tool_spec(tool) for tool in tools])
        return list(cached[1])

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, prompt: str | UserMessage) -> RunResult:
        started = time.monotonic()
        self.turns = 0
        self.run_usage, self.run_cost = Usage(), Cost.zero()
        self.run_known_cost, self._cost_warned = 0.0, False
        self.cancel.clear()
        self._deadline = started + self.limits.max_wall_seconds if self.limits.max_wall_seconds else None
        timer = self._start_deadline_timer()
        self.emit(ev.AgentStart(model=self.model.info.spec))
        try:
            self.append(prompt if isinstance(prompt, UserMessage) else UserMessage(content=prompt))
            outcome, text, error, model_error = Outcome.COMPLETED, self._loop(), None, None
        except LimitReached as exc:
            outcome, text, error, model_error = exc.outcome, self._last_text(), str(exc), None
        except (Aborted, KeyboardInterrupt) as exc:
            timed_out = self._deadline is not None and time.monotonic() >= self._deadline
            outcome = Outcome.TIMEOUT if timed_out else Outcome.ABORTED
            text, error, model_error = self._last_text(), str(exc) or outcome.value, None
            if timed_out:  # the deadline cancelled a request or a tool: say which limit, not "cancelled"
                error = f"time limit of {self.limits.max_wall_seconds:g} s reached"
        except ModelError as exc:
            outcome, text, error, model_error = Outcome.ERROR, self._last_text(), str(exc), exc
        except AgentError as exc:
            outcome, text, error, model_error = Outcome.ERROR, self._last_text(), str(exc), None
        finally:
            if timer is not None:
                timer.cancel()
        result = RunResult(outcome, text, self.turns, self.usage, self.cost, error, self.compactions,
                           time.monotonic() - started, model_error, self.run_usage, self.run_cost)
        self.emit(ev.AgentEnd(outcome=outcome.value, turns=self.turns, usage=self.usage, cost=self.cost,
                              error=error))
        return result

    def _loop(self) -> str:
        while True:
            self._check_turn_limits()
            # Checked before every request (after the previous turn's tool results, or a new prompt,
            # were added), so no request leaves without the context having been measured.
            if self.compactor is not None and self.compactor.needs_compaction(self.compaction_request("threshold")):
                self.compact("threshold")
                self._check_cost()  # the summary calls may have reached the limit: no turn after them
            self.turns += 1
            self.emit(ev.TurnStart(turn=self.turns))
            message = self._assistant_turn()
            calls = message.tool_calls
            if calls:
                for result in self._run_tools(calls):
                    self.append(result)
                if self.cancel.is_set():
                    raise Aborted("cancelled")  # Ctrl+C or the deadline during a tool: no new request
            self.emit(ev.TurnEnd(turn=self.turns))
            self._check_cost(final=not calls)
            if not calls:
                return message.text

    def _assistant_turn(self) -> AssistantMessage:
        try:
            message = self._stream_assistant()
        except ContextOverflowError:
            if self.compact("overflow") is None:
                raise
            self._check_cost()
            message = self._stream_assistant()  # one retry after compacting; a second overflow is fatal
        if message.stop_reason == "error":
            raise AgentError(message.error_message or "the model ended its message with an error")
        return message

    def _stream_assistant(self) -> AssistantMessage:
        request = ModelRequest(
            system=self.system_prompt,
            messages=self.conversation.context(),
            tools=self.tool_specs(),
            thinking=self.thinking,  # type: ignore[arg-type]
            # No explicit limit: each provider sends the model's own when it is known (an OpenAI-compatible
            # endpoint gets none for an unknown model, where a guessed 16k could exceed its real limit).
            cancel=self.cancel,
        )
        partial = _PartialMessage()
        self.emit(ev.MessageStart(role="assistant"))

        def on_event(event: StreamEvent) -> None:
            partial.add(event)
            if not isinstance(event, UsageReport):
                self.emit(_update_event(event))

        def on_retry(attempt: int, delay: float, error: ModelError) -> None:
            self._count_cut_attempt(partial)
            partial.reset()
            self._check_cost()  # the cut attempts alone may have reached the limit: no retry then
            self.emit(ev.Retry(attempt=attempt, delay_seconds=round(delay, 3), error=str(error)))

        try:
            message = complete(self.model, request, self.retry, on_event, on_retry)
        except (Aborted, KeyboardInterrupt):
            self.cancel.set()  # stop anything else still running for this turn
            self._record_aborted(partial)
            raise
        except ModelError:
            self._count_cut_attempt(partial)
            raise
        self.last_assistant = message
        self.add_spend(message.usage, message.cost)
        self.conversation.append(message)
        self.emit(ev.MessageEnd(message=message))
        return message

    def _record_aborted(self, partial: _PartialMessage) -> None:
        info = self.model.info
        # What the provider had reported by then; without a report, the cost is unknown (never 0).
        usage, cost = (partial.reported.usage, partial.reported.cost) if partial.reported else (Usage(), Cost())
        message = AssistantMessage(content=partial.content(), provider=info.provider, model=info.id,
                                   api=info.api, usage=usage, cost=cost, stop_reason="aborted",
                                   error_message="aborted by user")
        self.add_spend(message.usage, message.cost)
        self.conversation.append(message)
        self.emit(ev.MessageEnd(message=message))

    def _count_cut_attempt(self, partial: _PartialMessage) -> None:
        """An attempt that failed mid-stream (retried, or the turn's error) is billed for the usage the
        provider had reported: it counts toward this run's figures and cost limit. No message records it,
        so the session file's totals leave it out."""
        if partial.reported is not None:
            self.add_spend(partial.reported.usage, partial.reported.cost)

    # -- tools -------------------------------------------------------------------------------------
    def _run_tools(self, calls: list[ToolCall]) -> list[ToolResultMessage]:
        parallel = len(calls) > 1 and all(
            call.name in self.tools and not self.tools[call.name].mutating for call in calls
        )
        if not parallel:
            return [self._run_tool(call) for call in calls]
        from concurrent.futures import ThreadPoolExecutor  # 2 ms of imports that a one-call turn never needs

        with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
            return list(pool.map(self._run_tool, calls))  # map keeps call order

    def _run_tool(self, call: ToolCall) -> ToolResultMessage:
        self.emit(ev.ToolStart(tool_call=call))
        result = self._execute(call)
        self.emit(ev.ToolEnd(tool_call_id=call.id, tool_name=call.name, is_error=result.is_error,
                             text=result.text, details=result.details))
        return result

    def _execute(self, call: ToolCall) -> ToolResultMessage:
        if self.cancel.is_set():
            return text_result(call, "Not run: the turn was cancelled.", is_error=True)
        tool = self.tools.get(call.name)
        if tool is None:
            available = ", ".join(sorted(self.tools)) or "none"
            return text_result(call, f"Tool {call.name!r} is not available. Available tools: {available}.",
                               is_error=True)
        if tool.mutating and self.approver is not None:
            refusal = self.approver(call, tool)
            if refusal is not None:
                return text_result(call, f"The user refused this {call.name} call: {refusal}", is_error=True)
        output = tool.execute(call.arguments, self.tool_context)
        result = text_result(call, output.text, is_error=output.is_error)
        result.details = output.details
        return result

    # -- limits ------------------------------------------------------------------------------------
    def _check_turn_limits(self) -> None:
        if self.limits.max_turns is not None and self.turns >= self.limits.max_turns:
            turns = self.limits.max_turns
            raise LimitReached(Outcome.MAX_TURNS, f"reached the limit of {turns} turn{'s' if turns != 1 else ''}")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise LimitReached(Outcome.TIMEOUT,
                               f"reached the wall-time limit of {self.limits.max_wall_seconds:g} s")

    def _check_cost(self, *, final: bool = False) -> None:
        """Stop before the next request once this run's spend reached the limit. A final answer is kept, as
        one on the last allowed turn is: no request follows it. When a call's cost is unknown (no price, or
        no usage reported), the calls whose cost is known still count, and the user is told once."""
        limit = self.limits.max_cost_usd
        if limit is None:
            return
        spent = self.run_cost.total
        if spent is None:
            if not self._cost_warned:
                self._cost_warned = True
                self.emit(ev.Warning(message=f"the cost of a call to {self.model.info.spec} is unknown (no price, "
                                             f"or no usage reported), so the ${limit:g} cost limit cannot be "
                                             "enforced in full: it counts only the calls whose cost is known"))
            spent = self.run_known_cost
        if spent >= limit and not final:
            raise LimitReached(Outcome.MAX_COST, f"spent ${spent:.4f} in this run, reaching the limit of ${limit:g}")

    def _start_deadline_timer(self) -> threading.Timer | None:
        if self._deadline is None:
            return None
        timer = threading.Timer(self._deadline - time.monotonic(), self.cancel.set)
        timer.daemon = True
        timer.start()
        return timer

    def _last_text(self) -> str:
        return self.last_assistant.text if self.last_assistant else ""


def tool_spec(tool: Tool) -> ToolSpec:
    return ToolSpec(name=tool.name, description=tool.description, parameters=tool.schema())


class _PartialMessage:
    """Accumulates streamed deltas so an aborted message can be saved with what had arrived."""

    def __init__(self) -> None:
        self.blocks: dict[int, list[str]] = {}
        self.kinds: dict[int, str] = {}
        self.reported: UsageReport | None = None  # the provider's latest usage for this attempt

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta | ThinkingDelta):
            self.kinds[event.index] = event.type
            self.blocks.setdefault(event.index, []).append(event.delta)
        elif isinstance(event, UsageReport):
            self.reported = event

    def reset(self) -> None:
        self.blocks.clear()
        self.kinds.clear()
        self.reported = None

    def content(self) -> list[TextContent | ThinkingContent | ToolCall]:
        out: list[TextContent | ThinkingContent | ToolCall] = []
        for index in sorted(self.blocks):
            text = "".join(self.blocks[index])
            out.append(ThinkingContent(thinking=text) if self.kinds[index] == "thinking_delta"
                       else TextContent(text=text))
        return out


def _update_event(event: StreamEvent) -> ev.MessageUpdate:
    if isinstance(event, TextDelta):
        return ev.MessageUpdate(kind="text", index=event.index, delta=event.delta)
    if isinstance(event, ThinkingDelta):
        return ev.MessageUpdate(kind="thinking", index=event.index, delta=event.delta)
    assert isinstance(event, ToolCallDelta)
    return ev.MessageUpdate(kind="tool_call", index=event.index, delta=event.delta, tool_name=event.name)
