"""ls: sorted entries, directories with '/', dotfiles included, symlinks shown, capped."""

from __future__ import annotations

from pathlib import Path

from bot.tools.base import ToolContext, ToolOutput
from bot.tools.ls import LsTool


def ls(root: Path, **args: object) -> ToolOutput:
    return LsTool().execute(dict(args), ToolContext(workspace=root))


def test_sorted_with_dirs_marked_and_dotfiles(tmp_path: Path) -> None:
    for name in ("b.txt", "A.md", ".env.example", "c"):
        (tmp_path / name).write_text("")
    (tmp_path / "src").mkdir()
    (tmp_path / ".github").mkdir()
    out = ls(tmp_path)
    assert out.text.splitlines() == [".env.example", ".github/", "A.md", "b.txt", "c", "src/"]
    assert out.details == {"count": 6, "total": 6, "truncated": False}


def test_symlinks_show_their_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "to_dir").symlink_to("real")
    (tmp_path / "dangling").symlink_to("missing.txt")
    assert ls(tmp_path).text.splitlines() == ["dangling -> missing.txt", "real/", "to_dir/ -> real"]


def test_capped_with_a_notice(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"f{i:02}").write_text("")
    out = ls(tmp_path, limit=4)
    assert out.text == "f00\nf01\nf02\nf03\n\n[Showing 4 of 12 entries; pass a larger limit to see more, or use find with a pattern.]"
    assert out.details == {"count": 4, "total": 12, "truncated": True}


def test_subdirectory_empty_missing_and_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.py").write_text("")
    (tmp_path / "empty").mkdir()
    assert ls(tmp_path, path="sub").text == "x.py"
    assert ls(tmp_path, path="empty").text == "[empty is empty]"
    missing = ls(tmp_path, path="nope")
    assert missing.is_error and missing.text == "Directory not found: nope"
    file = ls(tmp_path, path="sub/x.py")
    assert file.is_error and file.text == "sub/x.py is a file, not a directory; use read to see its content"


def test_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "sibling.txt").write_text("")
    out = ls(ws, path="..")
    assert out.is_error and "outside the workspace" in out.text and "sibling.txt" not in out.text
