"""The system prompt: what the agent is, which tools it has, where it runs, and the project's own notes.

Context files (`AGENTS.md`, then `CLAUDE.md`) are appended from the global config dir first, then from
the git root down to the working directory, so the most specific instructions come last and win.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.agent.config import dirs_from_root
from bot.tools.base import Tool

CONTEXT_FILE_NAMES = ("AGENTS.md", "CLAUDE.md")

BASE_PROMPT = """\
You are opi, a coding agent working in a software project on the user's machine. You read, search, \
edit and run code with the tools below, then answer.

Guidelines:
- Look before you change: read the relevant files and search for how things are used.
- Make the smallest change that fully solves the task; keep the project's style.
- After changing code, run the relevant tests or checks when you can.
- Paths are relative to the working directory unless absolute.
- Finish with a short answer: what you found or changed, and anything left to do."""

READ_ONLY_NOTE = ("You cannot change files or run commands in this session: when a change is needed, "
                  "describe it precisely (file, location, new code) instead.")
NO_TOOLS_NOTE = "You have no tools in this session: answer from the conversation alone."


@dataclass(frozen=True)
class ContextFile:
    path: Path
    text: str


def find_context_files(cwd: Path, global_dir: Path | None) -> list[ContextFile]:
    """Global dir first, then git root down to cwd; both names in each directory, AGENTS.md first."""
    directories = ([global_dir] if global_dir is not None else []) + dirs_from_root(cwd)
    found: list[ContextFile] = []
    seen: set[Path] = set()
    for directory in directories:
        for name in CONTEXT_FILE_NAMES:
            path = directory / name
            try:
                if not path.is_file():
                    continue
                resolved = path.resolve()
                if resolved in seen:  # CLAUDE.md is often a symlink to AGENTS.md
                    continue
                seen.add(resolved)
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue  # an unreadable notes file (or directory) must not stop the agent
            found.append(ContextFile(path, text.strip()))
    return found


def resolve_prompt_text(value: str, cwd: Path) -> str:
    """A prompt option may name a file; its content is used then (as in pi)."""
    if "\n" not in value and len(value) < 4096:
        candidate = (cwd / Path(value).expanduser())
        try:
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    return value


def tools_section(tools: Sequence[Tool]) -> str:
    if not tools:
        return NO_TOOLS_NOTE
    lines = ["Available tools:"]
    for tool in tools:
        lines.append(f"- {tool.name}: {first_sentence(tool.description)}")
    if not any(tool.mutating for tool in tools):
        lines += ["", READ_ONLY_NOTE]
    return "\n".join(lines)


def first_sentence(text: str) -> str:
    """The model gets each tool's full description with its schema; the prompt only needs the gist."""
    stripped = text.strip()
    if not stripped:
        return ""
    line = stripped.splitlines()[0]
    match = re.match(r"(.+?[.!?])(?:\s|$)", line)
    return match.group(1) if match else line


def build_system_prompt(*, tools: Sequence[Tool], cwd: Path, global_dir: Path | None = None,
                        custom: str | None = None, append: Sequence[str] = (),
                        now: _dt.datetime | None = None) -> str:
    """`custom` replaces the base prompt and tool list; context files, `append` and the environment
    lines are always added so a custom prompt still knows where it is."""
    now = now or _dt.datetime.now().astimezone()
    parts = [resolve_prompt_text(custom, cwd).strip()] if custom else [BASE_PROMPT, tools_section(tools)]
    for context in find_context_files(cwd, global_dir):
        parts.append(f"# Project context from {context.path}\n\n{context.text}")
    parts.extend(resolve_prompt_text(text, cwd).strip() for text in append if text.strip())
    parts.append(
        f"Current date: {now.date().isoformat()}\n"
        f"Platform: {platform.system()} {platform.release()} ({platform.machine()})\n"
        f"Working directory: {cwd}"
    )
    return "\n\n".join(part for part in parts if part)
