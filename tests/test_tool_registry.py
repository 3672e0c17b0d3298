"""The tool set and the non-interactive mutating-tool policy."""

from __future__ import annotations

import json

import jsonschema
import pytest

from bot.tools.base import Tool
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


def test_sets() -> None:
    assert ALL_TOOLS == ("read", "write", "edit", "bash", "grep", "find", "ls")
    assert frozenset({"read", "grep", "find", "ls"}) == READ_ONLY
    assert frozenset({"write", "edit", "bash"}) == MUTATING
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
