"""The agent loop's own rules, driven by the in-process MockModel and small real tools."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from bot.agent import events as ev
from bot.agent.loop import Agent, Compacted, CompactionRequest, Limits, Outcome
from bot.llm.errors import AuthError, ContextOverflowError, RateLimitError
from bot.llm.messages import AssistantMessage, Cost, TextContent, ToolCall, Usage
from bot.llm.mock import MockModel
from bot.llm.models import EndpointConfig, resolve_model
from bot.llm.retry import RetryPolicy
from bot.tools.base import Tool, ToolContext, ToolOutput
from tests.fake_llm import FakeLLMServer, Reply


class DelayParams(BaseModel):
    seconds: float
    label: str


class SlowReadTool(Tool):
    """Read-only and slow in reverse order of the calls, so parallel runs finish out of call order."""

    name = "slow"
    description = "sleeps"
    Params = DelayParams

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def run(self, params: DelayParams, ctx: ToolContext) -> ToolOutput:
        self.threads.add(threading.current_thread().name)
        time.sleep(params.seconds)
        return ToolOutput(params.label)


class TouchParams(BaseModel):
    name: str


class TouchTool(Tool):
    name = "touch"
    description = "creates a file"
    Params = TouchParams
    mutating = True

    def run(self, params: TouchParams, ctx: ToolContext) -> ToolOutput:
        (ctx.workspace / params.name).write_text("x")
        return ToolOutput(f"created {params.name}")


def call(call_id: str, tool_name: str, **arguments: object) -> ToolCall:
    return ToolCall(id=call_id, name=tool_name, arguments=dict(arguments))


def priced(text: str, usd: float, *, tool_calls: list[ToolCall] | None = None) -> AssistantMessage:
    content: list[TextContent | ToolCall] = [TextContent(text=text), *(tool_calls or [])]
    return AssistantMessage(content=list(content), provider="mock", model="mock", api="mock",
                            usage=Usage(input=10, output=5),
                            cost=Cost(input=usd / 2, output=usd / 2, cache_read=0.0, cache_write=0.0, total=usd),
                            stop_reason="tool_use" if tool_calls else "stop")


def make_agent(model: MockModel, tmp_path: Path, tools: list[Tool] | None = None, **kwargs: object) -> Agent:
    retry = RetryPolicy(max_retries=2, base_delay=0.0)
    return Agent(model, tools or [], ToolContext(tmp_path), "system", retry=retry, **kwargs)  # type: ignore[arg-type]


def test_read_only_calls_run_in_parallel_and_results_keep_call_order(tmp_path: Path) -> None:
    model, tool = MockModel(), SlowReadTool()
    model.enqueue("", tool_calls=[call("a", "slow", seconds=0.3, label="first"),
                                  call("b", "slow", seconds=0.0, label="second")])
    model.enqueue("done")
    result = make_agent(model, tmp_path, [tool]).run("go")
    assert result.outcome is Outcome.COMPLETED and result.final_text == "done"
    results = [m for m in model.requests[1].messages if m.role == "tool_result"]
    assert [(r.tool_call_id, r.text) for r in results] == [("a", "first"), ("b", "second")]
    assert len(tool.threads) == 2  # each call ran on its own worker thread


def test_max_turns_is_a_distinct_outcome_not_success(tmp_path: Path) -> None:
    model = MockModel()
    for n in range(3):
        model.enqueue("", tool_calls=[call(f"c{n}", "slow", seconds=0, label="x")])
    result = make_agent(model, tmp_path, [SlowReadTool()], limits=Limits(max_turns=3)).run("loop forever")
    assert result.outcome is Outcome.MAX_TURNS and not result.ok
    assert result.turns == 3 and "3 turns" in (result.error or "")


def test_cost_limit_counts_this_run_only_not_a_resumed_sessions_spend(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue(priced("", 0.02, tool_calls=[call("c1", "slow", seconds=0, label="x")]))
    model.enqueue(priced("", 0.02, tool_calls=[call("c2", "slow", seconds=0, label="x")]))
    model.enqueue(priced("never reached", 0.02))
    earlier = Cost(input=5.0, output=5.0, cache_read=0.0, cache_write=0.0, total=10.0)
    agent = make_agent(model, tmp_path, [SlowReadTool()], limits=Limits(max_cost_usd=0.04), cost=earlier)
    result = agent.run("go")
    assert result.outcome is Outcome.MAX_COST
    assert agent.run_cost.total is not None and abs(agent.run_cost.total - 0.04) < 1e-9
    assert result.cost.total is not None and abs(result.cost.total - 10.04) < 1e-9  # the session total
    assert len(model.replies) == 1  # stopped before the third request


def test_unknown_price_with_a_cost_limit_warns_instead_of_pretending(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue("answer")  # the mock's cost is unknown (all None)
    agent = make_agent(model, tmp_path, limits=Limits(max_cost_usd=1.0))
    seen: list[ev.Event] = []
    agent.subscribe(seen.append)
    result = agent.run("go")
    assert result.outcome is Outcome.COMPLETED and result.cost.total is None
    assert any(isinstance(e, ev.Warning) and "cannot be enforced" in e.message for e in seen)


def test_wall_time_limit_cancels_a_running_tool_and_reports_timeout(tmp_path: Path) -> None:
    class WaitTool(SlowReadTool):
        def run(self, params: DelayParams, ctx: ToolContext) -> ToolOutput:
            ctx.cancel.wait(params.seconds)  # like bash, a tool polls the cancel event
            return ToolOutput("interrupted" if ctx.cancel.is_set() else "finished")

    model = MockModel()
    model.enqueue("", tool_calls=[call("c1", "slow", seconds=30, label="x")])
    model.enqueue("never requested")
    agent = make_agent(model, tmp_path, [WaitTool()], limits=Limits(max_wall_seconds=0.3))
    result = agent.run("go")
    assert result.outcome is Outcome.TIMEOUT and not result.ok
    assert result.error == "time limit of 0.3 s reached"
    # The 30 s tool was cut short by the deadline (it saw the cancel), not waited out, and no
    # further request left after it.
    tool_results = [m for m in agent.conversation.context() if m.role == "tool_result"]
    assert [(r.tool_call_id, r.text) for r in tool_results] == [("c1", "interrupted")]
    assert len(model.requests) == 1 and len(model.replies) == 1


def test_unknown_tool_and_refused_mutation_become_error_results(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue("", tool_calls=[call("c1", "nope"), call("c2", "touch", name="f.txt")])
    model.enqueue("ok")
    refusals: list[str] = []

    def approver(tool_call: ToolCall, tool: Tool) -> str | None:
        refusals.append(tool_call.name)
        return "not in this directory"

    result = make_agent(model, tmp_path, [TouchTool()], approver=approver).run("go")
    assert result.ok and refusals == ["touch"] and not (tmp_path / "f.txt").exists()
    results = [m for m in model.requests[1].messages if m.role == "tool_result"]
    assert results[0].is_error and "'nope' is not available" in results[0].text
    assert results[1].is_error and "refused" in results[1].text and "not in this directory" in results[1].text


def test_retryable_error_is_retried_and_announced(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue(RateLimitError("slow down", provider="mock", status=429, retry_after=0.0))
    model.enqueue("after retry")
    agent = make_agent(model, tmp_path)
    retries: list[ev.Retry] = []
    agent.subscribe(lambda e: retries.append(e) if isinstance(e, ev.Retry) else None)
    result = agent.run("go")
    assert result.final_text == "after retry" and len(retries) == 1 and "429" in retries[0].error


def test_auth_error_is_not_retried_and_ends_as_error(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue(AuthError("invalid x-api-key", provider="anthropic", status=401))
    result = make_agent(model, tmp_path).run("go")
    assert result.outcome is Outcome.ERROR and isinstance(result.model_error, AuthError)
    assert "anthropic HTTP 401: invalid x-api-key" in (result.error or "")
    assert not model.replies and len(model.requests) == 1


class RecordingCompactor:
    """A compactor that only counts overflow calls: the loop does the accounting (compactions, spend)."""

    def __init__(self) -> None:
        self.overflows = 0

    def needs_compaction(self, request: CompactionRequest) -> bool:
        return False

    def compact(self, request: CompactionRequest) -> Compacted | None:
        assert request.reason == "overflow"
        self.overflows += 1
        return Spent(Usage(input=3), Cost.zero())

    def context_tokens(self, request: CompactionRequest) -> tuple[int, int]:
        return 0, 1


@dataclass
class Spent:
    usage: Usage
    cost: Cost


def test_context_overflow_compacts_and_retries_the_turn_once(tmp_path: Path) -> None:
    model, compactor = MockModel(), RecordingCompactor()
    model.enqueue(ContextOverflowError("prompt is too long", provider="anthropic", status=400))
    model.enqueue("fits now")
    result = make_agent(model, tmp_path, compactor=compactor).run("go")
    assert result.final_text == "fits now" and compactor.overflows == 1 and result.compactions == 1
    assert result.run_usage.input == 3  # the compaction's spend, counted by the loop


def test_a_second_overflow_after_compacting_is_fatal(tmp_path: Path) -> None:
    model, compactor = MockModel(), RecordingCompactor()
    for _ in range(2):
        model.enqueue(ContextOverflowError("prompt is too long", provider="anthropic", status=400))
    result = make_agent(model, tmp_path, compactor=compactor).run("go")
    assert result.outcome is Outcome.ERROR and isinstance(result.model_error, ContextOverflowError)
    assert compactor.overflows == 1


def test_cancel_mid_stream_saves_the_partial_answer_as_aborted(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue("partial answer that is cut")
    agent = make_agent(model, tmp_path)
    # Cancel as soon as the first delta arrives: the loop must record what had streamed.
    agent.subscribe(lambda e: agent.cancel.set() if isinstance(e, ev.MessageUpdate) else None)
    result = agent.run("go")
    assert result.outcome is Outcome.ABORTED
    saved = agent.conversation.context()[-1]
    assert isinstance(saved, AssistantMessage) and saved.stop_reason == "aborted"
    # No usage report came for the cut stream: what the run spent is unknown, never $0.
    assert saved.cost.total is None and result.run_cost.total is None and result.cost.total is None


def test_the_agent_sends_an_output_limit_only_when_the_model_has_a_known_one(tmp_path: Path,
                                                                              fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue_many([Reply(text="a"), Reply(text="b")])
    endpoints = {"local": EndpointConfig(base_url=fake_llm.openai_base_url)}
    unknown = resolve_model("local:qwen3-coder:30b", endpoints=endpoints, env={})
    known = resolve_model("openai:gpt-4.1", env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": fake_llm.openai_base_url})
    for model in (unknown, known):
        assert make_agent(model, tmp_path).run("go").outcome is Outcome.COMPLETED  # type: ignore[arg-type]
    assert "max_tokens" not in fake_llm.requests[0].body  # a guessed 16k could exceed its real limit
    assert fake_llm.requests[1].body["max_tokens"] == 32_768  # gpt-4.1's, from the model table
