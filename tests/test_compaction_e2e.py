"""The proof for bounded context: a 200-turn session with large tool outputs under a small threshold,
through the real Anthropic provider against the scripted loopback server, with the real tools.

- no request the server received is over the bound (request size = body bytes / 4, the same measure the
  scripted server reports as input tokens),
- the session file resumes to exactly the context of the last request (plus the final answer),
- the read / modified file lists are complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.agent import events as ev
from bot.agent.compaction import CompactionConfig, Compactor
from bot.agent.loop import Agent, Limits, Outcome
from bot.agent.session import Session, SessionConversation
from bot.llm.anthropic import AnthropicModel
from bot.llm.base import ModelInfo, ModelRequest, StreamEvent
from bot.llm.messages import AssistantMessage, ToolResultMessage
from bot.llm.retry import RetryPolicy
from bot.tools.base import ToolContext
from bot.tools.edit import EditTool
from bot.tools.read import ReadTool
from bot.tools.write import WriteTool
from tests.fake_llm import FakeLLMServer, RecordedRequest, Reply

pytest_plugins = ["tests.fake_llm"]

TURNS = 200
THRESHOLD = 24_000
FILES = 40


class Recording:
    """Wraps the real provider to keep the ModelRequest objects the agent sent."""

    def __init__(self, inner: AnthropicModel) -> None:
        self.inner = inner
        self.info = inner.info
        self.requests: list[ModelRequest] = []

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        self.requests.append(request)
        return self.inner.stream(request)


def plan(turn: int) -> tuple[str, dict[str, Any]]:
    """Turn N's tool call: mostly 50 KB reads, an edit every 7th turn, a new file every 10th."""
    if turn % 10 == 0:
        return "write", {"path": f"out/new{turn}.txt", "content": f"written at turn {turn}\n" * 50}
    if turn % 7 == 0:
        name = f"src/f{turn % FILES}.txt"
        return "edit", {"path": name, "old_text": "line 0000 ", "new_text": f"line 0000 edited {turn} "}
    return "read", {"path": f"src/f{turn % FILES}.txt"}


def responder(state: dict[str, int]) -> Any:
    def respond(request: RecordedRequest) -> Reply:
        body = request.body
        if not body.get("tools"):  # a compaction summary request
            state["summaries"] += 1
            return Reply(text=f"## Goal\nRead and edit the files.\n\n## Progress\n### Done\n- [x] summary "
                              f"{state['summaries']}\n\n## Next Steps\n1. Continue with the next file.")
        state["turn"] += 1
        if state["turn"] > TURNS:
            return Reply(text="All files processed.")
        name, args = plan(state["turn"])
        return Reply(text=f"Turn {state['turn']}.", tool_calls=[(f"toolu_{state['turn']:04d}", name, args)])
    return respond


def test_200_turns_with_large_outputs_stay_bounded_and_resume_exactly(
        tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    for i in range(FILES):  # ~50 KB each, the read tool's output cap
        lines = [f"line {n:04d} of file {i}: " + "abcdefghij" * 6 for n in range(600)]
        (workspace / "src" / f"f{i}.txt").write_text("\n".join(lines) + "\n")
    state = {"turn": 0, "summaries": 0}
    fake_llm.responder = responder(state)
    info = ModelInfo(provider="anthropic", id="claude-test", api="anthropic", context_window=200_000,
                     max_output_tokens=4_096)
    model = Recording(AnthropicModel(info, api_key="test-key", base_url=fake_llm.anthropic_base_url))
    session = Session.create(tmp_path / "long.jsonl", cwd=workspace)
    events: list[ev.Event] = []
    agent = Agent(model, [ReadTool(), EditTool(), WriteTool()], ToolContext(workspace=workspace),
                  "You are a careful coding agent. Process the files one by one.",
                  limits=Limits(max_turns=TURNS + 10), retry=RetryPolicy(max_retries=0),
                  conversation=SessionConversation(session),
                  compactor=Compactor(CompactionConfig(threshold_tokens=THRESHOLD, keep_recent_tokens=6_000)))
    agent.subscribe(events.append)

    result = agent.run("Process every file in src/ as instructed, one per turn.")

    assert result.outcome is Outcome.COMPLETED, result.error
    assert result.turns == TURNS + 1 and result.final_text == "All files processed."
    assert result.compactions >= 10 and state["summaries"] >= result.compactions

    # 1. no request ever exceeded the bound
    sizes = [len(r.raw) / 4 for r in fake_llm.requests]
    assert len(sizes) == TURNS + 1 + state["summaries"]
    assert max(sizes) <= THRESHOLD, f"largest request {max(sizes):.0f} tokens > {THRESHOLD}"
    reported = [m.usage.prompt_tokens for m in _assistants(events)]
    assert max(reported) <= THRESHOLD
    # ... and compaction never summarised a tool's output before the model had read it
    turn_requests = [r for r in model.requests if r.tools]
    for number, request in enumerate(turn_requests[1:], start=1):
        last = request.messages[-1]
        assert isinstance(last, ToolResultMessage) and last.tool_call_id == f"toolu_{number:04d}"
        assert not last.is_error, last.text

    # 2. the file resumes to exactly the context the agent last used
    session.close()
    loaded = Session.load(tmp_path / "long.jsonl")
    assert loaded.warnings == []
    last_turn = [r for r in model.requests if r.tools][-1]
    resumed = [m.model_dump(mode="json") for m in loaded.context()]
    assert resumed == [m.model_dump(mode="json") for m in [*last_turn.messages, result_message(agent)]]
    assert resumed == [m.model_dump(mode="json") for m in agent.conversation.context()]
    totals = loaded.totals()
    assert totals.usage == agent.usage and totals.cost.total == agent.cost.total

    # 3. the file lists are complete: the latest compaction's lists plus what the kept context shows
    read_paths = {plan(t)[1]["path"] for t in range(1, TURNS + 1) if plan(t)[0] == "read"}
    modified_paths = {plan(t)[1]["path"] for t in range(1, TURNS + 1) if plan(t)[0] != "read"}
    compaction = loaded.latest_compaction()
    assert compaction is not None
    listed_read = set(compaction["details"]["read_files"])
    listed_modified = set(compaction["details"]["modified_files"])
    visible = {c.arguments["path"] for m in loaded.context() if isinstance(m, AssistantMessage) for c in m.tool_calls}
    assert listed_modified | (visible & modified_paths) == modified_paths
    assert listed_read | listed_modified | visible == read_paths | modified_paths
    assert listed_read.isdisjoint(listed_modified)
    summary = compaction["summary"]
    assert all(path in summary for path in listed_read | listed_modified)
    # the edits and writes really happened
    assert (workspace / "out" / f"new{TURNS}.txt").exists()
    assert "edited 7 " in (workspace / "src" / "f7.txt").read_text()
    # the summary request asked to update the previous summary, not to summarise a summary
    summary_bodies = [r.body for r in fake_llm.requests if not r.body.get("tools")]
    assert "<previous-summary>" in json.dumps(summary_bodies[-1])


def _assistants(events: list[ev.Event]) -> list[AssistantMessage]:
    return [e.message for e in events if isinstance(e, ev.MessageEnd) and isinstance(e.message, AssistantMessage)]


def result_message(agent: Agent) -> AssistantMessage:
    assert agent.last_assistant is not None
    return agent.last_assistant


# -- where compaction fires -------------------------------------------------------------------------------

TRIGGER_THRESHOLD = 8_000


def wire_tokens(model: AnthropicModel, request: ModelRequest) -> float:
    """A request's size as the scripted server counts it: body bytes / 4."""
    body = json.dumps(model.build_body(request), separators=(",", ":"), ensure_ascii=False)
    return len(body.encode("utf-8")) / 4


@pytest.mark.parametrize(("output_bytes", "tool_turns"), [(300, 110), (8_192, 24)],
                         ids=["short-tool-turns", "8KB-tool-outputs"])
def test_compaction_fires_at_the_real_size_never_above_the_bound(
        tmp_path: Path, fake_llm: FakeLLMServer, output_bytes: int, tool_turns: int) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    line = "0123456789 abcdefghij \"quoted\" and\ttabbed\n"  # escapes make the wire longer than the text
    (workspace / "data.txt").write_text(line * (output_bytes // len(line)))
    turns = {"n": 0}

    def respond(request: RecordedRequest) -> Reply:
        if not request.body.get("tools"):
            return Reply(text="## Goal\nRead data.txt again and again.\n\n## Next Steps\n1. Keep reading.")
        turns["n"] += 1
        if turns["n"] > tool_turns:
            return Reply(text="Done reading.")
        return Reply(text=f"Reading, turn {turns['n']}.", tool_calls=[(f"toolu_{turns['n']:03d}", "read",
                                                                        {"path": "data.txt"})])

    fake_llm.responder = respond
    info = ModelInfo(provider="anthropic", id="claude-test", api="anthropic", context_window=200_000,
                     max_output_tokens=1_024)
    provider = AnthropicModel(info, api_key="test-key", base_url=fake_llm.anthropic_base_url)
    model = Recording(provider)
    agent = Agent(model, [ReadTool()], ToolContext(workspace=workspace), "You are a careful coding agent.",
                  limits=Limits(max_turns=tool_turns + 1), retry=RetryPolicy(max_retries=0),
                  conversation=SessionConversation(Session.in_memory(workspace)),
                  compactor=Compactor(CompactionConfig(threshold_tokens=TRIGGER_THRESHOLD,
                                                       keep_recent_tokens=2_000)))
    would_have_sent: list[float] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.CompactionStart):  # the request compaction replaced, measured for real
            request = ModelRequest(system=agent.system_prompt, messages=agent.conversation.context(),
                                   tools=agent.tool_specs(), max_output_tokens=info.max_output_tokens)
            would_have_sent.append(wire_tokens(provider, request))

    agent.subscribe(on_event)
    result = agent.run("Read data.txt once per turn until told otherwise.")

    assert result.outcome is Outcome.COMPLETED, result.error
    turn_requests = [r for r in fake_llm.requests if r.body.get("tools")]
    # the measure is the server's own: body bytes / 4
    assert [wire_tokens(provider, r) for r in model.requests if r.tools] == [len(r.raw) / 4 for r in turn_requests]
    assert result.compactions >= 2 and len(would_have_sent) == result.compactions
    assert max(len(r.raw) / 4 for r in fake_llm.requests) <= TRIGGER_THRESHOLD  # never above
    for size in would_have_sent:  # and not early: within 10% below the bound, or over it
        assert size > 0.9 * TRIGGER_THRESHOLD, (size, would_have_sent)
