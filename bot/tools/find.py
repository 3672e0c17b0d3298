"""`find`: list files and directories matching a glob, respecting .gitignore.

Also home to the file listing that grep's Python fallback shares: inside a git work tree it is
`git ls-files --cached --others --exclude-standard` (tracked plus untracked-but-not-ignored files,
honouring .gitignore, .git/info/exclude and the global excludes file); elsewhere a walk that skips `.git`.
Results are sorted by path components, the order ripgrep's `--sort path` uses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.paths import display_path, read_roots, resolve_directory
from bot.tools.proc import tool_command

DEFAULT_LIMIT = 1000
_GIT_TIMEOUT = 60


class FindParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str = Field(
        description="Glob: without '/' it matches names at any depth ('*.py'); with '/', paths relative "
                    "to path ('src/**/*.ts').",
    )
    path: str = Field(default=".", description="Directory to search.")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, description="Maximum results.")


class FindTool(Tool):
    name: ClassVar[str] = "find"
    description: ClassVar[str] = (
        "Find files and directories by glob, skipping .gitignore'd ones and .git. Prints sorted paths, "
        "directories with a trailing '/'."
    )
    Params: ClassVar[type[BaseModel]] = FindParams

    def run(self, params: FindParams, ctx: ToolContext) -> ToolOutput:
        root, shown_root = resolve_directory(ctx.workspace, params.path, "find searches directories",
                                              read_roots(ctx))
        matcher = GlobMatcher(params.pattern)
        found: list[str] = []
        more = False
        for entry in list_entries(root, ctx.command_env()):
            if ctx.cancel.is_set():
                raise ToolError("find was cancelled")
            if matcher.matches(entry.rstrip("/")):
                if len(found) == params.limit:
                    more = True
                    break
                found.append(display_path(ctx.workspace, root / entry) + ("/" if entry.endswith("/") else ""))
        if not found:
            return ToolOutput(f"No files or directories matching {params.pattern!r} in {shown_root}.",
                              details={"count": 0, "truncated": False})
        text = "\n".join(found)
        if more:
            text += (f"\n\n[Showing the first {params.limit} matches; there are more. Narrow the pattern or "
                     "path, or pass a larger limit.]")
        return ToolOutput(text, details={"count": len(found), "truncated": more})


class GlobMatcher:
    """gitignore/ripgrep-style glob: no '/' → match the last path component; else the whole relative path."""

    def __init__(self, pattern: str) -> None:
        cleaned = pattern.strip()
        if not cleaned:
            raise ToolError("pattern is empty; give a glob such as '*.py' or 'src/**/*.ts'")
        cleaned = cleaned.removeprefix("./").lstrip("/") if cleaned not in ("/", "./") else "*"
        self.pattern = pattern
        self.basename_only = "/" not in cleaned.rstrip("/")
        self.regex = re.compile(glob_to_regex(cleaned.rstrip("/") or "*"), re.DOTALL)

    def matches(self, relative_path: str) -> bool:
        target = relative_path.rsplit("/", 1)[-1] if self.basename_only else relative_path
        return self.regex.fullmatch(target) is not None


def glob_to_regex(glob: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    depth = 0  # inside {a,b}
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            close = glob.find("]", i + 2 if glob.startswith(("[!", "[^"), i) else i + 1)
            if close < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = glob[i + 1:close]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = close + 1
        elif c == "{":
            depth += 1
            out.append("(?:")
            i += 1
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
            i += 1
        elif c == "," and depth:
            out.append("|")
            i += 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    if depth:
        raise ToolError(f"Invalid glob {glob!r}: unclosed '{{'")
    return "".join(out)


def path_key(relative_path: str) -> list[str]:
    """Sort by components, so 'a/b' sorts before 'a-c' as in a directory walk (and `rg --sort path`)."""
    return relative_path.rstrip("/").split("/")


def list_entries(root: Path, env: Mapping[str, str]) -> Iterator[str]:
    """Relative paths under `root` (directories end with '/'), sorted, without ignored files or .git.
    `env` is the environment for git: pass the context's scrubbed `command_env()`, never os.environ."""
    listed = _git_listing(root, env)
    if listed is not None:
        yield from listed
    else:
        yield from _walk(root, "")


def list_files(root: Path, env: Mapping[str, str]) -> Iterator[str]:
    return (entry for entry in list_entries(root, env) if not entry.endswith("/"))


# The work tree may hold a .git the model could have changed: never let git run a configured fsmonitor
# command while listing (the tools also refuse writes under .git, but bash can still make them).
_GIT_OPTIONS = ("-c", "core.fsmonitor=false")


def _git_listing(root: Path, env: Mapping[str, str]) -> list[str] | None:
    """Sorted entries from git, or None when `root` is not in a work tree (or git lists nothing there,
    e.g. an ignored directory the caller named explicitly: then a plain walk is what they asked for)."""
    git_env = {**env, "GIT_OPTIONAL_LOCKS": "0"}
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        git_env.pop(name, None)
    git = shutil.which("git", path=git_env.get("PATH"))
    if git is None:
        return None
    try:
        argv, kwargs = tool_command([git, *_GIT_OPTIONS, "rev-parse", "--is-inside-work-tree"], git_env)
        inside = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=_GIT_TIMEOUT, check=False,
                                **kwargs)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        argv, kwargs = tool_command([git, *_GIT_OPTIONS, "ls-files", "-z", "--cached", "--others",
                                     "--exclude-standard"], git_env)
        listing = subprocess.run(argv, cwd=root, capture_output=True, timeout=_GIT_TIMEOUT, check=False, **kwargs)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listing.returncode != 0:
        return None
    files = sorted({p for p in os.fsdecode(listing.stdout).split("\0") if p}, key=path_key)
    if not files:
        return None
    entries: set[str] = set()
    for relative in files:
        full = root / relative
        if not os.path.lexists(full):
            continue  # deleted in the work tree but still in the index
        entries.add(relative + "/" if full.is_dir() and not full.is_symlink() else relative)
        parent = relative.rpartition("/")[0]
        while parent and parent + "/" not in entries:
            entries.add(parent + "/")
            parent = parent.rpartition("/")[0]
    return sorted(entries, key=path_key)


def _walk(root: Path, prefix: str) -> Iterator[str]:
    try:
        with os.scandir(root / prefix if prefix else root) as it:
            items = sorted(it, key=lambda entry: entry.name)
    except OSError:
        return  # unreadable directory: skip, as find and rg do
    for item in items:
        if item.name == ".git":
            continue
        relative = f"{prefix}{item.name}"
        if item.is_dir(follow_symlinks=False):
            yield relative + "/"
            yield from _walk(root, relative + "/")
        else:
            yield relative
