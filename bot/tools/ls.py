"""`ls`: the entries of one directory, sorted, dotfiles included, directories marked with '/'."""

from __future__ import annotations

import os
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.paths import read_roots, resolve_directory

DEFAULT_LIMIT = 500


class LsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(default=".", description="Directory to list.")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, description="Maximum entries.")


class LsTool(Tool):
    name: ClassVar[str] = "ls"
    description: ClassVar[str] = (
        "List a directory (hidden entries too; directories end in '/'). Not recursive: use find."
    )
    Params: ClassVar[type[BaseModel]] = LsParams

    def run(self, params: LsParams, ctx: ToolContext) -> ToolOutput:
        path, shown = resolve_directory(ctx.workspace, params.path, "use read to see its content",
                                         read_roots(ctx))
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: (e.name.lower(), e.name))
        except PermissionError as exc:
            raise ToolError(f"Cannot list {shown}: permission denied") from exc
        except OSError as exc:
            raise ToolError(f"Cannot list {shown}: {exc.strerror or exc}") from exc
        if not entries:
            return ToolOutput(f"[{shown} is empty]", details={"count": 0, "total": 0, "truncated": False})
        shown_entries = [_describe(entry) for entry in entries[:params.limit]]
        text = "\n".join(shown_entries)
        truncated = len(entries) > params.limit
        if truncated:
            text += (f"\n\n[Showing {params.limit} of {len(entries)} entries; pass a larger limit to see more, "
                     "or use find with a pattern.]")
        return ToolOutput(text, details={"count": len(shown_entries), "total": len(entries),
                                         "truncated": truncated})


def _describe(entry: os.DirEntry[str]) -> str:
    is_dir = entry.is_dir()  # follows symlinks: a link to a directory lists as one
    name = entry.name + ("/" if is_dir else "")
    if entry.is_symlink():
        try:
            return f"{name} -> {os.readlink(entry.path)}"
        except OSError:
            return name
    return name
