"""`write`: create or overwrite a file in the workspace, atomically.

A reader (or a crash) sees either the old file or the new one, never a half-written mix: the content
goes to a temporary file in the same directory, is fsynced, and is renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.paths import display_path, resolve_for_write


class WriteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="File path, relative to the workspace.")
    content: str = Field(description="The complete new content.")


class WriteTool(Tool):
    name: ClassVar[str] = "write"
    description: ClassVar[str] = (
        "Create a file or replace its whole content (parent directories are created). Only paths inside "
        "the workspace, outside .git/, may be written. To change part of a file, use edit."
    )
    Params: ClassVar[type[BaseModel]] = WriteParams
    mutating: ClassVar[bool] = True

    def run(self, params: WriteParams, ctx: ToolContext) -> ToolOutput:
        path = resolve_for_write(ctx.workspace, params.path)
        shown = display_path(ctx.workspace, path)
        if path.is_dir():
            raise ToolError(f"{shown} is a directory; give a file path to write")
        existed = path.exists()
        data = encode_text(params.content, "content")
        make_parent_dirs(path, shown)
        atomic_write(path, data, shown)
        lines = params.content.count("\n") + (0 if params.content.endswith("\n") or not params.content else 1)
        verb = "Overwrote" if existed else "Created"
        return ToolOutput(f"{verb} {shown} ({len(data)} bytes, {lines} line{'s' if lines != 1 else ''}).",
                          details={"path": shown, "bytes": len(data), "lines": lines, "created": not existed})


def encode_text(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # e.g. an unpaired surrogate from a JSON "\\ud800" escape
        raise ToolError(f"{what} is not valid Unicode: {exc.reason} at character {exc.start}") from exc


def make_parent_dirs(path: Path, shown: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ToolError(f"Cannot create the directories for {shown}: {exc.filename} exists and is not a "
                        "directory") from exc
    except NotADirectoryError as exc:
        raise ToolError(f"Cannot create the directories for {shown}: a parent is a file, not a "
                        "directory") from exc
    except OSError as exc:
        raise ToolError(f"Cannot create the directories for {shown}: {exc.strerror or exc}") from exc


def atomic_write(path: Path, data: bytes, shown: str) -> None:
    """Replace `path` with `data` atomically, keeping an existing file's mode (and owner where allowed)."""
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise ToolError(f"Cannot write {shown}: {exc.strerror or exc}") from exc
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".opi-tmp")
    except OSError as exc:
        raise ToolError(f"Cannot write {shown}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.fchmod(tmp.fileno(), _mode_for(existing))
            if existing is not None and (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):  # only root may give a file away; best effort
                    os.fchown(tmp.fileno(), existing.st_uid, existing.st_gid)
        os.replace(tmp_name, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise ToolError(f"Cannot write {shown}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _mode_for(existing: os.stat_result | None) -> int:
    if existing is not None:
        return stat.S_IMODE(existing.st_mode)
    return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # os.umask() can only read the mask by changing it, which races with other threads creating files;
    # Linux publishes it in /proc, so prefer that.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable. Some filesystems refuse fsync on a directory; that is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
