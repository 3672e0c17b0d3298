"""The agent's read-only `ci_log` tool over the broker's log directory: listing, by name or id, tail,
pattern with context, output bounds, confinement (index-named files only, no symlinks, no traversal),
and hostile patterns (refused, or stopped by the child's timeout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.tools import ci_log
from bot.tools.base import ToolContext, ToolError
from bot.tools.ci_log import CiLogTool, check_pattern, search_lines


def _logs(tmp_path: Path, **jobs: str) -> Path:
    directory = tmp_path / "ci-logs"
    directory.mkdir()
    index = []
    for number, (name, text) in enumerate(jobs.items(), start=101):
        (directory / f"job-{number}.log").write_text(text)
        index.append({"job_id": number, "name": name.replace("_", " "), "conclusion": "failure",
                      "file": f"job-{number}.log", "lines": text.count("\n") + 1})
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def _run(tool: CiLogTool, tmp_path: Path, **arguments: object) -> tuple[str, bool]:
    out = tool.execute(dict(arguments), ToolContext(workspace=tmp_path))
    return out.text, out.is_error


LOG = "\n".join([*(f"step {i}" for i in range(1, 501)), "E   assert 1 == 2", "FAILED t.py::test_x", "done"]) + "\n"


def test_without_a_job_it_lists_the_jobs(tmp_path: Path) -> None:
    tool = CiLogTool(_logs(tmp_path, test_py312=LOG, lint="x\n"))
    text, error = _run(tool, tmp_path)
    assert not error and "- test py312 (job 101, failure, 504 lines)" in text and "- lint (job 102" in text
    assert tool.mutating is False


def test_tail_by_name_and_by_id(tmp_path: Path) -> None:
    tool = CiLogTool(_logs(tmp_path, test=LOG))
    by_name, _ = _run(tool, tmp_path, job="test", tail=3)
    by_id, _ = _run(tool, tmp_path, job="101", tail=3)
    assert by_name == by_id
    assert by_name.splitlines() == ["test (job 101): lines 501-503 of 503", "   501  E   assert 1 == 2",
                                    "   502  FAILED t.py::test_x", "   503  done"]


def test_a_pattern_shows_matches_with_context(tmp_path: Path) -> None:
    tool = CiLogTool(_logs(tmp_path, test=LOG))
    text, error = _run(tool, tmp_path, job="tes", pattern=r"^(E |FAILED)|step 10$", context=1)
    assert not error
    assert text.splitlines() == [
        "test (job 101): 3 lines match '^(E |FAILED)|step 10$', showing the last 7 lines with context",
        "     9  step 9", "    10  step 10", "    11  step 11", "    --",
        "   500  step 500", "   501  E   assert 1 == 2", "   502  FAILED t.py::test_x", "   503  done"]
    case, _ = _run(tool, tmp_path, job="test", pattern="failed t", ignore_case=True)
    assert "FAILED t.py::test_x" in case


def test_output_is_bounded(tmp_path: Path) -> None:
    long = "\n".join("x" * 5000 for _ in range(100))
    tool = CiLogTool(_logs(tmp_path, big=long))
    text, _ = _run(tool, tmp_path, job="big", tail=2000)
    assert len(text) < ci_log.MAX_OUTPUT_CHARS + 500 and "earlier lines left out" in text
    assert "[... 4000 chars]" in text


def test_unknown_or_ambiguous_jobs_are_named(tmp_path: Path) -> None:
    tool = CiLogTool(_logs(tmp_path, test_a="a\n", test_b="b\n"))
    text, error = _run(tool, tmp_path, job="test")
    assert error and "matches several jobs" in text and "'test a' (101)" in text
    text, error = _run(tool, tmp_path, job="deploy")
    assert error and "matches no job" in text


def test_no_logs_directory_content_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    text, error = _run(CiLogTool(tmp_path / "empty"), tmp_path)
    assert error and "no CI logs are available" in text


def test_only_index_named_files_inside_the_directory_are_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN=hunter2")
    directory = tmp_path / "ci-logs"
    directory.mkdir()
    (directory / "job-1.log").symlink_to(secret)
    (directory / "index.json").write_text(json.dumps([
        {"job_id": 1, "name": "link", "file": "job-1.log"},
        {"job_id": 2, "name": "escape", "file": "../secret.txt"},
        {"job_id": 3, "name": "abs", "file": str(secret)},
    ]))
    tool = CiLogTool(directory)
    listing, _ = _run(tool, tmp_path)
    assert "escape" not in listing and "abs" not in listing
    text, error = _run(tool, tmp_path, job="link")
    assert error and "hunter2" not in text
    text, error = _run(tool, tmp_path, job="2")
    assert error and "hunter2" not in text


def test_a_symlinked_index_is_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "ci-logs"
    directory.mkdir()
    (tmp_path / "fake.json").write_text("[]")
    (directory / "index.json").symlink_to(tmp_path / "fake.json")
    text, error = _run(CiLogTool(directory), tmp_path)
    assert error and "cannot read index.json" in text


@pytest.mark.parametrize(("pattern", "message"), [
    ("(a+)+$", "exponential"), (r"(\w*\s?)*x", "exponential"), ("((ab)*c)+", "exponential"),
    (r"(a)\1", "backreferences"), ("(?P<x>a)(?P=x)", "backreferences"), ("(unclosed", "invalid pattern"),
])
def test_dangerous_or_broken_patterns_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        check_pattern(pattern)


@pytest.mark.parametrize("pattern", [r"assert \d+ == \d+", "(foo|bar)+", "[(]+x", r"\(a+\)+", "a{2,3}?b", "(?:ab)+"])
def test_ordinary_patterns_pass(pattern: str) -> None:
    check_pattern(pattern)


def test_a_pattern_that_backtracks_forever_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci_log, "SEARCH_TIMEOUT", 1.0)
    with pytest.raises(ToolError, match="took more than 1s"):
        search_lines(["a" * 2000] * 20, ".*.*.*.*x")


def test_the_schema_is_what_the_model_sees() -> None:
    schema = CiLogTool(Path("/nonexistent")).schema()
    assert set(schema["properties"]) == {"job", "pattern", "ignore_case", "context", "tail"}
    assert schema["properties"]["tail"]["maximum"] == ci_log.MAX_TAIL
