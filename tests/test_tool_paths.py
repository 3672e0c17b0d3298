"""Workspace confinement for write/edit: `..` and symlinks out are refused; reads may go anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.tools.base import ToolContext, ToolError
from bot.tools.edit import EditTool
from bot.tools.paths import display_path, resolve_for_read, resolve_for_write
from bot.tools.read import ReadTool
from bot.tools.write import WriteTool


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def test_relative_path_resolves_inside_the_workspace(workspace: Path) -> None:
    assert resolve_for_write(workspace, "src/new.py") == workspace.resolve() / "src" / "new.py"
    assert resolve_for_write(workspace, "./a/../b.txt") == workspace.resolve() / "b.txt"


def test_absolute_path_inside_the_workspace_is_allowed(workspace: Path) -> None:
    assert resolve_for_write(workspace, str(workspace / "x.txt")) == workspace.resolve() / "x.txt"


def test_dotdot_escape_is_refused(workspace: Path) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_for_write(workspace, "../escaped.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_for_write(workspace, "sub/../../escaped.txt")


def test_absolute_path_outside_is_refused(workspace: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"Refusing to modify .*outside the workspace"):
        resolve_for_write(workspace, str(tmp_path / "other.txt"))


def test_symlinked_file_pointing_out_is_refused(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep\n")
    (workspace / "link.txt").symlink_to(secret)
    with pytest.raises(ToolError, match=f"resolves to {secret}"):
        resolve_for_write(workspace, "link.txt")


def test_symlinked_parent_directory_pointing_out_is_refused(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "linkdir").symlink_to(outside)
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_for_write(workspace, "linkdir/new.txt")


def test_symlink_then_dotdot_follows_the_link_first(workspace: Path, tmp_path: Path) -> None:
    # ws/deep -> tmp/a/b ; "deep/../x" is tmp/a/x for the OS, outside the workspace, though lexically inside.
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True)
    (workspace / "deep").symlink_to(target)
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_for_write(workspace, "deep/../x.txt")


def test_symlink_inside_the_workspace_is_written_through(workspace: Path) -> None:
    (workspace / "real.txt").write_text("old\n")
    (workspace / "alias.txt").symlink_to("real.txt")
    ctx = ToolContext(workspace=workspace)
    out = WriteTool().execute({"path": "alias.txt", "content": "new\n"}, ctx)
    assert not out.is_error, out.text
    assert (workspace / "alias.txt").is_symlink()
    assert (workspace / "real.txt").read_text() == "new\n"


def test_workspace_that_is_itself_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real_ws"
    real.mkdir()
    link = tmp_path / "ws_link"
    link.symlink_to(real)
    assert resolve_for_write(link, "f.txt") == real / "f.txt"
    assert display_path(link, real / "f.txt") == "f.txt"


def test_write_and_edit_refuse_escapes_and_leave_outside_files_alone(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep\n")
    (workspace / "link.txt").symlink_to(secret)
    ctx = ToolContext(workspace=workspace)
    for tool, args in (
        (WriteTool(), {"path": "../secret.txt", "content": "pwned"}),
        (WriteTool(), {"path": "link.txt", "content": "pwned"}),
        (EditTool(), {"path": "link.txt", "old_text": "keep", "new_text": "pwned"}),
        (EditTool(), {"path": str(secret), "old_text": "keep", "new_text": "pwned"}),
    ):
        out = tool.execute(args, ctx)
        assert out.is_error and "outside the workspace" in out.text, out.text
    assert secret.read_text() == "keep\n"


def test_reading_outside_the_workspace_is_allowed(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "notes.txt"
    outside.write_text("hello\n")
    assert resolve_for_read(workspace, "../notes.txt") == outside
    out = ReadTool().execute({"path": "../notes.txt"}, ToolContext(workspace=workspace))
    assert not out.is_error and "hello" in out.text


def test_home_is_expanded(workspace: Path, isolated_home: Path) -> None:
    assert resolve_for_read(workspace, "~/x.txt") == isolated_home / "x.txt"


def test_empty_path_is_a_clear_error(workspace: Path) -> None:
    with pytest.raises(ToolError, match="path is empty"):
        resolve_for_read(workspace, "  ")


def test_display_path(workspace: Path, tmp_path: Path) -> None:
    assert display_path(workspace, workspace / "a" / "b.py") == "a/b.py"
    assert display_path(workspace, workspace) == "."
    assert display_path(workspace, tmp_path / "x") == str(tmp_path / "x")
