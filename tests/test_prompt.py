"""System prompt: tools named, environment lines, context files from real directories and git repos."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from bot.agent.prompt import (
    BASE_PROMPT,
    NO_TOOLS_NOTE,
    READ_ONLY_NOTE,
    build_system_prompt,
    find_context_files,
)
from bot.tools.base import Tool, ToolContext, ToolOutput


class _Params(BaseModel):
    path: str


class FakeRead(Tool):
    name: ClassVar[str] = "read"
    description: ClassVar[str] = "Read a file with line numbers.\nMore detail the prompt leaves out."
    Params: ClassVar[type[BaseModel]] = _Params

    def run(self, params: Any, ctx: ToolContext) -> ToolOutput:
        return ToolOutput("")


class FakeBash(FakeRead):
    name: ClassVar[str] = "bash"
    description: ClassVar[str] = "Run a shell command."
    mutating: ClassVar[bool] = True


NOW = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC)


def test_names_tools_cwd_date_platform(repo: Path) -> None:
    prompt = build_system_prompt(tools=[FakeRead(), FakeBash()], cwd=repo, now=NOW)
    assert prompt.startswith(BASE_PROMPT)
    assert "- read: Read a file with line numbers." in prompt
    assert "More detail" not in prompt
    assert "- bash: Run a shell command." in prompt
    assert f"Working directory: {repo}" in prompt
    assert "Current date: 2026-03-04" in prompt
    assert "Platform: " in prompt


def test_only_enabled_tools_are_named(repo: Path) -> None:
    prompt = build_system_prompt(tools=[FakeRead()], cwd=repo, now=NOW)
    assert "- bash" not in prompt
    assert READ_ONLY_NOTE in prompt  # without a mutating tool the model is told to describe changes
    assert READ_ONLY_NOTE not in build_system_prompt(tools=[FakeRead(), FakeBash()], cwd=repo, now=NOW)
    assert NO_TOOLS_NOTE in build_system_prompt(tools=[], cwd=repo, now=NOW)


def test_context_files_from_git_root_down_to_cwd(repo: Path, tmp_path: Path) -> None:
    global_dir = tmp_path / "config" / "opi"
    global_dir.mkdir(parents=True)
    (global_dir / "AGENTS.md").write_text("global notes")
    (repo.parent / "AGENTS.md").write_text("outside the repository")  # above the git root: ignored
    (repo / "CLAUDE.md").write_text("root claude")
    (repo / "AGENTS.md").write_text("root agents")
    sub = repo / "pkg" / "sub"
    sub.mkdir(parents=True)
    (repo / "pkg" / "AGENTS.md").write_text("pkg agents")
    (sub / "CLAUDE.md").write_text("sub claude")

    files = find_context_files(sub, global_dir)
    assert [f.text for f in files] == ["global notes", "root agents", "root claude", "pkg agents",
                                       "sub claude"]
    prompt = build_system_prompt(tools=[], cwd=sub, global_dir=global_dir, now=NOW)
    positions = [prompt.index(text) for text in ("global notes", "root agents", "root claude", "pkg agents",
                                                 "sub claude")]
    assert positions == sorted(positions)
    assert "outside the repository" not in prompt
    assert f"Project context from {repo / 'AGENTS.md'}" in prompt


def test_symlinked_claude_md_is_not_duplicated(repo: Path) -> None:
    (repo / "AGENTS.md").write_text("shared notes")
    (repo / "CLAUDE.md").symlink_to("AGENTS.md")
    prompt = build_system_prompt(tools=[], cwd=repo, now=NOW)
    assert prompt.count("shared notes") == 1


def test_outside_a_repository_only_cwd_counts(tmp_path: Path) -> None:
    (tmp_path / "AGENTS.md").write_text("parent notes")
    cwd = tmp_path / "plain"
    cwd.mkdir()
    (cwd / "AGENTS.md").write_text("cwd notes")
    assert [f.text for f in find_context_files(cwd, None)] == ["cwd notes"]


def test_system_prompt_replaces_base_but_keeps_context(repo: Path) -> None:
    (repo / "AGENTS.md").write_text("project rules")
    prompt = build_system_prompt(tools=[FakeRead()], cwd=repo, custom="You are a reviewer.",
                                 append=["Be brief.", "Use British spelling."], now=NOW)
    assert prompt.startswith("You are a reviewer.")
    assert BASE_PROMPT not in prompt
    assert "project rules" in prompt
    assert prompt.index("project rules") < prompt.index("Be brief.") < prompt.index("Use British spelling.")
    assert f"Working directory: {repo}" in prompt


def test_prompt_options_may_name_files(repo: Path) -> None:
    (repo / "reviewer.md").write_text("You review code from a file.")
    (repo / "extra.md").write_text("Extra rules from a file.")
    prompt = build_system_prompt(tools=[], cwd=repo, custom="reviewer.md", append=["extra.md"], now=NOW)
    assert prompt.startswith("You review code from a file.")
    assert "Extra rules from a file." in prompt


def test_a_directory_named_like_a_context_file_is_skipped_and_bad_utf8_is_replaced(repo: Path) -> None:
    (repo / "AGENTS.md").mkdir()  # a directory named like a context file is not a file
    (repo / "CLAUDE.md").write_bytes(b"\xff\xfe not utf-8 \xc3")
    found = find_context_files(repo, None)
    assert [(f.path, f.text) for f in found] == [(repo / "CLAUDE.md", "\ufffd\ufffd not utf-8 \ufffd")]
    prompt = build_system_prompt(tools=[], cwd=repo, now=NOW)
    assert f"# Project context from {repo / 'CLAUDE.md'}\n\n\ufffd\ufffd not utf-8 \ufffd" in prompt
    assert str(repo / "AGENTS.md") not in prompt


def test_a_context_file_that_cannot_be_read_is_skipped(repo: Path) -> None:
    # A regular file whose read fails even for root (EIO): a hostile checkout can link to one.
    (repo / "AGENTS.md").symlink_to("/proc/self/mem")
    (repo / "CLAUDE.md").write_text("still read\n")
    assert [(f.path, f.text) for f in find_context_files(repo, None)] == [(repo / "CLAUDE.md", "still read")]
    prompt = build_system_prompt(tools=[], cwd=repo, now=NOW)
    assert str(repo / "AGENTS.md") not in prompt and "still read" in prompt


def test_tool_lines_keep_only_the_first_sentence(repo: Path) -> None:
    class Long(FakeRead):
        name: ClassVar[str] = "grep"
        description: ClassVar[str] = ("Search file contents, skipping .gitignore'd files. Output lines are "
                                      "path:line:text. Results stop at a limit.")

    prompt = build_system_prompt(tools=[Long()], cwd=repo, now=NOW)
    assert "- grep: Search file contents, skipping .gitignore'd files.\n" in prompt
    assert "Output lines" not in prompt
