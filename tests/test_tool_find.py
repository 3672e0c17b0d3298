"""find: glob semantics, .gitignore respected (git ls-files) or a plain walk, sorted, capped."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.tools.base import ToolContext, ToolOutput
from bot.tools.find import FindTool, GlobMatcher
from tests.tool_support import recording_wrapper


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    touch(root, "setup.py", "src/pkg/__init__.py", "src/pkg/core.py", "src/main.ts", "tests/test_core.py",
          "build/gen.py", "node_modules/dep/index.js", ".github/workflows/ci.yml", "a-c.py", "a/b.py",
          "notes.tmp")
    (root / ".gitignore").write_text("build/\nnode_modules/\n*.tmp\n")
    git(root, "init", "-q")
    git(root, "add", ".gitignore", "setup.py", "src")
    git(root, "commit", "-q", "-m", "init")
    (root / "src" / "pkg" / "core.py").unlink()  # deleted in the work tree, still in the index
    return root


def find(root: Path, **args: object) -> ToolOutput:
    return FindTool().execute(dict(args), ToolContext(workspace=root))


def test_name_glob_matches_at_any_depth_and_respects_gitignore(repo: Path) -> None:
    out = find(repo, pattern="*.py")
    assert out.text.splitlines() == ["a/b.py", "a-c.py", "setup.py", "src/pkg/__init__.py", "tests/test_core.py"]


def test_path_globs_are_relative_to_the_search_path(repo: Path) -> None:
    assert find(repo, pattern="src/*.ts").text == "src/main.ts"
    assert find(repo, pattern="src/**/*.py").text == "src/pkg/__init__.py"
    assert find(repo, pattern="**/*.yml").text == ".github/workflows/ci.yml"
    assert find(repo, pattern="*.py", path="src").text == "src/pkg/__init__.py"
    assert find(repo, pattern="{setup,a-c}.py").text == "a-c.py\nsetup.py"


def test_directories_are_listed_with_a_slash(repo: Path) -> None:
    assert find(repo, pattern="pkg").text == "src/pkg/"
    assert find(repo, pattern="workflows").text == ".github/workflows/"


def test_outside_git_everything_but_dot_git_is_walked(tmp_path: Path) -> None:
    touch(tmp_path, "x.py", "build/gen.py", ".hidden/y.py", ".git/hooks/z.py")
    (tmp_path / ".gitignore").write_text("build/\n")
    assert find(tmp_path, pattern="*.py").text.splitlines() == [".hidden/y.py", "build/gen.py", "x.py"]


def test_an_ignored_directory_named_explicitly_is_searched(repo: Path) -> None:
    assert find(repo, pattern="*.js", path="node_modules").text == "node_modules/dep/index.js"


def test_results_are_capped_with_a_notice(tmp_path: Path) -> None:
    touch(tmp_path, *(f"f{i:03}.txt" for i in range(30)))
    out = find(tmp_path, pattern="*.txt", limit=5)
    assert out.text.split("\n\n")[0].splitlines() == [f"f{i:03}.txt" for i in range(5)]
    assert "[Showing the first 5 matches; there are more." in out.text
    assert out.details == {"count": 5, "truncated": True}


def test_no_match_missing_dir_and_file_path(repo: Path) -> None:
    none = find(repo, pattern="*.rs")
    assert not none.is_error and none.text == "No files or directories matching '*.rs' in .."
    missing = find(repo, pattern="*", path="nope")
    assert missing.is_error and missing.text == "Directory not found: nope"
    file = find(repo, pattern="*", path="setup.py")
    assert file.is_error and file.text == "setup.py is a file, not a directory; find searches directories"
    empty = find(repo, pattern=" ")
    assert empty.is_error and "pattern is empty" in empty.text


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.py", "a/b/c.py", True),
    ("*.py", "c.pyc", False),
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/x/a.py", False),
    ("src/**/*.py", "src/a.py", True),
    ("src/**/*.py", "src/x/y/a.py", True),
    ("**/test_*", "test_a.py", True),
    ("file?.[ch]", "dir/file1.c", True),
    ("file?.[!ch]", "dir/file1.c", False),
    ("*.{js,ts}", "x/app.ts", True),
    ("/setup.py", "setup.py", True),
    ("docs/", "docs", True),
])
def test_glob_matcher(pattern: str, path: str, expected: bool) -> None:
    assert GlobMatcher(pattern).matches(path) is expected


def test_unclosed_brace_is_a_clear_error(tmp_path: Path) -> None:
    out = find(tmp_path, pattern="*.{js")
    assert out.is_error and out.text == "Invalid glob '*.{js': unclosed '{'"


# -- git under find is a tool subprocess too (issue 9) ------------------------------------------------------
def test_git_gets_the_scrubbed_environment(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_git = shutil.which("git")
    assert real_git is not None
    fake, dump = recording_wrapper(tmp_path, "git", real_git)
    monkeypatch.setenv("GITHUB_TOKEN", "leak-0")  # in the agent's own environment
    ctx = ToolContext(workspace=repo)
    ctx.env = {**ctx.env, "PATH": f"{fake.parent}{os.pathsep}{ctx.env.get('PATH', '')}",
               "ACTIONS_RUNTIME_TOKEN": "leak-1", "MY_ENDPOINT_KEY": "leak-2", "VISIBLE_SETTING": "ok"}
    ctx.extra_env_names = ("MY_ENDPOINT_KEY",)
    out = FindTool().execute({"pattern": "*.py"}, ctx)
    assert "setup.py" in out.text
    environment = dump.read_text()
    assert "VISIBLE_SETTING=ok" in environment and "leak-" not in environment


def test_a_configured_fsmonitor_command_is_never_run(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    git(repo, "config", "core.fsmonitor", f"touch '{marker}'; false")
    out = find(repo, pattern="*.py")
    assert "setup.py" in out.text
    assert not marker.exists()
