"""Imports only point downward: llm < tools < agent < {cli, action}; cli and action never import each
other at module level (the CLI's `opi action` dispatch imports inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bot"
ALLOWED = {
    "llm": {"llm"},
    "tools": {"llm", "tools"},
    "agent": {"llm", "tools", "agent"},
    "cli": {"llm", "tools", "agent", "cli"},
    "action": {"llm", "tools", "agent", "action"},
}


def _module_level_bot_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in tree.body:  # module level only: lazy imports inside functions are the sanctioned escape
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot."):
            found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("bot.")]
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_downward(layer: str) -> None:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for lineno, target in _module_level_bot_imports(path):
            if target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{lineno} imports bot.{target}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_cli_imports_action_only_lazily() -> None:
    for path in (ROOT / "cli").rglob("*.py"):
        for _, target in _module_level_bot_imports(path):
            assert target != "action", f"{path} imports bot.action at module level"
