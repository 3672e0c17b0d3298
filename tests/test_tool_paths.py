"""Workspace confinement: `..` and symlinks out are refused for every tool, /proc is never read, and
write/edit refuse anything under a .git directory."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from bot.tools.base import Tool, ToolContext, ToolError
from bot.tools.edit import EditTool
from bot.tools.find import FindTool
from bot.tools.grep import GrepTool
from bot.tools.ls import LsTool
from bot.tools.paths import display_path, resolve_for_read, resolve_for_write, resolve_path
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


def test_reading_outside_the_workspace_is_refused(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "notes.txt"
    outside.write_text("hello\n")
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_for_read(workspace, "../notes.txt")
    out = ReadTool().execute({"path": "../notes.txt"}, ToolContext(workspace=workspace))
    assert out.is_error and "outside the workspace" in out.text and "hello" not in out.text


def test_home_is_expanded(workspace: Path, isolated_home: Path) -> None:
    assert resolve_path(workspace, "~/x.txt") == isolated_home / "x.txt"


def test_empty_path_is_a_clear_error(workspace: Path) -> None:
    with pytest.raises(ToolError, match="path is empty"):
        resolve_for_read(workspace, "  ")


def test_display_path(workspace: Path, tmp_path: Path) -> None:
    assert display_path(workspace, workspace / "a" / "b.py") == "a/b.py"
    assert display_path(workspace, workspace) == "."
    assert display_path(workspace, tmp_path / "x") == str(tmp_path / "x")


# -- .git is git's code: never written (issue 9) -----------------------------------------------------------
@pytest.mark.parametrize("path", [
    ".git/hooks/pre-push", ".git/config", ".git", "sub/.git/hooks/post-commit", ".GIT/config", ".Git/hooks/x",
    ".git./config", "x/../.git/info/attributes", "{ws}/.git/hooks/pre-commit",
])
def test_write_refuses_anything_under_a_git_directory(workspace: Path, path: str) -> None:
    (workspace / ".git" / "hooks").mkdir(parents=True)
    out = WriteTool().execute({"path": path.format(ws=workspace), "content": "#!/bin/sh\necho pwned\n"},
                              ToolContext(workspace=workspace))
    assert out.is_error and "inside a .git directory" in out.text, out.text
    assert not (workspace / ".git" / "hooks" / "pre-push").exists()
    assert not (workspace / "sub").exists()


def test_write_and_edit_refuse_git_metadata_reached_through_a_symlink(workspace: Path) -> None:
    (workspace / ".git").mkdir()
    config = workspace / ".git" / "config"
    config.write_text("[core]\n\tbare = false\n")
    (workspace / "hooks").symlink_to(".git")
    (workspace / "cfg").symlink_to(".git/config")
    ctx = ToolContext(workspace=workspace)
    for tool, args in (
        (WriteTool(), {"path": "hooks/hooks/pre-push", "content": "pwned"}),
        (WriteTool(), {"path": "cfg", "content": "[core]\n\tfsmonitor = touch pwned\n"}),
        (EditTool(), {"path": "cfg", "old_text": "bare = false", "new_text": "fsmonitor = touch pwned"}),
        (EditTool(), {"path": ".git/config", "old_text": "bare = false", "new_text": "fsmonitor = touch pwned"}),
    ):
        out = tool.execute(args, ctx)
        assert out.is_error and "inside a .git directory" in out.text, out.text
    assert config.read_text() == "[core]\n\tbare = false\n"
    assert not (workspace / ".git" / "hooks").exists()


def test_names_that_only_look_like_git_are_writable_and_git_can_be_read(workspace: Path) -> None:
    ctx = ToolContext(workspace=workspace)
    for path in (".gitignore", ".github/workflows/ci.yml", "git/config", ".gitx/y", "a.git/b"):
        out = WriteTool().execute({"path": path, "content": "ok\n"}, ctx)
        assert not out.is_error, out.text
    (workspace / ".git").mkdir()
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    out = ReadTool().execute({"path": ".git/HEAD"}, ctx)
    assert not out.is_error and "refs/heads/main" in out.text


# -- the read-only tools stay in the workspace and never read /proc (issue 9) -----------------------------
RG = shutil.which("rg") or shutil.which("rg", path=str(Path(sys.executable).parent))
# Without ripgrep a developer runs the Python search only; CI (CI=true) always includes rg, so a missing
# `rg` there fails (the rg tool reports it is not installed) instead of quietly testing less.
GREPS = [GrepTool(backend="python"), *([GrepTool(backend="rg", rg_path=RG)] if RG or os.environ.get("CI") else [])]


@pytest.fixture
def planted(workspace: Path, tmp_path: Path) -> Path:
    """A workspace a hostile PR could ship: links to the agent's environment and to files outside."""
    (workspace / "env").symlink_to("/proc/self/environ")
    (workspace / "procself").symlink_to("/proc/self")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("CANARY-outside\n")
    (workspace / "secret.txt").symlink_to(outside / "secret.txt")
    (workspace / "outdir").symlink_to(outside)
    (workspace / "ok.txt").write_text("fine\n")
    return workspace


def test_proc_and_outside_paths_are_refused_by_every_read_only_tool(planted: Path) -> None:
    ctx = ToolContext(workspace=planted)
    ctx.env = {**ctx.env, "OPENAI_API_KEY": "leak-1"}
    attempts: list[tuple[Tool, dict[str, object]]] = [
        (ReadTool(), {"path": "/proc/self/environ"}),
        (ReadTool(), {"path": "env"}),
        (ReadTool(), {"path": "procself/environ"}),
        (ReadTool(), {"path": "secret.txt"}),
        (ReadTool(), {"path": "outdir/secret.txt"}),
        (ReadTool(), {"path": "../outside/secret.txt"}),
        (LsTool(), {"path": "/proc/self"}),
        (LsTool(), {"path": "procself"}),
        (LsTool(), {"path": "outdir"}),
        (FindTool(), {"pattern": "*", "path": "/proc/self"}),
        (FindTool(), {"pattern": "*", "path": "outdir"}),
    ]
    for grep in GREPS:
        attempts += [(grep, {"pattern": "PATH", "path": "/proc/self/environ"}), (grep, {"pattern": "a", "path": "env"}),
                     (grep, {"pattern": "CANARY", "path": "outdir"}), (grep, {"pattern": "CANARY", "path": "secret.txt"})]
    for tool, args in attempts:
        out = tool.execute(args, ctx)
        assert out.is_error and "Refusing to read" in out.text, (tool.name, args, out.text)
        assert "CANARY" not in out.text and "PATH=" not in out.text


@pytest.mark.parametrize("grep", GREPS, ids=lambda g: g.backend)
def test_searching_the_workspace_does_not_follow_links_out_of_it(planted: Path, grep: GrepTool) -> None:
    ctx = ToolContext(workspace=planted)
    assert grep.execute({"pattern": "CANARY"}, ctx).text == "No matches for 'CANARY' in .."
    assert grep.execute({"pattern": "PATH="}, ctx).text == "No matches for 'PATH=' in .."
    assert grep.execute({"pattern": "fine"}, ctx).text == "ok.txt:1:fine"


def test_links_inside_the_workspace_still_work(planted: Path) -> None:
    ctx = ToolContext(workspace=planted)
    (planted / "alias.txt").symlink_to("ok.txt")
    assert ReadTool().execute({"path": "alias.txt"}, ctx).text == "     1\tfine\n"
    assert "ok.txt" in LsTool().execute({"path": "."}, ctx).text
