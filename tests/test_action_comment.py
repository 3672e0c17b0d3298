"""Rendering the comments: marker, status, cost table, collapsible diff within GitHub's limit."""

from __future__ import annotations

from bot.action.comment import (
    GITHUB_COMMENT_LIMIT,
    CostSummary,
    Report,
    cost_table,
    render_report,
    summary_markdown,
    tracking_body,
    unauthorised_body,
)
from bot.action.events import BOT_MARKER, Task
from bot.action.redact import Redactor
from bot.llm.messages import Cost, Usage

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"


def _costs(total: float | None = 0.0123) -> CostSummary:
    return CostSummary(usage=Usage(input=1200, output=340, cache_read=5000, cache_write=100),
                       cost=Cost(total=total), turns=4, compactions=1, duration_seconds=75.2,
                       model="anthropic:claude-sonnet-4-5")


def _patch(lines: int) -> str:
    body = "".join(f"+line {i}\n" for i in range(lines))
    return f"diff --git a/f.py b/f.py\n--- a/f.py\n+++ b/f.py\n@@ -0,0 +1,{lines} @@\n{body}"


def test_tracking_comment_has_marker_and_run_link() -> None:
    task = Task(kind="pr_comment", event_name="issue_comment", repo="o/r", instructions="fix the tests",
                is_fix=False, number=3)
    body = tracking_body(task, "https://github.com/o/r/actions/runs/9")
    assert body.startswith(BOT_MARKER)
    assert "`fix the tests`" in body and "(https://github.com/o/r/actions/runs/9)" in body


def test_unauthorised_reply_is_polite_and_marked() -> None:
    body = unauthorised_body("visitor", "read")
    assert BOT_MARKER in body and "@visitor" in body and "write, maintain or admin" in body


def test_cost_table_lists_every_figure() -> None:
    table = cost_table(_costs())
    for expected in ("1,200", "340", "5,000", "100", "$0.0123", "| Turns | 4 |", "| Compactions | 1 |",
                     "1m 15s", "anthropic:claude-sonnet-4-5"):
        assert expected in table
    assert "unknown price" in cost_table(_costs(None))


def test_success_report_has_status_answer_stat_diff_and_link() -> None:
    report = Report(status="success", answer="Fixed the off-by-one.", diff_stat=" f.py | 2 +-", patch=_patch(3),
                    delivery="Pushed [`abc1234`](https://github.com/o/r/commit/abc1234) to `feature`.",
                    costs=_costs(), session="`s.jsonl`", run_url="https://github.com/o/r/actions/runs/1")
    body = render_report(report, Redactor())
    assert body.startswith(BOT_MARKER)
    assert "✅ **opi finished**" in body and "Fixed the off-by-one." in body
    assert " f.py | 2 +-" in body and "<details><summary>Diff</summary>" in body and "```diff" in body
    assert "+line 2" in body and "abc1234" in body and "$0.0123" in body
    assert "Session: `s.jsonl`" in body and "[Run log](https://github.com/o/r/actions/runs/1)" in body


def test_every_status_has_a_headline() -> None:
    for status, words in [("no_changes", "no changes"), ("limit", "limit reached"), ("error", "failed"),
                          ("cancelled", "cancelled"), ("rejected", "push was rejected")]:
        body = render_report(Report(status=status, reason="because"), Redactor())  # type: ignore[arg-type]
        assert words in body and "because" in body


def test_huge_diff_is_truncated_to_fit_and_says_so() -> None:
    report = Report(status="limit", answer="partial", diff_stat=" f.py | 20000 +", patch=_patch(20_000),
                    costs=_costs(), reason="Stopped (max_turns)")
    body = render_report(report, Redactor())
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "Diff (truncated)" in body and "are not shown" in body
    assert "+line 0\n" in body and "+line 19999" not in body
    assert body.rstrip().endswith("</details>")  # the cost table survived the cut


def test_huge_answer_is_clipped_and_the_diff_still_shows() -> None:
    report = Report(status="success", answer="x" * 100_000, patch=_patch(5), costs=_costs())
    body = render_report(report, Redactor())
    assert len(body) <= GITHUB_COMMENT_LIMIT and "answer truncated" in body
    assert "+line 4" in body and "| Turns | 4 |" in body


def test_diff_with_backticks_gets_a_longer_fence() -> None:
    patch = "diff --git a/README.md b/README.md\n+```python\n+print(1)\n+```\n"
    body = render_report(Report(status="success", patch=patch), Redactor())
    assert "````diff\n" in body


def test_secrets_in_answer_patch_and_reason_are_redacted() -> None:
    report = Report(status="error", answer=f"the key is {SECRET}", reason=f"failed with {SECRET}",
                    patch=f"+KEY = '{SECRET}'\n", diff_stat="x", patch_note=f"note {SECRET}")
    body = render_report(report, Redactor([SECRET]))
    assert SECRET not in body and body.count("***") >= 4


def test_step_summary_has_the_cost_table() -> None:
    summary = summary_markdown(Report(status="success", costs=_costs(), session="`s.jsonl`"), "opi")
    assert "| Cost | $0.0123 |" in summary and "### opi" in summary
