"""write: parent dirs, atomic replace, permissions kept, no temp files left, clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bot.tools.base import ToolContext, ToolError, ToolOutput
from bot.tools.write import WriteTool, atomic_write


def write(ctx: ToolContext, path: str, content: str) -> ToolOutput:
    return WriteTool().execute({"path": path, "content": content}, ctx)


def test_creates_file_and_parent_directories(ctx: ToolContext) -> None:
    out = write(ctx, "a/b/c/new.py", "print('hi')\n")
    assert not out.is_error
    assert out.text == "Created a/b/c/new.py (12 bytes, 1 line)."
    assert (ctx.workspace / "a/b/c/new.py").read_text() == "print('hi')\n"
    assert out.details == {"path": "a/b/c/new.py", "bytes": 12, "lines": 1, "created": True}


def test_overwrite_keeps_permission_bits(ctx: ToolContext) -> None:
    script = ctx.workspace / "run.sh"
    script.write_text("#!/bin/sh\necho old\n")
    script.chmod(0o751)
    out = write(ctx, "run.sh", "#!/bin/sh\necho new\n")
    assert out.text.startswith("Overwrote run.sh")
    assert stat.S_IMODE(script.stat().st_mode) == 0o751
    assert script.read_text() == "#!/bin/sh\necho new\n"


def test_new_file_gets_umask_permissions_not_mkstemp_0600(ctx: ToolContext) -> None:
    old = os.umask(0o022)
    try:
        write(ctx, "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((ctx.workspace / "f.txt").stat().st_mode) == 0o644


def test_replace_is_atomic_and_leaves_no_temp_files(ctx: ToolContext) -> None:
    target = ctx.workspace / "data.txt"
    target.write_text("old")
    inode_before = target.stat().st_ino
    write(ctx, "data.txt", "new content")
    assert target.read_text() == "new content"
    assert target.stat().st_ino != inode_before  # a new file was renamed over it, not rewritten in place
    assert sorted(p.name for p in ctx.workspace.iterdir()) == ["data.txt"]


def test_failed_replace_removes_its_temp_file(tmp_path: Path) -> None:
    # A directory where the file should go makes os.replace fail after the temp file was written.
    (tmp_path / "blocker").mkdir()
    (tmp_path / "other.txt").write_text("untouched")
    with pytest.raises(ToolError, match="Cannot write blocker"):
        atomic_write(tmp_path / "blocker", b"data", "blocker")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "other.txt"]
    assert (tmp_path / "other.txt").read_text() == "untouched"


def test_writing_onto_a_directory_is_a_clear_error(ctx: ToolContext) -> None:
    (ctx.workspace / "src").mkdir()
    out = write(ctx, "src", "x")
    assert out.is_error and out.text == "src is a directory; give a file path to write"


def test_parent_that_is_a_file_is_a_clear_error(ctx: ToolContext) -> None:
    (ctx.workspace / "notes.txt").write_text("x")
    out = write(ctx, "notes.txt/inner.txt", "y")
    assert out.is_error and "Cannot create the directories for notes.txt/inner.txt" in out.text


def test_empty_content_and_unicode(ctx: ToolContext) -> None:
    assert write(ctx, "empty.txt", "").text == "Created empty.txt (0 bytes, 0 lines)."
    write(ctx, "u.txt", "héllo — ✓\n")
    assert (ctx.workspace / "u.txt").read_bytes() == "héllo — ✓\n".encode()


def test_missing_argument_is_reported() -> None:
    out = WriteTool().execute({"path": "x"}, ToolContext(workspace=Path("/nonexistent")))
    assert out.is_error and out.text == "Invalid arguments for write: content: Field required"


def test_unencodable_content_and_path_are_clear_errors(ctx: ToolContext) -> None:
    out = write(ctx, "s.txt", "a\ud800b")
    assert out.is_error and out.text == "content is not valid Unicode: surrogates not allowed at character 1"
    out = write(ctx, "s\ud800.txt", "ab")
    assert out.is_error and "cannot be encoded" in out.text
    assert list(ctx.workspace.iterdir()) == []
