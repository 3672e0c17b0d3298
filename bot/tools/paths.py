"""Resolving the paths the model passes to tools, and confining them to the workspace.

Policy: every tool only touches files whose *real* path — after following every symlink, including
symlinked parent directories, and collapsing `..` the way the OS does — lies inside the workspace's real
path. The read-only tools (read, grep, find, ls) may also look in the run's own temp directory (where
bash keeps the full output of a long command). Nothing under /proc is ever read: `/proc/self/environ`
or `/proc/PID/mem` of the agent would hand its environment or memory to the model. write and edit also
refuse anything under a `.git` directory (hooks and config there are code git runs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bot.tools.base import ToolContext, ToolError

_PROC = Path("/proc")


def workspace_root(workspace: Path) -> Path:
    """The workspace's real path (symlinks resolved), so containment checks compare like with like."""
    return Path(os.path.realpath(workspace))


def resolve_path(workspace: Path, user_path: str) -> Path:
    """Absolute path for `user_path`: `~` is expanded, relative paths are taken from the workspace.

    Symlinks are not resolved, so messages can name the path the model used.
    """
    if not user_path or not user_path.strip():
        raise ToolError("path is empty; give a file path relative to the workspace or an absolute path")
    if "\x00" in user_path:
        raise ToolError(f"path {user_path!r} contains a NUL byte")
    try:
        os.fsencode(user_path)
    except UnicodeEncodeError as exc:
        raise ToolError(f"path {user_path!r} contains characters that cannot be encoded ({exc.reason})") from exc
    expanded = Path(os.path.expanduser(user_path))
    joined = expanded if expanded.is_absolute() else Path(workspace) / expanded
    return Path(os.path.normpath(joined))


def _real_path(workspace: Path, user_path: str) -> tuple[Path, Path]:
    """(lexical path, real path) for `user_path`."""
    lexical = resolve_path(workspace, user_path)
    # Join without normalising first: `link/../x` must follow `link` before applying `..`, as the OS would.
    expanded = Path(os.path.expanduser(user_path))
    raw = expanded if expanded.is_absolute() else Path(workspace) / expanded
    return lexical, Path(os.path.realpath(raw))


def read_roots(ctx: ToolContext) -> tuple[Path, ...]:
    """Directories besides the workspace that the read-only tools may look in: the run's temp dir."""
    return () if ctx.temp_dir is None else (ctx.temp_dir,)


def resolve_for_read(workspace: Path, user_path: str, extra_roots: Sequence[Path] = ()) -> Path:
    """The real path to read for `user_path`, or a ToolError if it lies outside the workspace (and
    `extra_roots`) or under /proc. Callers open the returned real path, not the one the model gave."""
    lexical, real = _real_path(workspace, user_path)
    shown = display_path(workspace, lexical)
    via = f" (it resolves to {real})" if real != lexical else ""
    if is_within(real, _PROC):
        raise ToolError(f"Refusing to read {shown}{via}: nothing under /proc may be read.")
    roots = (workspace_root(workspace), *(Path(os.path.realpath(root)) for root in extra_roots))
    if any(is_within(real, root) for root in roots):
        return real
    raise ToolError(
        f"Refusing to read {shown}: it is outside the workspace {roots[0]}{via}. "
        "read, grep, find and ls only look inside the workspace."
    )


def resolve_directory(workspace: Path, user_path: str, if_file: str,
                      extra_roots: Sequence[Path] = ()) -> tuple[Path, str]:
    """An existing directory to look in, and how to name it to the model. `if_file` finishes the error
    for a path that is a file (what the model should do instead)."""
    path = resolve_for_read(workspace, user_path, extra_roots)
    shown = display_path(workspace, path)
    if not path.exists():
        raise ToolError(f"Directory not found: {shown}")
    if not path.is_dir():
        raise ToolError(f"{shown} is a file, not a directory; {if_file}")
    return path, shown


def resolve_for_write(workspace: Path, user_path: str) -> Path:
    """The real path to write for `user_path`, or a ToolError if it would leave the workspace or land
    under a `.git` directory.

    Writing goes to the real path, so a symlink inside the workspace that points at another file
    inside the workspace is written through (the link itself stays a link).
    """
    root = workspace_root(workspace)
    lexical, real = _real_path(workspace, user_path)
    shown = display_path(workspace, lexical)
    via = f" (it resolves to {real})" if real != lexical else ""
    if not is_within(real, root):
        raise ToolError(
            f"Refusing to modify {shown}: it is outside the workspace {root}{via}. "
            "write and edit may only change files inside the workspace."
        )
    named = lexical.relative_to(workspace) if is_within(lexical, Path(workspace)) else Path()
    if is_git_metadata(real.relative_to(root)) or is_git_metadata(named):
        raise ToolError(
            f"Refusing to modify {shown}{via}: it is inside a .git directory (git's hooks and config are "
            "code git runs). write and edit may not change anything under .git/."
        )
    return real


def is_git_metadata(path: Path) -> bool:
    """Whether any component of `path` names a git directory: `.git` in any letter case, also with the
    trailing dots or spaces some filesystems drop (`.GIT`, `.git.`)."""
    return any(part.casefold().rstrip(". ") == ".git" for part in path.parts)


def is_within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def display_path(workspace: Path, path: Path) -> str:
    """How to name `path` to the model: relative to the workspace when inside it, else absolute."""
    for root in (Path(workspace), workspace_root(workspace)):
        if is_within(path, root):
            relative = path.relative_to(root).as_posix()
            return relative or "."
    return str(path)
