"""The Markdown the action posts: the tracking comment, the final report, the unauthorised reply.

Every body carries the hidden marker (so the bot never answers itself), passes through the redactor,
and fits GitHub's 65,536-character limit: when it would not, the diff is cut at a line boundary and the
comment says how much was left out and where the full patch is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bot.action.events import BOT_MARKER, Task
from bot.action.redact import Redactor
from bot.llm.messages import Cost, Usage

GITHUB_COMMENT_LIMIT = 65_536
# Room for the Markdown around the diff (fences, <details>, the truncation note) when budgeting it.
_SLACK = 500

Status = Literal["success", "no_changes", "limit", "error", "cancelled", "rejected"]

_HEADLINES: dict[Status, str] = {
    "success": "✅ **opi finished**",
    "no_changes": "✅ **opi finished: no changes**",
    "limit": "⚠️ **opi stopped: limit reached**",
    "error": "❌ **opi failed**",
    "cancelled": "🛑 **opi was cancelled**",
    "rejected": "⚠️ **opi finished, but the push was rejected**",
}


@dataclass
class CostSummary:
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    turns: int = 0
    compactions: int = 0
    duration_seconds: float = 0.0
    model: str = ""

    @property
    def usd(self) -> str:
        return "unknown price" if self.cost.total is None else f"${self.cost.total:.4f}"


@dataclass
class Report:
    status: Status
    reason: str = ""  # why it stopped / failed, or what was delivered
    answer: str = ""
    diff_stat: str = ""
    patch: str = ""
    patch_note: str = ""  # e.g. "not pushed: fork PR" / "apply with `git apply`"
    delivery: str = ""  # commit or PR link line
    costs: CostSummary | None = None
    session: str = ""  # where the session is
    run_url: str = ""


def tracking_body(task: Task, run_url: str) -> str:
    what = f"`{task.instructions}`" if task.instructions else ("a fix" if task.is_fix else "this")
    run = f" ([follow the run]({run_url}))" if run_url else ""
    return f"{BOT_MARKER}\n👀 opi is working on {what}{run}…\n\nThis comment will be updated with the result."


def unauthorised_body(login: str, permission: str) -> str:
    return (f"{BOT_MARKER}\nSorry @{login}, only people with write, maintain or admin permission on this "
            f"repository can ask opi to work on it (your permission: {permission}). "
            "A maintainer can run the command instead.")


def cost_table(costs: CostSummary) -> str:
    usage = costs.usage
    rows = [
        ("Model", f"`{costs.model}`" if costs.model else "unknown"),
        ("Input tokens", f"{usage.input:,}"),
        ("Output tokens", f"{usage.output:,}"),
        ("Cache read tokens", f"{usage.cache_read:,}"),
        ("Cache write tokens", f"{usage.cache_write:,}"),
        ("Cost", costs.usd),
        ("Turns", str(costs.turns)),
        ("Compactions", str(costs.compactions)),
        ("Duration", _duration(costs.duration_seconds)),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _fence(text: str) -> str:
    longest = 2
    run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * (longest + 1)


_ANSWER_LIMIT = 20_000  # leaves most of the comment for the diff


def _quote_answer(answer: str) -> str:
    answer = answer.strip()
    if len(answer) > _ANSWER_LIMIT:
        answer = answer[:_ANSWER_LIMIT].rstrip() + "\n\n_(answer truncated: the full text is in the session)_"
    return answer or "_(the agent gave no final answer)_"


def render_report(report: Report, redact: Redactor, *, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    head = [BOT_MARKER, _HEADLINES[report.status]]
    if report.reason:
        head.append(f"\n{report.reason}")
    if report.delivery:
        head.append(f"\n{report.delivery}")
    head.append(f"\n{_quote_answer(report.answer)}")
    tail: list[str] = []
    if report.costs is not None:
        tail.append(f"<details><summary>Cost: {report.costs.usd}, {report.costs.turns} turns</summary>\n\n"
                    f"{cost_table(report.costs)}\n\n</details>")
    footer = [part for part in (
        f"Session: {report.session}" if report.session else "",
        f"[Run log]({report.run_url})" if report.run_url else "",
    ) if part]
    if footer:
        tail.append(" · ".join(footer))
    before = redact("\n".join(head))
    after = redact("\n\n".join(tail))
    if not report.patch:
        return f"{before}\n\n{after}".rstrip() + "\n"
    stat = redact(report.diff_stat)
    budget = limit - len(before) - len(after) - len(stat) - len(report.patch_note) - _SLACK
    diff_block = _diff_block(redact(report.patch), stat, redact(report.patch_note), budget)
    body = f"{before}\n\n{diff_block}\n\n{after}".rstrip() + "\n"
    return body if len(body) <= limit else body[: limit - 40] + "\n\n_(comment truncated)_\n"


def _diff_block(patch: str, stat: str, note: str, budget: int) -> str:
    shown, truncated_note = _truncate_lines(patch, max(budget, 0))
    fence = _fence(shown)
    parts = []
    if stat:
        parts.append(f"```\n{stat}\n```" if "```" not in stat else stat)
    if note:
        parts.append(note)
    summary = "Diff" + (" (truncated)" if truncated_note else "")
    parts.append(f"<details><summary>{summary}</summary>\n\n{fence}diff\n{shown.rstrip()}\n{fence}\n"
                 f"{truncated_note}\n</details>")
    return "\n\n".join(parts)


def _truncate_lines(patch: str, budget: int) -> tuple[str, str]:
    if len(patch) <= budget:
        return patch, ""
    lines = patch.splitlines(keepends=True)
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) > budget:
            break
        kept.append(line)
        used += len(line)
    omitted = len(lines) - len(kept)
    note = (f"\n_The diff is too long for a GitHub comment (limit {GITHUB_COMMENT_LIMIT:,} characters): "
            f"{omitted:,} of {len(lines):,} lines are not shown. The full patch is attached to the run._\n")
    return "".join(kept), note


def summary_markdown(report: Report, title: str) -> str:
    """For `$GITHUB_STEP_SUMMARY`: the headline and the cost table."""
    parts = [f"### {title}", _HEADLINES[report.status]]
    if report.reason:
        parts.append(report.reason)
    if report.costs is not None:
        parts.append(cost_table(report.costs))
    if report.session:
        parts.append(f"Session: {report.session}")
    return "\n\n".join(parts) + "\n"
