"""Compaction: cut points, summaries (model, update, fallback), triggers, persistence and totals."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.agent import events as ev
from bot.agent.compaction import (
    CompactionConfig,
    CompactionResult,
    Compactor,
    TokenCounter,
    choose_cut,
    estimate_tokens,
    request_overhead,
)
from bot.agent.loop import Agent, InMemoryConversation, Outcome
from bot.agent.session import COMPACTION_SUMMARY_PREFIX, Session, SessionConversation, SessionError
from bot.cli.session_commands import compact_command
from bot.llm.base import Done, ModelInfo, ModelRequest, StreamEvent
from bot.llm.errors import BadRequestError, ContextOverflowError, ModelError
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    TextContent,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from bot.llm.retry import RetryPolicy
from bot.tools.base import ToolContext
from bot.tools.edit import EditTool
from bot.tools.read import ReadTool
from bot.tools.write import WriteTool

PRICE = Cost(input=0.001, output=0.002, cache_read=0.0, cache_write=0.0, total=0.003)
Respond = Callable[[ModelRequest], AssistantMessage | ModelError]


class ScriptedModel:
    """A model whose reply is computed from the request; records every request."""

    def __init__(self, respond: Respond, context_window: int = 200_000) -> None:
        self.info = ModelInfo(provider="scripted", id="s1", api="mock", context_window=context_window)
        self.respond = respond
        self.requests: list[ModelRequest] = []

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        self.requests.append(request)
        reply = self.respond(request)
        if isinstance(reply, ModelError):
            raise reply
        yield Done(message=reply)


def reply(text: str = "", calls: list[ToolCall] | None = None, usage: Usage | None = None) -> AssistantMessage:
    content: list[TextContent | ToolCall] = [TextContent(text=text)] if text else []
    content += calls or []
    return AssistantMessage(content=list(content), provider="scripted", model="s1", api="mock",
                            usage=usage or Usage(), cost=PRICE, stop_reason="tool_use" if calls else "stop")


def is_summary_request(request: ModelRequest) -> bool:
    return not request.tools


def request_tokens(request: ModelRequest) -> int:
    return request_overhead(request.system, request.tools) + sum(estimate_tokens(m) for m in request.messages)


def compact_now(agent: Agent, config: CompactionConfig, instructions: str | None = None) -> CompactionResult | None:
    """`/compact` on a finished run: a compactor with `config`, called through the loop's protocol."""
    agent.compactor = Compactor(config)
    result = agent.compact("manual", instructions)
    assert result is None or isinstance(result, CompactionResult)
    return result


def reading_agent(tmp_path: Path, turns: int, *, threshold: int, keep: int = 20_000,
                  summary: Callable[[ModelRequest], AssistantMessage | ModelError] | None = None,
                  file_size: int = 8_000) -> tuple[Agent, ScriptedModel, Session, list[ev.Event]]:
    """An agent that reads `turns` files of `file_size` bytes one per turn, then answers."""
    for i in range(turns):
        (tmp_path / f"f{i}.txt").write_text(f"file {i}\n" + ("x" * 79 + "\n") * (file_size // 80))
    state = {"turn": 0}

    def respond(request: ModelRequest) -> AssistantMessage | ModelError:
        if is_summary_request(request):
            return summary(request) if summary else reply(f"## Goal\nread files (summary {len(request.messages)})",
                                                          usage=Usage(input=100, output=50))
        state["turn"] += 1
        if state["turn"] > turns:
            return reply("all read")
        i = state["turn"] - 1
        return reply(calls=[ToolCall(id=f"c{i}", name="read", arguments={"path": f"f{i}.txt"})])

    model = ScriptedModel(respond)
    session = Session.create(tmp_path / "session.jsonl", cwd=tmp_path)
    events: list[ev.Event] = []
    agent = Agent(model, [ReadTool()], ToolContext(workspace=tmp_path), "You are a test agent.",
                  conversation=SessionConversation(session),
                  compactor=Compactor(CompactionConfig(threshold_tokens=threshold, keep_recent_tokens=keep)),
                  retry=RetryPolicy(max_retries=0))
    agent.subscribe(events.append)
    return agent, model, session, events


# -- cut points --------------------------------------------------------------------------------------

def test_cut_starts_at_a_user_or_assistant_message_and_fits_the_budget(tmp_path: Path) -> None:
    conversation = SessionConversation(Session.in_memory(tmp_path))
    conversation.append(UserMessage(content="go"))
    for i in range(6):
        call = ToolCall(id=f"c{i}", name="read", arguments={"path": f"f{i}"})
        conversation.append(reply(calls=[call]))
        conversation.append(ToolResultMessage(tool_call_id=call.id, tool_name="read",
                                              content=[TextContent(text="y" * (400 * (i + 1)))]))
    items = conversation.items()
    count = TokenCounter()
    for budget in range(0, 6_000, 37):
        cut = choose_cut(items, budget, count)
        kept = items[cut:]
        assert sum(count(i) for i in kept) <= budget
        if kept:
            assert not isinstance(kept[0].message, ToolResultMessage)
            kept_calls = {c.id for i in kept if isinstance(i.message, AssistantMessage) for c in i.message.tool_calls}
            kept_results = {i.message.tool_call_id for i in kept if isinstance(i.message, ToolResultMessage)}
            assert kept_results <= kept_calls  # never a result without its call
    assert choose_cut(items, 0, count) == len(items)


# -- threshold compaction in a run -------------------------------------------------------------------

def test_threshold_compaction_bounds_requests_and_records_everything(tmp_path: Path) -> None:
    agent, model, session, events = reading_agent(tmp_path, 30, threshold=12_000, keep=4_000)
    result = agent.run("Read all the files.")
    assert result.outcome is Outcome.COMPLETED and result.compactions >= 3
    turn_requests = [r for r in model.requests if not is_summary_request(r)]
    assert all(request_tokens(r) <= 12_000 for r in model.requests)
    starts = [e for e in events if isinstance(e, ev.CompactionStart)]
    ends = [e for e in events if isinstance(e, ev.CompactionEnd)]
    assert len(starts) == len(ends) == result.compactions
    assert all(e.reason == "threshold" and e.tokens_after < e.tokens_before <= 12_000 + 3_000 for e in ends)
    # the file resumes to exactly the context of the last request
    loaded = Session.load(session.path)  # type: ignore[arg-type]
    assert not loaded.warnings
    assert [m.model_dump() for m in loaded.context()] == \
        [m.model_dump() for m in [*turn_requests[-1].messages, result_message(agent)]]
    # every model call was counted, including the summaries, and is restored on resume
    summaries = len(model.requests) - len(turn_requests)
    assert agent.usage.input == 100 * summaries + sum(0 for _ in turn_requests)
    totals = loaded.totals()
    assert totals.usage == agent.usage and totals.cost.total == pytest.approx(agent.cost.total)
    assert agent.cost.total == pytest.approx(0.003 * len(model.requests))
    # the read-file list is complete: summarised files + files still in the kept tail
    compaction = loaded.latest_compaction()
    assert compaction is not None
    listed = set(compaction["details"]["read_files"])
    in_tail = {c.arguments["path"] for m in loaded.context() if isinstance(m, AssistantMessage)
               for c in m.tool_calls}
    assert listed | in_tail == {f"f{i}.txt" for i in range(30)}
    assert "<read-files>\nf0.txt" in compaction["summary"]


def result_message(agent: Agent) -> AssistantMessage:
    assert agent.last_assistant is not None
    return agent.last_assistant


def test_a_later_compaction_updates_the_previous_summary(tmp_path: Path) -> None:
    prompts: list[str] = []

    def summary(request: ModelRequest) -> AssistantMessage:
        prompt = request.messages[0].text
        prompts.append(prompt)
        return reply(f"## Goal\nsummary number {len(prompts)}", usage=Usage(input=10, output=5))

    agent, _, session, _ = reading_agent(tmp_path, 24, threshold=10_000, keep=3_000, summary=summary)
    agent.run("Read all the files.")
    assert len(prompts) >= 2
    assert "<previous-summary>" not in prompts[0] and "summarized" in prompts[0]
    # one long agent turn: the cut falls inside it, and the summariser is told so
    assert "stops in the middle of the assistant's current turn" in prompts[0]
    second = prompts[1]
    assert "<previous-summary>\n## Goal\nsummary number 1\n</previous-summary>" in second
    assert "<read-files>" not in second.split("<previous-summary>")[1]  # lists are ours, re-added each time
    first_files = set(session.entries[[e["type"] for e in session.entries].index("compaction")]
                      ["details"]["read_files"])
    latest = session.latest_compaction()
    assert latest is not None and first_files <= set(latest["details"]["read_files"])


def test_a_failed_summary_falls_back_to_a_deterministic_one_and_the_run_goes_on(tmp_path: Path) -> None:
    agent, _, session, events = reading_agent(
        tmp_path, 12, threshold=9_000, keep=3_000,
        summary=lambda request: BadRequestError("summaries are broken today", provider="scripted"))
    result = agent.run("Read all the files, please.")
    assert result.outcome is Outcome.COMPLETED and result.compactions >= 1
    compaction = session.latest_compaction()
    assert compaction is not None and compaction["fallback"] is True
    assert "summaries are broken today" in compaction["error"]
    assert "Read all the files, please." in compaction["summary"]  # the first goal
    assert "<read-files>\nf0.txt" in compaction["summary"]
    assert any(isinstance(e, ev.CompactionEnd) and e.summary_fallback for e in events)
    assert compaction["usage"] == {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}


def test_the_entry_is_persisted_before_the_context_changes(tmp_path: Path) -> None:
    agent, _, session, _ = reading_agent(tmp_path, 3, threshold=100_000)
    agent.run("Read.")
    conversation = agent.conversation
    assert isinstance(conversation, SessionConversation)
    before = conversation.context()
    session.close()
    session.path = Path("/dev/full")  # every write now fails with ENOSPC
    with pytest.raises(SessionError, match="cannot write the session"):
        compact_now(agent, CompactionConfig(keep_recent_tokens=10))
    assert [m.model_dump() for m in conversation.context()] == [m.model_dump() for m in before]


def test_context_overflow_compacts_and_retries_the_turn_once(tmp_path: Path) -> None:
    calls = {"n": 0}

    def respond(request: ModelRequest) -> AssistantMessage | ModelError:
        if is_summary_request(request):
            return reply("## Goal\nsummary")
        calls["n"] += 1
        if calls["n"] <= 3:
            return reply(calls=[ToolCall(id=f"c{calls['n']}", name="read", arguments={"path": "big.txt"})])
        if calls["n"] == 4:
            return ContextOverflowError("prompt is too long: 250000 tokens > 200000 maximum", provider="scripted")
        return reply("finished after compaction")

    (tmp_path / "big.txt").write_text(("z" * 99 + "\n") * 200)
    model = ScriptedModel(respond)
    session = Session.create(tmp_path / "s.jsonl", cwd=tmp_path)
    events: list[ev.Event] = []
    agent = Agent(model, [ReadTool()], ToolContext(workspace=tmp_path), "sys",
                  conversation=SessionConversation(session), compactor=Compactor(), retry=RetryPolicy(max_retries=0))
    agent.subscribe(events.append)
    result = agent.run("Read big.txt three times.")
    assert result.outcome is Outcome.COMPLETED and result.final_text == "finished after compaction"
    assert [e.reason for e in events if isinstance(e, ev.CompactionEnd)] == ["overflow"]
    assert result.compactions == 1


def test_manual_compaction_passes_instructions_and_counts(tmp_path: Path) -> None:
    seen: list[str] = []

    def summary(request: ModelRequest) -> AssistantMessage:
        seen.append(request.messages[0].text)
        return reply("## Goal\nmanual")

    agent, _, _, events = reading_agent(tmp_path, 4, threshold=100_000, summary=summary)
    agent.run("Read four files.")
    result = compact_now(agent, CompactionConfig(keep_recent_tokens=10), "focus on file sizes")
    assert result is not None and agent.compactions == 1 and result.reason == "manual"
    assert "Additional focus requested by the user: focus on file sizes" in seen[0]
    assert agent.conversation.context()[0].text.startswith(COMPACTION_SUMMARY_PREFIX)
    assert [e.reason for e in events if isinstance(e, ev.CompactionStart)] == ["manual"]


def test_a_single_huge_turn_is_split_and_every_request_stays_under_the_bound(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"big{i}.txt").write_text(("q" * 99 + "\n") * 500)
    state = {"n": 0}

    def respond(request: ModelRequest) -> AssistantMessage:
        if is_summary_request(request):
            return reply("## Goal\nsplit turn summary")
        state["n"] += 1
        if state["n"] == 1:  # one turn, four 50 KB results
            return reply(calls=[ToolCall(id=f"b{i}", name="read", arguments={"path": f"big{i}.txt"})
                                for i in range(4)])
        return reply("done")

    model = ScriptedModel(respond)
    agent = Agent(model, [ReadTool()], ToolContext(workspace=tmp_path), "sys",
                  conversation=SessionConversation(Session.in_memory(tmp_path)),
                  compactor=Compactor(CompactionConfig(threshold_tokens=9_000, keep_recent_tokens=3_000)))
    result = agent.run("x" * 22_000 + " read the big files")  # a huge prompt too
    assert result.outcome is Outcome.COMPLETED and result.compactions >= 1
    assert all(request_tokens(r) <= 9_000 for r in model.requests)
    assert len([r for r in model.requests if is_summary_request(r)]) >= 2  # chunked summary


def test_an_in_memory_conversation_compacts_like_a_session_backed_one(tmp_path: Path) -> None:
    model = ScriptedModel(lambda request: reply("hi") if request.system == "sys" else reply("## Goal\nin memory"))
    agent = Agent(model, [], ToolContext(workspace=tmp_path), "sys", conversation=InMemoryConversation(),
                  compactor=Compactor(CompactionConfig(threshold_tokens=1)))
    events: list[ev.Event] = []
    agent.subscribe(events.append)
    agent.run("one")
    result = agent.run("two")
    assert result.compactions >= 1 and result.final_text == "hi"
    assert any(isinstance(e, ev.CompactionEnd) for e in events)
    assert agent.conversation.context()[0].text.startswith(COMPACTION_SUMMARY_PREFIX)
    assert not [e for e in events if isinstance(e, ev.Warning) and "session-backed" in e.message]
    assert list(tmp_path.iterdir()) == []  # nothing was written anywhere


# -- opi compact SESSION -----------------------------------------------------------------------------

def test_opi_compact_on_a_stored_session(tmp_path: Path) -> None:
    agent, _, session, _ = reading_agent(tmp_path, 6, threshold=100_000)
    agent.run("Read six files.")
    session.close()
    model = ScriptedModel(lambda request: reply("## Goal\nfrom opi compact", usage=Usage(input=3, output=2)))
    out, err = io.StringIO(), io.StringIO()
    code = compact_command(str(session.path), model=model, config=CompactionConfig(keep_recent_tokens=500),
                           out=out, err=err)
    assert code == 0, err.getvalue()
    assert "Compacted" in out.getvalue() and "messages summarised" in out.getvalue()
    loaded = Session.load(session.path)  # type: ignore[arg-type]
    assert "from opi compact" in loaded.context()[0].text
    assert loaded.totals().usage.input == 3

    out = io.StringIO()
    tiny = tmp_path / "tiny.jsonl"
    Session.create(tiny, cwd=tmp_path).append_message(UserMessage(content="hi"))
    assert compact_command(str(tiny), model=model, out=out, err=err) == 0
    assert "nothing to compact" in out.getvalue()

    err = io.StringIO()
    assert compact_command("no-such-id", model=model, directory=tmp_path, err=err) == 2
    assert "no session matches 'no-such-id'" in err.getvalue()


def test_compaction_entry_fields(tmp_path: Path) -> None:
    agent, _, _, _ = reading_agent(tmp_path, 12, threshold=9_000, keep=3_000)
    agent.run("Read.")
    lines = (tmp_path / "session.jsonl").read_text().splitlines()
    entry = json.loads(next(line for line in lines if '"type":"compaction"' in line))
    assert set(entry) >= {"type", "id", "parent_id", "timestamp", "summary", "first_kept_entry_id",
                          "tokens_before", "tokens_after", "details", "usage", "cost", "reason", "model",
                          "fallback"}
    assert entry["model"] == "scripted:s1" and entry["reason"] == "threshold"
    assert set(entry["details"]) == {"read_files", "modified_files"}


def test_modified_files_move_out_of_the_read_list(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a = 1\n")
    script = iter([
        reply(calls=[ToolCall(id="1", name="read", arguments={"path": "a.py"})]),
        reply(calls=[ToolCall(id="2", name="edit", arguments={"path": "a.py", "old_text": "a = 1",
                                                              "new_text": "a = 2"})]),
        reply(calls=[ToolCall(id="3", name="write", arguments={"path": "b.py", "content": "b = 1\n"})]),
        reply(calls=[ToolCall(id="4", name="read", arguments={"path": "b.py"})]),
        reply("done"),
    ])
    model = ScriptedModel(lambda request: reply("## Goal\ns") if is_summary_request(request) else next(script))
    session = Session.create(tmp_path / "s.jsonl", cwd=tmp_path)
    agent = Agent(model, [ReadTool(), EditTool(), WriteTool()], ToolContext(workspace=tmp_path), "sys",
                  conversation=SessionConversation(session), compactor=Compactor())
    assert agent.run("edit").outcome is Outcome.COMPLETED
    compact_now(agent, CompactionConfig(keep_recent_tokens=1))
    latest = session.latest_compaction()
    assert latest is not None
    assert latest["details"] == {"read_files": [], "modified_files": ["a.py", "b.py"]}
    assert (tmp_path / "a.py").read_text() == "a = 2\n"


def test_file_lists_in_the_summary_are_capped_but_complete_in_details() -> None:
    from bot.agent.compaction import format_file_lists

    paths = [f"src/module_{i:05d}.py" for i in range(5_000)]
    text = format_file_lists(paths, ["a.py"], max_chars=2_000)
    assert len(text) < 2_300 and "<modified-files>\na.py\n</modified-files>" in text
    assert "more (listed in the session file)" in text
    assert format_file_lists([], []) == ""


def test_a_bound_smaller_than_the_system_prompt_is_reported(tmp_path: Path) -> None:
    script = iter([reply(calls=[ToolCall(id="1", name="read", arguments={"path": "a.txt"})]), reply("done")])
    (tmp_path / "a.txt").write_text("hello\n" * 200)
    model = ScriptedModel(lambda request: reply("## Goal\ns") if is_summary_request(request) else next(script))
    agent = Agent(model, [ReadTool()], ToolContext(workspace=tmp_path), "s" * 4_000,
                  conversation=SessionConversation(Session.in_memory(tmp_path)),
                  compactor=Compactor(CompactionConfig(threshold_tokens=1_200)))
    events: list[ev.Event] = []
    agent.subscribe(events.append)
    assert agent.run("read a.txt").outcome is Outcome.COMPLETED
    warnings = [e.message for e in events if isinstance(e, ev.Warning)]
    assert warnings and "over the 1200-token bound" in warnings[0] and "raise compaction.threshold_tokens" in warnings[0]


def test_output_the_model_has_not_read_yet_is_kept_when_it_fits(tmp_path: Path) -> None:
    # keep_recent_tokens is smaller than one tool result: the result is kept anyway, since it fits the bound
    agent, model, _, _ = reading_agent(tmp_path, 10, threshold=6_000, keep=200, file_size=8_000)
    result = agent.run("Read the files.")
    assert result.outcome is Outcome.COMPLETED and result.compactions >= 3
    turn_requests = [r for r in model.requests if not is_summary_request(r)]
    for number, request in enumerate(turn_requests[1:]):
        last = request.messages[-1]
        assert isinstance(last, ToolResultMessage) and last.tool_call_id == f"c{number}"
    assert all(request_tokens(r) <= 6_000 for r in model.requests)


def test_a_summary_failing_on_a_later_chunk_still_counts_the_calls_that_were_made(tmp_path: Path) -> None:
    summary_calls = {"n": 0}

    def respond(request: ModelRequest) -> AssistantMessage | ModelError:
        if is_summary_request(request):
            summary_calls["n"] += 1
            if summary_calls["n"] == 1:
                return reply("## Goal\nfirst chunk", usage=Usage(input=11, output=1))
            return BadRequestError("second chunk refused", provider="scripted")
        return reply("done")

    model = ScriptedModel(respond)
    session = Session.in_memory(tmp_path)
    conversation = SessionConversation(session)
    for i in range(12):  # long user messages: more than one summary chunk under a small bound
        conversation.append(UserMessage(content=f"note {i}: " + "w" * 6_000))
        conversation.append(reply(f"ack {i}"))
    agent = Agent(model, [], ToolContext(workspace=tmp_path), "sys", conversation=conversation,
                  retry=RetryPolicy(max_retries=0))
    result = compact_now(agent, CompactionConfig(threshold_tokens=8_000, keep_recent_tokens=500))
    assert result is not None and result.fallback and summary_calls["n"] == 2
    assert "second chunk refused" in str(result.error)
    assert result.usage.input == 11 and agent.usage.input == 11
    assert result.entry["usage"]["input"] == 11 and session.totals().usage.input == 11
