"""The broker's copy of the agent's session (`SessionMirror`): what it uploads and what the next `/opi`
run on the thread continues must be the conversation the agent recorded, redacted, line for line."""

from __future__ import annotations

from pathlib import Path

from bot.action.launch import SessionMirror
from bot.action.redact import Redactor
from bot.agent.session import Session
from bot.llm.messages import AssistantMessage, TextContent, ToolCall, ToolResultMessage, UserMessage

SECRET = "ghs_mirrortoken0123456789abcdef"


def agent_session(path: Path, tool_output: str) -> Session:
    session = Session.create(path, cwd=path.parent)
    session.append_message(UserMessage(content="read notes.txt"))
    session.append_message(AssistantMessage(
        content=[TextContent(text="reading"), ToolCall(id="toolu_1", name="read", arguments={"path": "notes.txt"})],
        provider="anthropic", model="m", api="anthropic", stop_reason="tool_use"))
    session.append_message(ToolResultMessage(tool_call_id="toolu_1", tool_name="read",
                                             content=[TextContent(text=tool_output)]))
    session.append_message(AssistantMessage(content=[TextContent(text="The file has one line.")],
                                            provider="anthropic", model="m", api="anthropic", stop_reason="stop"))
    session.close()
    return session


def mirrored(tmp_path: Path, source: Session) -> Session:
    assert source.path is not None
    mirror = SessionMirror(tmp_path / "broker", Redactor([SECRET]), print)
    target = mirror.attach(source.path)
    mirror.sync()
    return Session.load(target)


def test_unicode_line_separators_inside_an_entry_do_not_cut_it(tmp_path: Path) -> None:
    # JSON keeps U+2028, U+2029 and U+0085 raw inside strings; only "\n" ends a session line.
    source = agent_session(tmp_path / "agent" / "s.jsonl", "     1\tone\u2028still one\u2029and\x85end\n")
    copy = mirrored(tmp_path, source)
    assert copy.warnings == []
    assert [m.model_dump(mode="json") for m in copy.context()] == \
        [m.model_dump(mode="json") for m in Session.load(source.path or Path()).context()]


def test_the_copy_is_redacted(tmp_path: Path) -> None:
    source = agent_session(tmp_path / "agent" / "s.jsonl", f"token={SECRET}\n")
    copy = mirrored(tmp_path, source)
    assert copy.path is not None and SECRET not in copy.path.read_text(encoding="utf-8")
    assert len(copy.context()) == 4 and copy.warnings == []
