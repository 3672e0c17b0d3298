"""Session files: the writer, the tolerant reader, branches, context reconstruction and totals."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.agent.session import (
    COMPACTION_SUMMARY_PREFIX,
    Session,
    SessionConversation,
    SessionError,
    SessionFormatError,
    fork_session,
)
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    Message,
    TextContent,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    message_to_dict,
)


def assistant(text: str = "", *, calls: list[ToolCall] | None = None, usage: Usage | None = None,
              cost: Cost | None = None) -> AssistantMessage:
    content: list[TextContent | ToolCall] = [TextContent(text=text)] if text else []
    content += calls or []
    return AssistantMessage(content=list(content), provider="mock", model="m", api="mock",
                            usage=usage or Usage(), cost=cost or Cost(),
                            stop_reason="tool_use" if calls else "stop")


def result(call_id: str, text: str) -> ToolResultMessage:
    return ToolResultMessage(tool_call_id=call_id, tool_name="read", content=[TextContent(text=text)])


def dumped(messages: list[Message]) -> list[dict[str, object]]:
    return [message_to_dict(m) for m in messages]


def new_session(tmp_path: Path, name: str = "s.jsonl", **header: object) -> Session:
    return Session.create(tmp_path / name, cwd=tmp_path, **header)  # type: ignore[arg-type]


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- writing -----------------------------------------------------------------------------------------

def test_header_and_entries_follow_the_documented_format(tmp_path: Path) -> None:
    session = new_session(tmp_path, model="anthropic:claude", repo="o/r", git_commit="abc123",
                          origin="https://ci/run/1", metadata={"pr": 7})
    call = ToolCall(id="c1", name="read", arguments={"path": "a.py"})
    session.append_message(UserMessage(content="hi"))
    session.append_message(assistant("reading", calls=[call]))
    session.append_message(result("c1", "text"))
    session.append_model_change("openai", "gpt-4.1")
    session.set_name("my session")
    header, *entries = lines_of(tmp_path / "s.jsonl")
    assert header == {"type": "session", "version": 1, "id": session.header.id,
                      "timestamp": header["timestamp"], "cwd": str(tmp_path), "parent_session": None,
                      "model": "anthropic:claude", "repo": "o/r", "git_commit": "abc123",
                      "origin": "https://ci/run/1", "metadata": {"pr": 7}}
    assert [e["type"] for e in entries] == ["message", "message", "message", "model_change", "session_info"]
    assert entries[0]["parent_id"] is None
    for previous, entry in itertools.pairwise(entries):
        assert entry["parent_id"] == previous["id"]
    assert all(len(str(e["id"])) == 8 and str(e["timestamp"]).endswith("Z") for e in entries)
    assert entries[1]["message"]["content"][1] == {"type": "tool_call", "id": "c1", "name": "read",  # type: ignore[index]
                                                   "arguments": {"path": "a.py"}}
    assert entries[2]["message"]["role"] == "tool_result"  # type: ignore[index]
    assert entries[3]["provider"] == "openai" and entries[3]["model"] == "gpt-4.1"
    assert entries[4]["name"] == "my session"


def test_every_entry_is_on_disk_when_append_returns(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    for i in range(5):
        session.append_message(UserMessage(content=f"m{i}"))
        assert len(lines_of(tmp_path / "s.jsonl")) == i + 2  # another reader sees it at once


def test_creating_over_an_existing_session_is_refused(tmp_path: Path) -> None:
    new_session(tmp_path).append_message(UserMessage(content="keep me"))
    with pytest.raises(SessionError, match="existing file"):
        new_session(tmp_path)
    assert "keep me" in (tmp_path / "s.jsonl").read_text()


def test_lone_surrogates_from_undecodable_output_are_stored(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    session.append_message(UserMessage(content=bad))
    loaded = Session.load(tmp_path / "s.jsonl")
    assert loaded.context()[0].text == bad and not loaded.warnings


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bot.agent.session import Session
    from bot.llm.messages import UserMessage
    session = Session.create(Path(sys.argv[1]), cwd="/w")
    i = 0
    while True:
        session.append_message(UserMessage(content="x" * 5000 + str(i)))
        i += 1
        if i == 20:
            print("ready", flush=True)
""")


def test_kill_9_while_writing_loses_at_most_the_entry_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    # Killed while it goes on appending (it never stops): wherever the kill lands. The deterministic twin,
    # test_a_file_cut_at_any_byte_loads_a_prefix_of_the_conversation, cuts the file at offsets all through it.
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    loaded = Session.load(path)
    context = loaded.context()
    assert len(context) >= 20
    # entries are consecutive: nothing in the middle is lost, only (maybe) a partial last line
    assert [m.text[5000:] for m in context] == [str(i) for i in range(len(context))]
    assert all("corrupt" not in w for w in loaded.warnings)


# -- reading -----------------------------------------------------------------------------------------

def test_resume_appends_to_the_same_file_and_rebuilds_the_context(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    conversation = SessionConversation(session)
    conversation.append(UserMessage(content="first"))
    conversation.append(assistant("answer"))
    session.close()
    loaded = Session.load(tmp_path / "s.jsonl")
    assert dumped(loaded.context()) == dumped(conversation.context())
    resumed = SessionConversation(loaded)
    resumed.append(UserMessage(content="second"))
    entries = lines_of(tmp_path / "s.jsonl")[1:]
    assert len(entries) == 3 and entries[2]["parent_id"] == entries[1]["id"]
    assert [m.role for m in Session.load(tmp_path / "s.jsonl").context()] == ["user", "assistant", "user"]


def test_truncated_last_line_is_skipped_and_the_next_append_starts_a_new_line(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    session.append_message(UserMessage(content="whole"))
    session.close()
    with open(tmp_path / "s.jsonl", "ab") as handle:
        handle.write(b'{"type":"message","id":"abcd1234","parent_id":null,"timest')
    loaded = Session.load(tmp_path / "s.jsonl")
    assert [m.text for m in loaded.context()] == ["whole"]
    assert loaded.warnings == [f"{tmp_path / 's.jsonl'}: line 3 is a truncated last line (58 bytes, "
                               "probably cut by a crash); ignored"]
    SessionConversation(loaded).append(UserMessage(content="after"))
    again = Session.load(tmp_path / "s.jsonl")
    assert [m.text for m in again.context()] == ["whole", "after"]
    assert again.warnings == [f"{tmp_path / 's.jsonl'}: skipped 1 corrupt line(s): 3"]


def test_corrupt_lines_are_skipped_reported_by_number_and_the_branch_stays_whole(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    for i in range(4):
        session.append_message(UserMessage(content=f"m{i}"))
    session.close()
    path = tmp_path / "s.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = "{not json"  # m1: its child m2 now names a missing parent
    lines.insert(4, '["a list, not an entry"]')
    path.write_text("\n".join(lines) + "\n")
    loaded = Session.load(path)
    assert [m.text for m in loaded.context()] == ["m0", "m2", "m3"]
    assert f"{path}: skipped 2 corrupt line(s): 3, 5" in loaded.warnings
    assert any("missing parent" in w for w in loaded.warnings)


@pytest.mark.parametrize(("content", "found"), [
    (b"", "it is empty"),
    (b"hello world\n", "the first line is not JSON"),
    (b'{"type":"message","id":"x"}\n', "the first line has type 'message'"),
    (b'[1, 2]\n', "the first line has type 'list'"),
    (b'{"type":"session"}\n', "no string 'id'"),
])
def test_a_file_that_is_not_a_session_is_refused_naming_file_and_problem(
        tmp_path: Path, content: bytes, found: str) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_bytes(content)
    with pytest.raises(SessionFormatError) as error:
        Session.load(path)
    assert str(path) in str(error.value) and found in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="no such session file"):
        Session.load(tmp_path / "nope.jsonl")


def test_unknown_entry_types_and_newer_versions_are_kept_and_ignored(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    session.append_message(UserMessage(content="before"))
    session.append("bookmark", label="v2 feature")
    session.append_message(UserMessage(content="after"))
    session.close()
    path = tmp_path / "s.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"version":1', '"version":2')
    path.write_text("\n".join(lines) + "\n")
    loaded = Session.load(path)
    assert [m.text for m in loaded.context()] == ["before", "after"]
    assert [e["type"] for e in loaded.entries] == ["message", "bookmark", "message"]
    assert any("newer format (version 2)" in w for w in loaded.warnings)


def test_an_invalid_message_on_the_branch_is_left_out_with_a_warning(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    session.append_message(UserMessage(content="good"))
    session.append("message", message={"role": "assistant", "content": "not a list"})
    session.append_message(UserMessage(content="also good"))
    loaded = Session.load(tmp_path / "s.jsonl")
    assert [m.text for m in loaded.context()] == ["good", "also good"]
    assert any("invalid message" in w for w in loaded.warnings)


# -- branches ----------------------------------------------------------------------------------------

def test_switching_the_leaf_keeps_both_branches_and_resumes_on_the_new_one(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    conversation = SessionConversation(session)
    conversation.append(UserMessage(content="q1"))
    conversation.append(assistant("a1"))
    first_answer = session.tip
    conversation.append(UserMessage(content="q2 (abandoned)"))
    conversation.append(assistant("a2 (abandoned)"))
    assert first_answer is not None
    conversation.switch_leaf(first_answer)
    assert [m.text for m in conversation.context()] == ["q1", "a1"]
    conversation.append(UserMessage(content="q2 (new)"))
    loaded = Session.load(tmp_path / "s.jsonl")
    assert [m.text for m in loaded.context()] == ["q1", "a1", "q2 (new)"]
    assert [e["type"] for e in loaded.entries].count("leaf") == 1
    assert len(loaded.children(first_answer)) == 2
    # a leaf as the very last line is the tip too
    conversation.switch_leaf(first_answer)
    assert [m.text for m in Session.load(tmp_path / "s.jsonl").context()] == ["q1", "a1"]


def test_branch_summary_carries_what_the_abandoned_branch_learnt(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    conversation = SessionConversation(session)
    conversation.append(UserMessage(content="q1"))
    root = session.tip
    conversation.append(UserMessage(content="explored"))
    conversation.switch_leaf(root, summary="approach A fails on empty input")
    texts = [m.text for m in Session.load(tmp_path / "s.jsonl").context()]
    assert texts[0] == "q1" and "approach A fails on empty input" in texts[1]


def test_switching_to_an_unknown_entry_is_refused(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    with pytest.raises(SessionError, match="no entry with id 'zzz'"):
        session.switch_leaf("zzz")


# -- compaction entries and totals -------------------------------------------------------------------

def test_context_is_summary_then_kept_tail_then_newer_messages(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    conversation = SessionConversation(session)
    for text in ("old question", "old answer", "kept question", "kept answer"):
        conversation.append(UserMessage(content=text) if "question" in text else assistant(text))
    kept_id = session.entries[2]["id"]
    conversation.apply_compaction(summary="## Goal\nold stuff", first_kept_entry_id=kept_id, tokens_before=100,
                                  tokens_after=40, read_files=["a.py"], modified_files=["b.py"])
    conversation.append(UserMessage(content="new question"))
    expected = [COMPACTION_SUMMARY_PREFIX + "## Goal\nold stuff\n</summary>", "kept question", "kept answer",
                "new question"]
    assert [m.text for m in conversation.context()] == expected
    loaded = Session.load(tmp_path / "s.jsonl")
    assert dumped(loaded.context()) == dumped(conversation.context())
    items = SessionConversation(loaded).items()
    assert [i.kind for i in items] == ["compaction_summary", "message", "message", "message"]
    assert [i.fresh for i in items] == [True, False, False, True]
    compaction = loaded.latest_compaction()
    assert compaction is not None and compaction["details"] == {"read_files": ["a.py"], "modified_files": ["b.py"]}


def test_totals_sum_every_branch_and_compaction_calls(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    priced = Cost(input=0.01, output=0.02, cache_read=0.0, cache_write=0.0, total=0.03)
    session.append_message(UserMessage(content="q"))
    root = session.tip
    session.append_message(assistant("a", usage=Usage(input=10, output=5, cache_read=3), cost=priced))
    session.switch_leaf(root)
    session.append_message(assistant("b", usage=Usage(input=20, output=1, cache_write=2), cost=priced))
    session.append_compaction(summary="s", first_kept_entry_id=None, tokens_before=1, tokens_after=1,
                              read_files=[], modified_files=[], usage={"input": 7, "output": 7},
                              cost={"input": 0.001, "output": 0.001, "cache_read": 0, "cache_write": 0,
                                    "total": 0.002})
    totals = Session.load(tmp_path / "s.jsonl").totals()
    assert totals.usage == Usage(input=37, output=13, cache_read=3, cache_write=2)
    assert totals.cost.total == pytest.approx(0.062)
    session.append_message(assistant("unpriced"))  # Cost() = unknown price
    assert Session.load(tmp_path / "s.jsonl").totals().cost.total is None


def test_fork_copies_the_active_branch_into_a_new_file_naming_its_parent(tmp_path: Path) -> None:
    source = new_session(tmp_path, "source.jsonl", model="mock:m")
    conversation = SessionConversation(source)
    conversation.append(UserMessage(content="q"))
    conversation.append(assistant("a"))
    before = (tmp_path / "source.jsonl").read_bytes()
    fork = fork_session(Session.load(tmp_path / "source.jsonl"), tmp_path / "fork.jsonl", cwd="/elsewhere")
    SessionConversation(fork).append(UserMessage(content="only in the fork"))
    assert (tmp_path / "source.jsonl").read_bytes() == before
    loaded = Session.load(tmp_path / "fork.jsonl")
    assert loaded.header.parent_session == source.header.id and loaded.header.cwd == "/elsewhere"
    assert loaded.header.model == "mock:m"
    assert [m.text for m in loaded.context()] == ["q", "a", "only in the fork"]


def test_in_memory_session_writes_nothing(tmp_path: Path) -> None:
    session = Session.in_memory(tmp_path)
    conversation = SessionConversation(session)
    conversation.append(UserMessage(content="q"))
    assert [m.text for m in conversation.context()] == ["q"]
    assert list(tmp_path.iterdir()) == []
    assert os.listdir(tmp_path) == []


def test_a_file_cut_at_any_byte_loads_a_prefix_of_the_conversation(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    conversation = SessionConversation(session)
    for i in range(6):
        conversation.append(UserMessage(content=f"question {i} é"))
        conversation.append(assistant(f"answer {i}", usage=Usage(input=i)))
    session.close()
    data = (tmp_path / "s.jsonl").read_bytes()
    header_end = data.index(b"\n") + 1
    full = dumped(Session.load(tmp_path / "s.jsonl").context())
    cut = tmp_path / "cut.jsonl"
    for offset in range(header_end, len(data) + 1, 7):
        cut.write_bytes(data[:offset])
        loaded = Session.load(cut)
        context = dumped(loaded.context())
        assert context == full[:len(context)]
        assert len(context) >= data[:offset].count(b"\n") - 1  # every complete line survived
        assert all("corrupt" not in w for w in loaded.warnings)


def test_flipped_bytes_never_make_loading_fail(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    for i in range(10):
        session.append_message(UserMessage(content=f"message {i}"))
    session.close()
    data = bytearray((tmp_path / "s.jsonl").read_bytes())
    header_end = data.index(b"\n") + 1
    damaged = tmp_path / "damaged.jsonl"
    for position in range(header_end, len(data), 13):
        copy = bytearray(data)
        copy[position] ^= 0xFF
        damaged.write_bytes(bytes(copy))
        loaded = Session.load(damaged)  # never raises: the damage is skipped and reported
        assert len(loaded.context()) >= 9 or loaded.warnings


def test_invalid_utf8_loses_only_its_line(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    for i in range(3):
        session.append_message(UserMessage(content=f"message {i}"))
    session.close()
    path = tmp_path / "s.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"message 1", b"message \xff")
    path.write_bytes(b"\n".join(lines))
    loaded = Session.load(path)
    assert [m.text for m in loaded.context()] == ["message 0", "message 2"]
    assert f"{path}: skipped 1 corrupt line(s): 3" in loaded.warnings


def test_a_leaf_whose_target_line_is_lost_falls_back_to_the_last_valid_entry(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    conversation = SessionConversation(session)
    conversation.append(UserMessage(content="q1"))
    conversation.append(assistant("a1"))
    target = session.tip
    conversation.append(UserMessage(content="q2"))
    conversation.append(assistant("a2"))
    assert target is not None
    conversation.switch_leaf(target)
    session.close()
    path = tmp_path / "s.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:25]  # a1's line (the leaf's target) is cut: corrupt
    path.write_text("\n".join(lines) + "\n")
    loaded = Session.load(path)
    # the leaf moves nothing: the branch still ends at a2, and nothing on it is lost but the corrupt line
    assert [m.text for m in loaded.context()] == ["q1", "q2", "a2"]
    assert any(f"moves the tip to {target!r}, which is not in the file" in w for w in loaded.warnings)
    SessionConversation(loaded).append(UserMessage(content="after"))
    appended = json.loads(path.read_text().splitlines()[-1])
    a2 = [e for e in loaded.entries if e["type"] == "message"][-2]
    assert appended["parent_id"] == a2["id"] != target  # hangs from an entry that exists
    assert [m.text for m in Session.load(path).context()] == ["q1", "q2", "a2", "after"]


def test_forking_from_an_entry_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    source = new_session(tmp_path, "source.jsonl")
    source.append_message(UserMessage(content="q"))
    with pytest.raises(SessionError, match="no entry with id 'deadbeef'"):
        fork_session(source, tmp_path / "fork.jsonl", cwd=tmp_path, tip="deadbeef")
    assert not (tmp_path / "fork.jsonl").exists()


def test_a_session_file_appears_with_its_first_entry(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    assert not (tmp_path / "s.jsonl").exists()
    session.close()
    assert not (tmp_path / "s.jsonl").exists()
    again = new_session(tmp_path)
    again.append_message(UserMessage(content="first"))
    assert [line["type"] for line in lines_of(tmp_path / "s.jsonl")] == ["session", "message"]


def test_a_pi_file_is_not_read_as_an_opi_session(tmp_path: Path) -> None:
    path = tmp_path / "pi.jsonl"
    path.write_text('{"type":"session","version":3,"id":"x","timestamp":"t","cwd":"/"}\n')
    with pytest.raises(SessionFormatError, match="a pi session"):
        Session.load(path)
