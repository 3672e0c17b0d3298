"""Rendering the comments: marker, status, cost table, collapsible diff within GitHub's limit."""

from __future__ import annotations

import json
from pathlib import Path

from bot.action.comment import (
    GITHUB_COMMENT_LIMIT,
    CostSummary,
    Report,
    clip,
    cost_output,
    cost_table,
    fit_comment,
    format_usd,
    internal_failure,
    recorded_cost,
    render_report,
    run_costs,
    summary_markdown,
    tracking_body,
    unauthorised_body,
    workflow_push_refusal,
)
from bot.action.events import BOT_MARKER, Task
from bot.action.redact import Redactor
from bot.llm.messages import AssistantMessage, Cost, TextContent, Usage

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


# -- clipping, prices, true notes, public errors -----------------------------------------------------------

def test_every_echoed_part_is_clipped_so_the_comment_fits() -> None:
    huge = "y" * 200_000
    report = Report(status="error", reason=huge, delivery=huge, answer=huge, diff_stat=huge, patch=huge + "\n",
                    patch_note=huge, session=huge, costs=_costs())
    body = render_report(report, Redactor())
    assert len(body) <= GITHUB_COMMENT_LIMIT and "| Turns | 4 |" in body


def test_a_hostile_task_cannot_break_out_of_the_tracking_comment() -> None:
    task = Task(kind="issue_comment", event_name="issue_comment", repo="o/r", is_fix=False, number=3,
                instructions="``` evil\n" + "<!-- opi-bot --> " * 10_000 + "`")
    body = tracking_body(task, "https://github.com/o/r/actions/runs/9")
    assert len(body) < 1_000 and "\n```" not in body
    code = body.split("working on ", 1)[1].split(" ([follow", 1)[0]
    assert code.startswith("````") and code.endswith("````")  # a fence longer than any run inside


def test_fit_comment_closes_what_it_cuts() -> None:
    body = "<details><summary>x</summary>\n\n```diff\n" + "+line\n" * 20_000
    fitted = fit_comment(body, 1_000)
    assert len(fitted) <= 1_000 and fitted.rstrip().endswith("_(comment truncated)_")
    assert "\n```\n</details>" in fitted
    assert fit_comment("short") == "short"
    assert clip("a\n" * 100, 50, "answer").endswith("_(answer truncated: 150 more characters)_")


def test_an_unknown_price_is_never_shown_as_zero() -> None:
    assert format_usd(None) == "unknown price" and format_usd(0.0) == "$0.0000"
    assert cost_output(None) == "" and cost_output(Cost()) == "" and cost_output(Cost(total=0.5)) == "0.500000"
    body = render_report(Report(status="cancelled", costs=_costs(None)), Redactor())
    assert "$0" not in body and "Cost: unknown price" in body


def test_a_replay_shows_the_recorded_cost() -> None:
    costs = _costs(0.0)
    costs.recorded_cost = Cost(total=0.4321)
    assert costs.usd == "$0.4321 as recorded (the replay itself spent nothing)"
    costs.recorded_cost = Cost(total=None)
    assert costs.usd.startswith("unknown price as recorded")


def _session(path: Path, *, costs: list[Cost], copied: int = 0) -> Path:
    from bot.agent.session import Session

    session = Session.create(path, cwd="/w", model="anthropic:m")
    for index, cost in enumerate(costs):
        session.append_message(AssistantMessage(
            content=[TextContent(text=f"turn {index}")], provider="anthropic", model="m", api="anthropic",
            usage=Usage(input=10, output=5), cost=cost))
    session.close()
    if copied:  # the first entries were copied from the thread's earlier session: older than the header
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for line in lines[1:copied + 1]:
            line["timestamp"] = "2020-01-01T00:00:00.000Z"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_run_costs_come_from_this_runs_part_of_the_session(tmp_path: Path) -> None:
    path = _session(tmp_path / "s.jsonl", costs=[Cost(total=5.0), Cost(total=0.25), Cost(total=0.5)], copied=1)
    costs = run_costs(path)
    assert costs is not None and costs.turns == 2 and costs.cost.total == 0.75
    assert costs.usage.input == 20 and costs.model == "anthropic:m"
    unknown = run_costs(_session(tmp_path / "u.jsonl", costs=[Cost(total=0.25), Cost()]))
    assert unknown is not None and unknown.cost.total is None and unknown.usd == "unknown price"
    assert run_costs(tmp_path / "missing.jsonl") is None
    # A replay's source is read by the same rule: a replay plays back the recorded run, and the entries a
    # continued session copied from the thread's earlier runs were spent (and reported) by those runs.
    recorded = recorded_cost(path)
    assert recorded is not None and recorded.total == 0.75


def test_the_truncation_note_only_promises_an_upload_that_happened() -> None:
    report = Report(status="limit", patch=_patch(20_000), costs=_costs())
    body = render_report(report, Redactor())
    assert "could not be attached to the run" in body and "is attached" not in body
    report.patch_link = "[opi-session-7-1](https://github.com/o/r/actions/runs/1/artifacts/2)"
    body = render_report(report, Redactor())
    assert "The full patch is attached to the run: [opi-session-7-1]" in body


def test_internal_failures_get_a_short_public_sentence() -> None:
    sentence = internal_failure("continue the earlier session", "https://github.com/o/r/actions/runs/1")
    assert sentence == ("opi could not continue the earlier session because of an internal error; the details "
                        "are in the [job log](https://github.com/o/r/actions/runs/1).")


def test_a_refused_workflow_push_is_explained() -> None:
    stderr = ("To https://github.com/o/r.git\n ! [remote rejected] opi/issue-3 -> opi/issue-3 (refusing to allow a "
              "GitHub App to create or update workflow `.github/workflows/ci.yml` without `workflows` permission)\n"
              "error: failed to push some refs to 'https://github.com/o/r.git'")
    text = workflow_push_refusal(stderr)
    assert text is not None and "`.github/workflows/ci.yml`" in text and "`workflows` permission" in text
    assert "GITHUB_TOKEN" in text and "github_token" in text
    assert workflow_push_refusal("! [rejected] main -> main (fetch first)") is None
    oauth = ("refusing to allow an OAuth App to create or update workflow `.github/workflows/a.yml` without "
             "`workflow` scope")
    assert workflow_push_refusal(oauth) is not None


def test_a_refused_workflow_push_under_an_app_names_the_apps_settings() -> None:
    # The app's token replaces `github_token`: another token there would change nothing.
    stderr = ("refusing to allow a GitHub App to create or update workflow `.github/workflows/ci.yml` without "
              "`workflows` permission")
    text = workflow_push_refusal(stderr, app=True)
    assert text is not None and "`.github/workflows/ci.yml`" in text
    assert 'set the input `allow_workflow_edits: "true"`' in text and "**Workflows: Read and write**" in text
    assert "github_token" not in text and "GITHUB_TOKEN" not in text
