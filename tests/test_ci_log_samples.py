"""What the failure extraction keeps of hand-written GitHub Actions logs (tests/data/ci-logs, see its
README): a failing step after passing tests, compiler-style error lines, go test output and panics, and
failed test names that do not depend on timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.action.autofix import failure_signature
from bot.action.ci_logs import clean_log, extract_failure, failed_tests

LOGS = Path(__file__).parent / "data" / "ci-logs"


def _excerpt(name: str) -> str:
    return extract_failure(clean_log((LOGS / name).read_text(encoding="utf-8")))


# A job whose tests pass and whose later step fails: the failing step's own output is shown.
@pytest.mark.parametrize(("log", "expected"), [
    ("pytest_then_mypy.log", ["▸ Run mypy src",
                              'src/app/models.py:41: error: Incompatible return value type (got "str | None"',
                              'src/app/api.py:17: error: Argument 1 to "load"', "Found 2 errors in 2 files"]),
    ("pytest_then_ruff.log", ["▸ Run ruff check .", "src/app/api.py:3:8: F401 [*] `os` imported but unused",
                              "src/app/api.py:52:89: E501 Line too long", "Found 2 errors."]),
    ("pytest_then_coverage.log", ["▸ Run coverage report --fail-under=90", "TOTAL                   92     14    85%",
                                  "Coverage failure: total of 85 is less than fail-under=90"]),
])
def test_a_failing_step_after_passing_tests_is_shown(log: str, expected: list[str]) -> None:
    excerpt = _excerpt(log)
    for text in expected:
        assert text in excerpt, (text, excerpt)
    assert excerpt.rstrip().endswith("##[error]Process completed with exit code 1.\n[... 4 lines ...]")
    assert "Syncing repository" not in excerpt  # the context stays within the failing step


@pytest.mark.parametrize("log", ["just_tsc.log", "tsc.log"])
def test_compiler_style_error_lines_are_kept(log: str) -> None:
    excerpt = _excerpt(log)
    assert "src/index.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'." in excerpt
    assert "src/util.ts(12,15): error TS2339: Property 'foo' does not exist on type 'Bar'." in excerpt
    assert "Syncing repository" not in excerpt


def test_a_recipe_error_line_does_not_hide_the_errors_before_it() -> None:
    excerpt = _excerpt("just_tsc.log")
    assert "error TS2322" in excerpt and "error: Recipe `typecheck` failed on line 2" in excerpt


def test_go_test_output_after_a_failed_test_is_kept() -> None:
    excerpt = _excerpt("go_nov.log")
    assert ('--- FAIL: TestParse (0.00s)\n    --- FAIL: TestParse/empty_input (0.00s)\n'
            '        parse_test.go:21: Parse("") = 1, want 0\n'
            '    --- FAIL: TestParse/trailing_comma (0.00s)\n'
            '        parse_test.go:21: Parse("1,") returned error: unexpected end of input\nFAIL\n') in excerpt


def test_a_go_panic_keeps_its_stack() -> None:
    excerpt = _excerpt("go_panic.log")
    assert "panic: runtime error: index out of range [5] with length 3 [recovered]" in excerpt
    assert "goroutine 7 [running]:" in excerpt and "/home/runner/work/m/m/parse/parse.go:10" in excerpt
    assert "/home/runner/work/m/m/parse/parse_test.go:20 +0x1d" in excerpt
    assert "exit status 2\nFAIL\texample.com/m/parse\t0.005s" in excerpt
    assert "--- PASS: TestSum" not in excerpt


def test_jest_timings_are_not_part_of_failed_test_names() -> None:
    first = failed_tests(clean_log((LOGS / "jest_v_a.log").read_text(encoding="utf-8")))
    second = failed_tests(clean_log((LOGS / "jest_v_b.log").read_text(encoding="utf-8")))
    assert first == second == ("adds two numbers", "sum › adds two numbers")
    assert failure_signature([("test", first)]) == failure_signature([("test", second)])


@pytest.mark.parametrize(("line", "name"), [
    ("    ✕ adds two numbers (3 ms)", "adds two numbers"),
    ("    ✕ adds two numbers (1.2 s)", "adds two numbers"),
    ("   × sum > adds 4ms", "sum > adds"),
    ("   × sum > adds 1.20s", "sum > adds"),
    ("   × sum > adds", "sum > adds"),
    ("   × runs within 5s 3ms", "runs within 5s"),
])
def test_timings_are_stripped_from_jest_and_vitest_names(line: str, name: str) -> None:
    assert failed_tests(line) == (name,)
