"""The tool set and the policy that decides which tools a run gets.

Policy (as in opi): the mutating tools (write, edit, bash) change files or run arbitrary commands. In
non-interactive runs they are neither offered to the model nor executed unless the user allowed them
(`--allow-mutating` or the config); the interactive REPL passes allow_mutating=True and asks the user
before each mutating call instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.tools.base import Tool
from bot.tools.bash import BashTool
from bot.tools.edit import EditTool
from bot.tools.find import FindTool
from bot.tools.grep import GrepTool
from bot.tools.ls import LsTool
from bot.tools.read import ReadTool
from bot.tools.write import WriteTool

# Canonical order: how tools are offered to the model and listed in messages.
TOOL_CLASSES: dict[str, type[Tool]] = {
    tool.name: tool for tool in (ReadTool, WriteTool, EditTool, BashTool, GrepTool, FindTool, LsTool)
}
ALL_TOOLS: tuple[str, ...] = tuple(TOOL_CLASSES)
READ_ONLY: frozenset[str] = frozenset(name for name, tool in TOOL_CLASSES.items() if not tool.mutating)
MUTATING: frozenset[str] = frozenset(name for name, tool in TOOL_CLASSES.items() if tool.mutating)


class ToolSelectionError(ValueError):
    """A bad --tools selection: a usage error (exit code 2), reported with the message as is."""


def select_tools(names: Sequence[str] | None, allow_mutating: bool, no_tools: bool) -> list[Tool]:
    """The tools for a run, in canonical order.

    - `no_tools` wins over everything: no tools at all.
    - `names` None: every read-only tool, plus the mutating ones when `allow_mutating`.
    - `names` given (e.g. from `--tools read,bash`): exactly those; an unknown name, or a mutating one
      without `allow_mutating`, is a ToolSelectionError.
    """
    if no_tools:
        return []
    if names is None:
        chosen = [name for name in ALL_TOOLS if allow_mutating or name not in MUTATING]
        return [TOOL_CLASSES[name]() for name in chosen]
    wanted = _normalise(names)
    unknown = [name for name in wanted if name not in TOOL_CLASSES]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ToolSelectionError(f"unknown tool{'s' if len(unknown) > 1 else ''} {listed}; valid tools are: "
                                 f"{', '.join(ALL_TOOLS)}")
    blocked = [name for name in wanted if name in MUTATING and not allow_mutating]
    if blocked:
        listed = ", ".join(blocked)
        raise ToolSelectionError(
            f"{listed} can change files or run commands, and mutating tools are disabled in non-interactive "
            "mode; pass --allow-mutating (or set allow_mutating = true in the config) to enable them"
        )
    return [TOOL_CLASSES[name]() for name in ALL_TOOLS if name in wanted]


def parse_tool_names(value: str) -> list[str]:
    """`--tools` value → names: comma or whitespace separated, case-insensitive, duplicates ignored."""
    return _normalise(value.replace(",", " ").split())


def _normalise(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
