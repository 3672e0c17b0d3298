"""grep: the ripgrep backend and the Python fallback, chosen explicitly, give the same output and both
respect .gitignore. The rg cases run when ripgrep is installed; the fallback cases always run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bot.tools.base import ToolContext, ToolOutput
from bot.tools.grep import GrepTool

HAVE_RG = shutil.which("rg") is not None
BACKENDS = [
    "python",
    pytest.param("rg", marks=pytest.mark.skipif(not HAVE_RG, reason="ripgrep is not installed")),
]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_tree(root: Path) -> None:
    files = {
        "src/app.py": "import os\n\ndef main():\n    return TODO_fix\n",
        "src/util.py": "# TODO: speed up\nx = 1\n",
        "src/deep/mod.py": "value = 'todo'\n",
        "README.md": "Project\nTODO list\n",
        ".github/ci.yml": "run: TODO\n",
        "ignored/secret.py": "TODO hidden\n",
        "debug.log": "TODO in a log\n",
        "a-c.txt": "TODO dash\n",
        "a/b.txt": "TODO slash\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / ".gitignore").write_text("ignored/\n*.log\n")
    (root / "image.bin").write_bytes(b"TODO\x00\x01\x02")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    make_tree(root)
    git(root, "init", "-q")
    git(root, "add", "src", "README.md", ".gitignore")
    git(root, "commit", "-q", "-m", "init")
    return root  # .github/ci.yml, a/b.txt, a-c.txt stay untracked (but not ignored)


def grep(root: Path, backend: str, **args: object) -> ToolOutput:
    return GrepTool(backend=backend).execute(dict(args), ToolContext(workspace=root))  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_are_path_line_text_in_path_order_respecting_gitignore(repo: Path, backend: str) -> None:
    out = grep(repo, backend, pattern="TODO")
    assert not out.is_error, out.text
    assert out.text.splitlines() == [
        ".github/ci.yml:1:run: TODO",
        "README.md:2:TODO list",
        "a/b.txt:1:TODO slash",
        "a-c.txt:1:TODO dash",
        "src/app.py:4:    return TODO_fix",
        "src/util.py:1:# TODO: speed up",
    ]
    assert out.details == {"matches": 6, "truncated": False}
    # .git is never searched (COMMIT_EDITMSG holds "init"), though other dot-directories are.
    assert grep(repo, backend, pattern="init").text == "No matches for 'init' in .."


@pytest.mark.parametrize("backend", BACKENDS)
def test_outside_a_git_repo_gitignore_does_not_apply(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    make_tree(root)
    out = grep(root, backend, pattern="hidden|in a log")
    assert out.text.splitlines() == ["debug.log:1:TODO in a log", "ignored/secret.py:1:TODO hidden"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignore_case_literal_and_glob(repo: Path, backend: str) -> None:
    assert grep(repo, backend, pattern="todo", ignore_case=True, glob="*.py").text.splitlines() == [
        "src/app.py:4:    return TODO_fix", "src/deep/mod.py:1:value = 'todo'", "src/util.py:1:# TODO: speed up",
    ]
    assert grep(repo, backend, pattern="todo", glob="src/deep/*.py").text == "src/deep/mod.py:1:value = 'todo'"
    (repo / "calc.py").write_text("y = a.b(1)\nz = axb(1)\n")
    assert grep(repo, backend, pattern="a.b(", literal=True).text == "calc.py:1:y = a.b(1)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_regex_is_a_clear_error(repo: Path, backend: str) -> None:
    out = grep(repo, backend, pattern="foo(")
    assert out.is_error
    assert out.text.startswith("Invalid pattern:") and "literal=true" in out.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_context_lines_and_separators(tmp_path: Path, backend: str) -> None:
    (tmp_path / "f.txt").write_text("".join(f"{'hit' if i in (3, 4, 12) else 'line'} {i}\n" for i in range(1, 16)))
    (tmp_path / "g.txt").write_text("x\nhit g\n")
    out = grep(tmp_path, backend, pattern="hit", context=1)
    assert out.text.splitlines() == [
        "f.txt-2-line 2", "f.txt:3:hit 3", "f.txt:4:hit 4", "f.txt-5-line 5",
        "--",
        "f.txt-11-line 11", "f.txt:12:hit 12", "f.txt-13-line 13",
        "--",
        "g.txt-1-x", "g.txt:2:hit g",
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_are_capped_with_a_notice(tmp_path: Path, backend: str) -> None:
    (tmp_path / "many.txt").write_text("match\n" * 50)
    out = grep(tmp_path, backend, pattern="match", limit=10)
    lines = out.text.split("\n\n")[0].splitlines()
    assert lines == [f"many.txt:{i}:match" for i in range(1, 11)]
    assert "[Showing the first 10 matches; there are more." in out.text
    assert out.details == {"matches": 10, "truncated": True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_cap_keeps_the_last_matchs_after_context_only(tmp_path: Path, backend: str) -> None:
    (tmp_path / "f.txt").write_text("hit 1\nafter\nx\nx\nx\nbefore\nhit 7\n")
    out = grep(tmp_path, backend, pattern="hit", limit=1, context=1)
    assert out.text.split("\n\n")[0].splitlines() == ["f.txt:1:hit 1", "f.txt-2-after"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_file_binary_skipped_and_no_matches(repo: Path, backend: str) -> None:
    assert grep(repo, backend, pattern="TODO", path="src/util.py").text == "src/util.py:1:# TODO: speed up"
    assert "image.bin" not in grep(repo, backend, pattern="TODO").text
    none = grep(repo, backend, pattern="no_such_thing_anywhere")
    assert not none.is_error and none.text == "No matches for 'no_such_thing_anywhere' in .."


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_lines_are_cut(tmp_path: Path, backend: str) -> None:
    (tmp_path / "min.js").write_text("x" * 2000 + "needle" + "y" * 2000 + "\n")
    out = grep(tmp_path, backend, pattern="needle")
    assert out.text.startswith("min.js:1:" + "x" * 500 + " … [line cut]")


@pytest.mark.skipif(not HAVE_RG, reason="ripgrep is not installed")
@pytest.mark.parametrize("args", [
    {"pattern": "TODO"},
    {"pattern": "t.do", "ignore_case": True, "context": 2},
    {"pattern": "TODO", "glob": "*.{py,md}"},
    {"pattern": "^", "limit": 7, "context": 1},
    {"pattern": "TODO", "path": "src"},
])
def test_backends_agree(repo: Path, args: dict[str, object]) -> None:
    assert grep(repo, "rg", **args).text == grep(repo, "python", **args).text


def test_missing_path_and_forced_rg_without_rg(repo: Path) -> None:
    out = grep(repo, "python", pattern="x", path="nope")
    assert out.is_error and out.text == "Path not found: nope"
    missing = GrepTool(backend="rg", rg_path=None)
    if not HAVE_RG:
        assert missing.execute({"pattern": "x"}, ToolContext(workspace=repo)).text == "ripgrep (rg) is not installed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancelled_turn_stops_the_search(repo: Path, backend: str) -> None:
    ctx = ToolContext(workspace=repo)
    ctx.cancel.set()
    out = GrepTool(backend=backend).execute({"pattern": "TODO"}, ctx)  # type: ignore[arg-type]
    assert out.is_error and out.text == "grep was cancelled"
