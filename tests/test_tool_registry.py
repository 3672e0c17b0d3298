"""The tool set and the mutating-tool policy: which tools the loop asks the approver for, and which a
non-interactive run gets."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bot.agent.loop import Agent
from bot.llm.messages import ToolCall, ToolResultMessage
from bot.llm.mock import MockModel
from bot.tools.base import Tool, ToolContext
from bot.tools.registry import (
    ALL_TOOLS,
    MUTATING,
    READ_ONLY,
    TOOL_CLASSES,
    ToolSelectionError,
    parse_tool_names,
    select_tools,
)


def names(tools: list[Tool]) -> list[str]:
    return [tool.name for tool in tools]


# One call per tool that would change `notes.txt` if the tool can change anything at all.
CALLS: dict[str, dict[str, object]] = {
    "read": {"path": "notes.txt"},
    "write": {"path": "notes.txt", "content": "overwritten\n"},
    "edit": {"path": "notes.txt", "old_text": "original", "new_text": "edited"},
    "bash": {"command": "echo ran > notes.txt"},
    "grep": {"pattern": "original"},
    "find": {"pattern": "*.txt"},
    "ls": {"path": "."},
}


def test_the_model_is_offered_every_tool_in_canonical_order() -> None:
    assert names(select_tools(None, allow_mutating=True, no_tools=False)) == [
        "read", "write", "edit", "bash", "grep", "find", "ls"]
    assert set(CALLS) == set(ALL_TOOLS)


def test_exactly_the_mutating_tools_ask_the_approver_and_a_refusal_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("original\n")
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id=f"c-{name}", name=name, arguments=args) for name, args in CALLS.items()])
    model.enqueue("done")
    asked: list[str] = []

    def refuse(call: ToolCall, tool: Tool) -> str:
        asked.append(call.name)
        return "not now"

    tools = select_tools(None, allow_mutating=True, no_tools=False)
    result = Agent(model, tools, ToolContext(workspace=tmp_path), "system", approver=refuse).run("go")
    assert result.ok
    assert asked == ["write", "edit", "bash"]
    assert (tmp_path / "notes.txt").read_text() == "original\n"  # no refused call ran
    outcomes = {m.tool_name: m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)}
    assert all(outcomes[name].is_error and "refused" in outcomes[name].text for name in asked)
    assert not any(outcomes[name].is_error for name in READ_ONLY), outcomes  # they ran without asking
    # The registry's sets are what the loop does, not a second list to keep in step.
    assert frozenset(asked) == MUTATING and frozenset(ALL_TOOLS) - MUTATING == READ_ONLY
    assert all(TOOL_CLASSES[name].mutating == (name in MUTATING) for name in ALL_TOOLS)


def test_default_is_read_only_unless_mutating_is_allowed() -> None:
    assert names(select_tools(None, allow_mutating=False, no_tools=False)) == ["read", "grep", "find", "ls"]
    assert names(select_tools(None, allow_mutating=True, no_tools=False)) == list(ALL_TOOLS)


def test_no_tools_wins() -> None:
    assert select_tools(None, allow_mutating=True, no_tools=True) == []
    assert select_tools(["read"], allow_mutating=False, no_tools=True) == []


def test_explicit_selection_in_canonical_order() -> None:
    assert names(select_tools(["ls", "READ", " grep ", "ls"], allow_mutating=False, no_tools=False)) == [
        "read", "grep", "ls"]
    assert names(select_tools(["bash", "read"], allow_mutating=True, no_tools=False)) == ["read", "bash"]
    assert select_tools([], allow_mutating=False, no_tools=False) == []


def test_unknown_tool_lists_the_valid_ones() -> None:
    with pytest.raises(ToolSelectionError) as info:
        select_tools(["read", "grpe"], allow_mutating=True, no_tools=False)
    assert str(info.value) == "unknown tool 'grpe'; valid tools are: read, write, edit, bash, grep, find, ls"
    assert isinstance(info.value, ValueError)  # the CLI maps ValueError to the usage exit code


def test_mutating_tool_without_permission_says_how_to_allow_it() -> None:
    with pytest.raises(ToolSelectionError, match=r"bash, edit can change files .* pass --allow-mutating"):
        select_tools(["read", "bash", "edit"], allow_mutating=False, no_tools=False)


def test_parse_tool_names() -> None:
    assert parse_tool_names("read, Grep,,ls read") == ["read", "grep", "ls"]
    assert parse_tool_names("") == []


def test_every_schema_is_valid_json_schema_with_described_fields() -> None:
    for tool in select_tools(None, allow_mutating=True, no_tools=False):
        schema = tool.schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and tool.description
        assert "$ref" not in json.dumps(schema)  # some OpenAI-compatible servers cannot resolve references
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
