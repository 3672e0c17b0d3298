"""Interop with pi: files written by the real pi 0.73.1 (tests/data/pi, see its README) load with the
context pi itself builds from them; `opi --resume` of a pi file imports it; `opi export --format pi`
writes a file pi's own SessionManager loads (checked with node when pi is installed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bot.agent.pi_format import message_to_pi
from bot.agent.session import Session, SessionConversation
from bot.agent.session_store import load_session, open_session
from bot.cli.session_commands import export_command
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    Usage,
)

DATA = Path(__file__).parent / "data" / "pi"
PI_FILES = ["pi-0.73.1-edit-session.jsonl", "pi-0.73.1-compacted-session.jsonl"]
PI_PREFIX = Path(os.environ.get("OPI_TEST_PI_PREFIX", "/tmp/pi"))


def pi_context(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name.replace(".jsonl", ".pi-context.json")).read_text())
    return data


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """pi's message as the model sees it, without fields opi does not keep (responseId, diagnostics)."""
    keep = {"role", "content", "toolCallId", "toolName", "isError", "stopReason", "provider", "model", "api",
            "timestamp", "errorMessage"}
    out = {k: v for k, v in message.items() if k in keep}
    if isinstance(out.get("content"), str):
        out["content"] = [{"type": "text", "text": out["content"]}]
    return out


@pytest.mark.parametrize("name", PI_FILES)
def test_a_real_pi_file_rebuilds_the_context_pi_builds(tmp_path: Path, name: str) -> None:
    session = load_session(DATA / name)
    assert session.source_format == "pi" and session.warnings == []
    ours = [comparable(message_to_pi(m.model_dump(mode="json"))) for m in session.context()]
    theirs = [comparable(m) for m in pi_context(name)["messages"]]
    assert ours == theirs
    assert session.header.id == pi_context(name)["id"] and session.tip == pi_context(name)["leafId"]


def test_pi_fields_map_to_opi_types() -> None:
    session = load_session(DATA / "pi-0.73.1-edit-session.jsonl")
    context = session.context()
    first = context[1]
    assert isinstance(first, AssistantMessage) and first.stop_reason == "tool_use"
    assert first.content[0] == ThinkingContent(thinking="I should look at the file first.", signature="sig-fake")
    assert first.content[2] == ToolCall(id="toolu_01", name="read", arguments={"path": "hello.py"})
    assert first.usage == Usage(input=first.usage.input, output=16, cache_read=0, cache_write=0)
    assert first.cost.total == pytest.approx(0.004371)
    result = context[4]
    assert isinstance(result, ToolResultMessage) and result.tool_name == "edit" and result.details
    assert "hello, world" in result.details["diff"]
    assert session.current_model() == ("fake", "fake-model")
    totals = session.totals()
    assert totals.cost.total == pytest.approx(0.004371 + 0.004734 + 0.0048 + 0.004857)
    kinds = [e["type"] for e in session.entries]
    assert kinds[:2] == ["model_change", "thinking_level_change"]  # kept, not in the context


def test_pi_compaction_entry_is_read_as_ours() -> None:
    session = load_session(DATA / "pi-0.73.1-compacted-session.jsonl")
    compaction = session.latest_compaction()
    assert compaction is not None
    assert compaction["details"] == {"read_files": ["notes.md"], "modified_files": []}
    # pi split the second turn: it kept from the assistant answer about notes.md
    kept = next(e for e in session.entries if e["type"] == "message"
                and "notes.md holds" in json.dumps(e["message"]))
    assert compaction["first_kept_entry_id"] == kept["id"] and compaction["tokens_before"] > 0
    assert session.context()[0].text.startswith("The conversation history before this point was compacted")


def test_resuming_a_pi_file_imports_it_into_a_new_opi_session(tmp_path: Path) -> None:
    source = tmp_path / "pi.jsonl"
    shutil.copy(DATA / "pi-0.73.1-compacted-session.jsonl", source)
    before = source.read_bytes()
    session = open_session(cwd=tmp_path, directory=tmp_path / "store", resume=str(source))
    assert session.path is not None and session.path.parent == tmp_path / "store"
    assert any("imported the pi session" in w for w in session.warnings)
    conversation = SessionConversation(session)
    expected = [m.model_dump(mode="json") for m in load_session(source).context()]
    assert [m.model_dump(mode="json") for m in conversation.context()] == expected
    conversation.append(AssistantMessage(content=[TextContent(text="continuing in opi")], provider="p",
                                         model="m", api="mock"))
    session.close()
    assert source.read_bytes() == before  # pi's file is never touched
    reloaded = load_session(session.path)
    assert reloaded.source_format == "opi" and reloaded.header.parent_session == load_session(source).header.id
    assert [m.model_dump(mode="json") for m in reloaded.context()][:-1] == expected


def opi_session_with_everything(tmp_path: Path) -> Session:
    session = Session.create(tmp_path / "opi.jsonl", cwd=tmp_path, model="mock:m")
    conversation = SessionConversation(session)
    from bot.llm.messages import UserMessage

    conversation.append(UserMessage(content="Fix hello.py"))
    call = ToolCall(id="t1", name="read", arguments={"path": "hello.py"})
    conversation.append(AssistantMessage(
        content=[ThinkingContent(thinking="plan", signature="sig"), TextContent(text="reading"), call],
        provider="anthropic", model="claude", api="anthropic", stop_reason="tool_use",
        usage=Usage(input=10, output=5, cache_read=2, cache_write=1),
        cost=Cost(input=0.1, output=0.2, cache_read=0.0, cache_write=0.0, total=0.3)))
    conversation.append(ToolResultMessage(tool_call_id="t1", tool_name="read",
                                          content=[TextContent(text="print('hi')")]))
    kept = session.tip
    conversation.append(AssistantMessage(content=[TextContent(text="abandoned")], provider="anthropic",
                                         model="claude", api="anthropic"))
    conversation.switch_leaf(kept)
    conversation.apply_compaction(summary="## Goal\nfix hello.py", first_kept_entry_id=kept, tokens_before=50,
                                  tokens_after=10, read_files=["hello.py"], modified_files=[])
    conversation.append(UserMessage(content="now print hello, world"))
    conversation.switch_leaf(session.tip)  # a trailing leaf: the exported tip must still be right
    return session


def test_export_to_pi_and_back_keeps_the_context(tmp_path: Path) -> None:
    session = opi_session_with_everything(tmp_path)
    out = tmp_path / "exported.jsonl"
    assert export_command(str(session.path), format="pi", output=out, err=io.StringIO()) == 0
    header = json.loads(out.read_text().splitlines()[0])
    assert header["version"] == 3 and header["id"] == session.header.id and "parent_session" not in header
    back = load_session(out)
    assert back.source_format == "pi"
    assert [m.model_dump(mode="json") for m in back.context()] == \
        [m.model_dump(mode="json") for m in session.context()]


def _pi_available() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PI_PREFIX / "node_modules" / "@mariozechner" / "pi-coding-agent").is_dir():
        return f"pi is not installed under {PI_PREFIX} (set OPI_TEST_PI_PREFIX)"
    return None


# Outside CI a developer without node/pi may skip this; CI (.ci/run installs pi) must run it.
@pytest.mark.skipif(_pi_available() is not None and not os.environ.get("CI"), reason=str(_pi_available()))
def test_pi_itself_loads_an_exported_file_with_the_same_context(tmp_path: Path) -> None:
    session = opi_session_with_everything(tmp_path)
    out = tmp_path / "exported.jsonl"
    assert export_command(str(session.path), format="pi", output=out, err=io.StringIO()) == 0
    done = subprocess.run(["node", str(DATA / "pi_context.mjs"), str(PI_PREFIX), str(out)],
                          capture_output=True, text=True, timeout=60, check=True)
    theirs = json.loads(done.stdout)
    assert theirs["id"] == session.header.id
    ours = [comparable(message_to_pi(m.model_dump(mode="json"))) for m in session.context()]
    assert [comparable(m) for m in theirs["messages"]] == ours
    texts = json.dumps(theirs["messages"])
    assert "abandoned" not in texts and "now print hello, world" in texts
