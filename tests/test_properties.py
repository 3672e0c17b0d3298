"""Property-based checks of the two things users trust most: session files and file edits."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.agent.session import Session, SessionConversation
from bot.llm.messages import AssistantMessage, TextContent, ToolCall, ToolResultMessage, UserMessage
from bot.tools.base import ToolContext
from bot.tools.edit import EditTool

# Any unicode text, including lone surrogates (undecodable tool output turns into those) and line breaks.
any_text = st.text(st.characters(), max_size=200)
json_value = st.recursive(st.none() | st.booleans() | st.integers() | any_text,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
                          max_leaves=8)


def _messages(draw: st.DrawFn) -> list[UserMessage | AssistantMessage | ToolResultMessage]:
    out: list[UserMessage | AssistantMessage | ToolResultMessage] = []
    for turn in range(draw(st.integers(1, 4))):
        out.append(UserMessage(content=draw(any_text)))
        arguments = draw(st.dictionaries(any_text, json_value, max_size=3))
        call = ToolCall(id=f"call_{turn}", name="read", arguments=arguments)
        out.append(AssistantMessage(content=[TextContent(text=draw(any_text)), call], provider="anthropic",
                                    model="claude-sonnet-4-5", api="anthropic", stop_reason="tool_use"))
        out.append(ToolResultMessage(tool_call_id=call.id, tool_name="read",
                                     content=[TextContent(text=draw(any_text))], is_error=draw(st.booleans())))
    return out


conversations = st.composite(_messages)()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations)
def test_any_conversation_resumes_to_exactly_what_was_written(messages: list[UserMessage]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.jsonl"
        session = Session.create(path, cwd=tmp)
        conversation = SessionConversation(session)
        for message in messages:
            conversation.append(message)
        session.close()
        loaded = Session.load(path)
        assert not loaded.warnings
        # Lone surrogates cannot be stored as UTF-8; the writer escapes them, and they must come back.
        assert [m.model_dump() for m in loaded.context()] == [m.model_dump() for m in messages]


line_endings = st.sampled_from(["\n", "\r\n"])
lines = st.lists(st.text(st.characters(blacklist_categories=["Cs"],
                                       # NUL makes a file binary, which edit rightly refuses
                                       blacklist_characters="\x00\r\n"),
                         max_size=30), min_size=2, max_size=12)


@settings(max_examples=80, deadline=None)
@given(lines=lines, ending=line_endings, bom=st.booleans(), data=st.data())
def test_an_edit_and_its_inverse_restore_the_file_byte_for_byte(lines: list[str], ending: str, bom: bool,
                                                                data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        marker = "unique-marker-line"
        index = data.draw(st.integers(0, len(lines) - 1))
        body = ending.join([*lines[:index], marker, *lines[index:]]) + ending
        original = (b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8")
        target = workspace / "f.txt"
        target.write_bytes(original)
        tool, ctx = EditTool(), ToolContext(workspace)

        forward = tool.execute({"path": "f.txt", "old_text": marker, "new_text": "replaced-line"}, ctx)
        assert not forward.is_error, forward.text
        changed = target.read_bytes()
        assert changed.startswith(b"\xef\xbb\xbf") == bom
        assert changed.count(b"\r\n") == original.count(b"\r\n")  # line endings kept

        back = tool.execute({"path": "f.txt", "old_text": "replaced-line", "new_text": marker}, ctx)
        assert not back.is_error, back.text
        assert target.read_bytes() == original
