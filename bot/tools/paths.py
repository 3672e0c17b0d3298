"""Resolving the paths the model passes to tools, and confining writes to the workspace.

Policy: the read-only tools (read, grep, find, ls) may look outside the workspace (system headers,
installed packages, /tmp logs are often what the model needs), while write and edit may only touch
files whose *real* path — after following every symlink, including symlinked parent directories, and
collapsing `..` — lies inside the workspace's real path.
"""

from __future__ import annotations

import os
from pathlib import Path

from bot.tools.base import ToolError


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


def resolve_for_read(workspace: Path, user_path: str) -> Path:
    return resolve_path(workspace, user_path)


def resolve_directory(workspace: Path, user_path: str, if_file: str) -> tuple[Path, str]:
    """An existing directory to look in, and how to name it to the model. `if_file` finishes the error
    for a path that is a file (what the model should do instead)."""
    path = resolve_for_read(workspace, user_path)
    shown = display_path(workspace, path)
    if not path.exists():
        raise ToolError(f"Directory not found: {shown}")
    if not path.is_dir():
        raise ToolError(f"{shown} is a file, not a directory; {if_file}")
    return path, shown


def resolve_for_write(workspace: Path, user_path: str) -> Path:
    """The real path to write for `user_path`, or a ToolError if it would leave the workspace.

    Writing goes to the real path, so a symlink inside the workspace that points at another file
    inside the workspace is written through (the link itself stays a link).
    """
    root = workspace_root(workspace)
    lexical = resolve_path(workspace, user_path)
    # Join without normalising first: `link/../x` must follow `link` before applying `..`, as the OS would.
    expanded = Path(os.path.expanduser(user_path))
    raw = expanded if expanded.is_absolute() else Path(workspace) / expanded
    real = Path(os.path.realpath(raw))
    if is_within(real, root):
        return real
    shown = display_path(workspace, lexical)
    via = f" (it resolves to {real})" if real != lexical else ""
    raise ToolError(
        f"Refusing to modify {shown}: it is outside the workspace {root}{via}. "
        "write and edit may only change files inside the workspace."
    )


def is_within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def display_path(workspace: Path, path: Path) -> str:
    """How to name `path` to the model: relative to the workspace when inside it, else absolute."""
    for root in (Path(workspace), workspace_root(workspace)):
        if is_within(path, root):
            relative = path.relative_to(root).as_posix()
            return relative or "."
    return str(path)
