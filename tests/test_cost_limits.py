"""The run's cost limit and its figures when a call's cost is not simply known: an unpriced call in the
middle of a run, a stream cut after the provider reported usage (retried, or cancelled), compaction
summaries, and a final answer that crosses the limit. Loop-level with scripted models; end to end with
the real providers against the scripted server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.agent import events as ev
from bot.agent.loop import Agent, Limits, Outcome
from bot.llm.base import ModelInfo, ModelRequest, StreamEvent, TextDelta, UsageReport
from bot.llm.errors import Aborted
from bot.llm.messages import AssistantMessage, Cost, TextContent, ToolCall, Usage
from bot.llm.mock import MockModel
from bot.llm.retry import RetryPolicy
from bot.tools.base import Tool, ToolContext
from tests.fake_llm import FakeLLMServer, RawReply, Reply
from tests.test_cli_print import opi, opi_env
from tests.test_loop import SlowReadTool, call

SONNET = "anthropic:claude-sonnet-4-5"  # $3 / $15 per million input / output tokens


@pytest.fixture
def workspace(repo: Path) -> Path:
    return repo  # an empty git repository (tests/conftest.py)


def reply(text: str = "", *, cost: float | None, calls: list[ToolCall] | None = None) -> AssistantMessage:
    return AssistantMessage(content=[TextContent(text=text), *(calls or [])], provider="mock", model="mock",
                            api="mock", cost=Cost(total=cost), stop_reason="tool_use" if calls else "stop")


def agent(model: MockModel | object, tmp_path: Path, limit: float, tools: list[Tool] | None = None) -> Agent:
    return Agent(model, tools or [], ToolContext(tmp_path), "system",  # type: ignore[arg-type]
                 retry=RetryPolicy(max_retries=2, base_delay=0.0), limits=Limits(max_cost_usd=limit))


def test_a_call_of_unknown_cost_does_not_switch_the_limit_off(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue(reply(cost=0.1, calls=[call("a", "slow", seconds=0.0, label="a")]))
    model.enqueue(reply(cost=None, calls=[call("b", "slow", seconds=0.0, label="b")]))  # a server that sent no usage
    for name in "cdef":
        model.enqueue(reply(cost=0.3, calls=[call(name, "slow", seconds=0.0, label=name)]))
    run = agent(model, tmp_path, 0.5, [SlowReadTool()])
    warnings: list[str] = []
    run.subscribe(lambda e: warnings.append(e.message) if isinstance(e, ev.Warning) else None)
    result = run.run("go")
    # The known part alone reached the limit after turn 4 (0.1 + 0.3 + 0.3): no fifth request.
    assert result.outcome is Outcome.MAX_COST and result.turns == 4 and len(model.requests) == 4
    assert result.run_cost.total is None  # and the figure stays honest: unknown, not 0.7
    assert len(warnings) == 1 and "cannot be enforced in full" in warnings[0]


def test_a_final_answer_that_crosses_the_limit_is_kept(tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue(reply("the answer", cost=0.6))
    result = agent(model, tmp_path, 0.5).run("go")
    assert result.outcome is Outcome.COMPLETED and result.final_text == "the answer"  # nothing follows it
    assert result.run_cost.total == 0.6


class CancelledMidStream:
    """Reports usage, streams a little text, then the user cancels (Ctrl+C, the time limit)."""

    info = ModelInfo(provider="mock", id="mock", api="mock")

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        yield UsageReport(usage=Usage(input=1000), cost=Cost(input=0.003, total=0.003))
        yield TextDelta(index=0, delta="partial")
        raise Aborted("cancelled")


def test_a_cancelled_message_keeps_the_usage_the_provider_reported(tmp_path: Path) -> None:
    run = agent(CancelledMidStream(), tmp_path, 5.0)
    result = run.run("go")
    assert result.outcome is Outcome.ABORTED
    saved = run.conversation.context()[-1]
    assert isinstance(saved, AssistantMessage) and saved.stop_reason == "aborted"
    assert saved.usage.input == 1000 and saved.cost.total == 0.003 and result.run_cost.total == 0.003


def test_attempts_cut_after_a_usage_report_count_and_stop_the_retries(fake_llm: FakeLLMServer,
                                                                      workspace: Path, tmp_path: Path) -> None:
    # Each attempt reports 100,000 input tokens ($0.30) in message_start, then the connection breaks.
    fake_llm.enqueue_many([Reply(text="a long partial answer " * 20, usage=Usage(input=100_000, output=2000),
                                 cut_after=6) for _ in range(2)] + [Reply(text="done")])
    done = opi(["-p", "hi", "--json", "--model", SONNET, "--max-cost", "0.25"], cwd=workspace,
               env=opi_env(fake_llm, tmp_path))
    summary = done.json_lines()[-1]
    assert summary["outcome"] == "max_cost" and done.code == 1, done.stderr
    assert len(fake_llm.requests) == 1  # no retry once the cut attempt alone reached the limit
    assert summary["cost"] >= 0.30 and summary["tokens"]["input"] == 100_000
    fake_llm.allow_unused = True  # the two replies left: the point was not to ask for them


def test_a_compaction_that_reaches_the_limit_sends_no_more_turns(fake_llm: FakeLLMServer, workspace: Path,
                                                                 tmp_path: Path) -> None:
    config = workspace / ".opi" / "config.toml"
    config.parent.mkdir()
    config.write_text("[compaction]\nthreshold_tokens = 50000\nkeep_recent_tokens = 1\n")
    (workspace / "notes.txt").write_text("notes\n")
    fake_llm.enqueue_many([
        Reply(tool_calls=[("t1", "read", {"path": "notes.txt"})], usage=Usage(input=60_000, output=10)),  # $0.18
        Reply(text="## Goal\nsummary", usage=Usage(input=100_000, output=10)),  # the summary: $0.30
    ])
    done = opi(["-p", "hi", "--json", "--model", SONNET, "--max-cost", "0.4"], cwd=workspace,
               env=opi_env(fake_llm, tmp_path))
    summary = done.json_lines()[-1]
    assert summary["outcome"] == "max_cost" and summary["turns"] == 1, done.stderr
    assert len(fake_llm.requests) == 2 and round(summary["cost"], 5) == 0.4803


def test_an_anthropic_stream_without_usage_has_an_unknown_cost(fake_llm: FakeLLMServer, workspace: Path,
                                                               tmp_path: Path) -> None:
    # A proxy that strips usage from message_start and message_delta.
    fake_llm.enqueue(RawReply(
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","role":"assistant"}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hello"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'))
    done = opi(["-p", "hi", "--model", SONNET], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert done.code == 0 and done.stdout.strip() == "hello", done.stderr
    assert "unknown" in done.stderr and "$0.0000" not in done.stderr  # never $0


def test_the_figures_of_a_cancelled_run_use_the_reported_usage(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    """The aborted message of a real stream records what message_start reported."""
    from bot.llm.models import resolve_model

    fake_llm.enqueue(Reply(text="a long answer " * 50, usage=Usage(input=2000, output=50), chunks=50, delay=0.05))
    model = resolve_model(SONNET, env=fake_llm.env())
    run = agent(model, tmp_path, 5.0)
    run.subscribe(lambda e: run.cancel.set() if isinstance(e, ev.MessageUpdate) else None)
    threading.Timer(10, run.cancel.set).start()  # never hangs
    result = run.run("go")
    saved = run.conversation.context()[-1]
    assert result.outcome is Outcome.ABORTED and isinstance(saved, AssistantMessage)
    assert saved.usage.input == 2000 and saved.cost.total is not None  # message_start's figures, priced
    assert abs(saved.cost.total - (saved.usage.input * 3 + saved.usage.output * 15) / 1e6) < 1e-12
