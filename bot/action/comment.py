"""The Markdown the action posts: the tracking comment, the final report, the unauthorised reply.

Every body carries the hidden marker (so the bot never answers itself), passes through the redactor,
and fits GitHub's 65,536-character limit: everything echoed from the run (task text, answer, reason,
patch) is clipped first, and when the diff would not fit it is cut at a line boundary with a note that
says how much was left out and, only when it really was uploaded, where the full patch is.

Public comments never carry internal details (API errors, stack traces, container paths): those go to
the job log, and the comment gets a short sentence (`internal_failure`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.action.events import BOT_MARKER, Task
from bot.action.redact import Redactor
from bot.llm.messages import Cost, Usage

GITHUB_COMMENT_LIMIT = 65_536
# Room for the Markdown around the diff (fences, <details>, the truncation note) when budgeting it.
_SLACK = 500
_TASK_LIMIT = 200  # the task as echoed in the tracking comment
_REASON_LIMIT = 4_000  # a reason, delivery line or session section
_ANSWER_LIMIT = 20_000  # leaves most of the comment for the diff
_CLIPPED = "_(comment truncated)_"

Status = Literal["success", "no_changes", "limit", "error", "cancelled", "rejected"]

_HEADLINES: dict[Status, str] = {
    "success": "✅ **opi finished**",
    "no_changes": "✅ **opi finished: no changes**",
    "limit": "⚠️ **opi stopped: limit reached**",
    "error": "❌ **opi failed**",
    "cancelled": "🛑 **opi was cancelled**",
    "rejected": "⚠️ **opi finished, but the push was rejected**",
}


def format_usd(total: float | None) -> str:
    """A price, or "unknown price": an unknown price is never shown as $0."""
    return "unknown price" if total is None else f"${total:.4f}"


def cost_output(cost: Cost | None) -> str:
    """The `cost_usd` step output: empty when nothing is known about the price, never a made-up 0."""
    return "" if cost is None or cost.total is None else f"{cost.total:.6f}"


@dataclass
class CostSummary:
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    turns: int = 0
    compactions: int = 0
    duration_seconds: float | None = None  # None: not known (never shown as 0)
    model: str = ""
    # A replay spends nothing; this is what the recorded run cost (shown instead of a bare $0).
    recorded_cost: Cost | None = None

    @property
    def usd(self) -> str:
        if self.recorded_cost is not None:
            return f"{format_usd(self.recorded_cost.total)} as recorded (the replay itself spent nothing)"
        return format_usd(self.cost.total)


def run_costs(session_path: Path, *, model: str = "", duration_seconds: float | None = None) -> CostSummary | None:
    """What this run spent, from its session file: for a cancelled or killed run whose in-memory totals
    are gone. Entries copied from the thread's earlier session (a continued session starts with them) are
    older than this file's header and are not counted. None when the file cannot be read."""
    from bot.agent.session import Session, SessionError, iso_to_ms

    try:
        session = Session.load(session_path, reconstruct=False)
    except SessionError:
        return None
    started = iso_to_ms(session.header.timestamp) or 0
    usage, cost, turns, compactions = Usage(), Cost.zero(), 0, 0
    for entry in session.entries:
        if (iso_to_ms(entry.get("timestamp")) or 0) < started:
            continue
        message = entry.get("message") if entry.get("type") == "message" else None
        if isinstance(message, dict) and message.get("role") == "assistant":
            turns += 1
            usage, cost = _add_entry(usage, cost, message.get("usage"), message.get("cost"))
        elif entry.get("type") == "compaction":
            compactions += 1
            usage, cost = _add_entry(usage, cost, entry.get("usage"), entry.get("cost"))
    return CostSummary(usage=usage, cost=cost, turns=turns, compactions=compactions,
                       duration_seconds=duration_seconds, model=model or (session.header.model or ""))


def final_answer(session_path: Path) -> str:
    """The agent's final answer in a session (its last assistant message, when that one called no tool),
    for a report the post step writes after the main step died: "" when the agent had not answered."""
    from bot.agent.session import Session, SessionError

    try:
        session = Session.load(session_path, reconstruct=False)
    except SessionError:
        return ""
    for entry in reversed(session.entries):
        message = entry.get("message") if entry.get("type") == "message" else None
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        blocks: list[Any] = content if isinstance(content, list) else []
        if any(isinstance(b, dict) and b.get("type") == "tool_call" for b in blocks):
            return ""
        return "\n".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    return ""


def recorded_cost(session_path: Path) -> Cost | None:
    """What the recorded run (a replay's source) cost, counted as `run_costs` counts: a continued session
    starts with entries copied from the thread's earlier runs, which those runs spent and reported. Total
    None when any priced call had an unknown price; None when the file cannot be read."""
    costs = run_costs(session_path)
    return costs.cost if costs is not None else None


def _add_entry(usage: Usage, cost: Cost, raw_usage: object, raw_cost: object) -> tuple[Usage, Cost]:
    if isinstance(raw_usage, dict):
        usage = usage + Usage(**{k: v for k, v in raw_usage.items()
                                 if k in ("input", "output", "cache_read", "cache_write") and type(v) is int})
    parts = raw_cost if isinstance(raw_cost, dict) else {}
    # A call without a price makes the sum unknown (Cost.__add__ keeps None as None).
    cost = cost + Cost(**{key: _number(parts.get(key))
                          for key in ("input", "output", "cache_read", "cache_write", "total")})
    return usage, cost


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


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
    # Where the full patch was uploaded (a Markdown link), or "" when it was not: the truncation note
    # only promises an attachment that exists.
    patch_link: str = ""
    marker: str = ""  # the hidden continuation marker (bot.action.continuation.marker)


# -- clipping ---------------------------------------------------------------------------------------------

def clip(text: str, limit: int, what: str = "text") -> str:
    """`text` cut to at most `limit` characters, at a line boundary when one is near, saying so."""
    if len(text) <= limit:
        return text
    note = f"\n\n_({what} truncated: {len(text) - limit:,} more characters)_"
    cut = text[: max(0, limit - len(note))]
    newline = cut.rfind("\n")
    if newline > len(cut) // 2:
        cut = cut[:newline]
    return cut.rstrip() + note


def fit_comment(body: str, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """The last line of defence: any body longer than GitHub accepts is cut, with a note. An open code
    fence or <details> is closed so the rest of the thread still renders."""
    if len(body) <= limit:
        return body
    cut = body[: limit - 200]
    tail = ""
    fences = re.findall(r"^(`{3,})", cut, flags=re.MULTILINE)
    if len(fences) % 2:
        tail += f"\n{fences[-1]}"
    if cut.count("<details>") > cut.count("</details>"):
        tail += "\n</details>"
    return f"{cut}{tail}\n\n{_CLIPPED}\n"


def inline_code(text: str, limit: int = _TASK_LIMIT) -> str:
    """One line of untrusted text as inline code that cannot break out of its backticks."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    fence = "`" * (_longest_backtick_run(flat) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


# -- the agent's answer, published under the bot's name ------------------------------------------------------

_ZWSP = "\u200b"  # invisible: the text reads (and mostly copies) as the model wrote it
_URL = re.compile(r"<?https?://[^\s<>)\]]+>?")
# Where GitHub makes no mention, and a zero-width space would corrupt what a reader copies: fenced code
# blocks, code spans (never across a blank line; an escaped backtick opens none), URLs. Whatever this
# misses is only defused where it need not be, never the other way round.
_NO_MENTIONS = re.compile(
    r"^[ \t]{0,3}(?:(?P<ticks>`{3,})[^`\n]*\n.*?(?:^[ \t]{0,3}(?P=ticks)`*[ \t]*$|\Z)"
    r"|(?P<tildes>~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=tildes)~*[ \t]*$|\Z))"
    r"|(?<![`\\])(?P<run>`+)(?!`)(?:(?!\n[ \t]*\n).)+?(?<!`)(?P=run)(?!`)"
    rf"|{_URL.pattern}", re.MULTILINE | re.DOTALL)
# An @ (also as an HTML entity: GitHub decodes them before it looks for mentions) that does not follow a
# letter or digit (an e-mail address), before a character a user or organisation name starts with. An
# underscore does not protect it: `_@someone_` is emphasis around a live mention.
_MENTION = re.compile(r"(?<![A-Za-z0-9])(?:@|&#0*64;|&#[xX]0*40;|&commat;)(?=[A-Za-z0-9])")
# GitHub's closing keywords before an issue reference (`#4`, `GH-4`, `owner/repo#4` or an issue URL),
# also with a colon, emphasis or brackets between them (`**Fixes:** #4`, `fixes [#4](...)`).
_CLOSING = re.compile(r"(?<![A-Za-z0-9])(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)"
                      r"(?=[\s*_~:\[(]*(?:#\d|GH-\d|[\w.-]+/[\w.-]+#\d|https?://\S+/(?:issues|pull)/\d))",
                      re.IGNORECASE)


def defang(text: str) -> str:
    """The agent's answer as the bot may publish it (report comment, pull request body, commit message):
    it must not notify anyone under the bot's name (`@someone`, `@org/team`), nor close an issue when the
    pull request is merged or the commit reaches the default branch (`fixes other/repo#4`). A model
    steered by a hostile issue writes both. A zero-width space after the `@` and after the keyword breaks
    them and nothing else. Mentions in code and URLs are left alone (GitHub makes none there); closing
    keywords are broken in code too, since a commit message has no code. Applying it twice changes
    nothing more."""
    text = _break_closing_keywords(text)
    return _apply_outside(_NO_MENTIONS, text, lambda part: _MENTION.sub(lambda m: m[0] + _ZWSP, part))


def _break_closing_keywords(text: str) -> str:
    urls = [match.span() for match in _URL.finditer(text)]

    def broken(match: re.Match[str]) -> str:
        inside_url = any(start <= match.start() < end for start, end in urls)
        return match[0] if inside_url else match[0] + _ZWSP

    return _CLOSING.sub(broken, text)


def _apply_outside(spans: re.Pattern[str], text: str, change: Callable[[str], str]) -> str:
    """`change` applied to the text between the matches of `spans`; the matches are kept as they are."""
    parts, last = [], 0
    for match in spans.finditer(text):
        parts += [change(text[last:match.start()]), match[0]]
        last = match.end()
    parts.append(change(text[last:]))
    return "".join(parts)


# -- bodies -----------------------------------------------------------------------------------------------

def tracking_body(task: Task, run_url: str) -> str:
    what = inline_code(task.instructions) if task.instructions else ("a fix" if task.is_fix else "this")
    run = f" ([follow the run]({run_url}))" if run_url else ""
    return fit_comment(f"{BOT_MARKER}\n👀 opi is working on {what}{run}…\n\n"
                       "This comment will be updated with the result.")


def unauthorised_body(login: str, permission: str) -> str:
    return fit_comment(
        f"{BOT_MARKER}\nSorry @{login}, only people with write, maintain or admin permission on this "
        f"repository can ask opi to work on it (your permission: {inline_code(permission, 40)}). "
        "A maintainer can run the command instead.")


def internal_failure(what: str, run_url: str = "") -> str:
    """The public sentence for a failure inside opi or the GitHub API (a token without a permission, a
    500, a bug): what did not happen, and where the details are. Log the exception itself with
    `log_error`; never put it in a comment, where it may show API internals to anyone reading the thread."""
    where = f"the [job log]({run_url})" if run_url else "the job log"
    return f"opi could not {what} because of an internal error; the details are in {where}."


_WORKFLOW_REFUSAL = re.compile(
    r"refusing to allow an? (?P<who>GitHub App|OAuth App|Personal Access Token|[A-Za-z ]{1,40}?) to create or "
    r"update workflow [`'\"]?(?P<path>\.github/workflows/[A-Za-z0-9._/-]{1,200})[`'\"]? without "
    r"[`'\"]?(?P<perm>workflows?)[`'\"]? (?:permission|scope)", re.IGNORECASE)


def workflow_push_refusal(git_output: str, *, app: bool = False) -> str | None:
    """When GitHub refused a push because it changes a workflow file, the explanation for the comment;
    None for any other failure. The token the action pushes with (normally `GITHUB_TOKEN`) cannot change
    files under `.github/workflows/` without the `workflows` permission, which `GITHUB_TOKEN` never has.
    With `app` (the run pushed with the installation token it minted, which replaces `github_token`) the
    way out is the app's own permission and the input that asks for it."""
    match = _WORKFLOW_REFUSAL.search(git_output)
    if match is None:
        return None
    refused = (f"GitHub refused the push because the commit changes the workflow file `{match['path']}`. "
               "Tokens may only create or update files under `.github/workflows/` with the `workflows` "
               "permission")
    alternatives = "or apply the patch below by hand, or ask opi again without changing workflow files."
    if app:
        return (f"{refused}, and the GitHub App's token this run pushed with gets it only when asked for. "
                "Give the app the **Workflows: Read and write** permission (and accept it on the "
                f'installation), set the input `allow_workflow_edits: "true"` and ask again; {alternatives}')
    return (f"{refused} (a GitHub App token with `workflows: write`, or a personal access token with the "
            "`workflow` scope); the default `GITHUB_TOKEN` can never get it. Either pass such a token as the "
            f"`github_token` input, {alternatives}")


def cost_table(costs: CostSummary) -> str:
    usage = costs.usage
    rows = [
        ("Model", inline_code(costs.model, 100) if costs.model else "unknown"),
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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _fence(text: str) -> str:
    return "`" * (max(2, _longest_backtick_run(text)) + 1)


def _quote_answer(answer: str) -> str:
    answer = answer.strip()
    if len(answer) > _ANSWER_LIMIT:
        answer = answer[:_ANSWER_LIMIT].rstrip() + "\n\n_(answer truncated: the full text is in the session)_"
    return defang(answer) or "_(the agent gave no final answer)_"  # the text as clipped is what GitHub reads


def render_report(report: Report, redact: Redactor, *, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    head = [BOT_MARKER, _HEADLINES[report.status]]
    if report.reason:
        head.append(f"\n{clip(report.reason, _REASON_LIMIT, 'reason')}")
    if report.delivery:
        head.append(f"\n{clip(report.delivery, _REASON_LIMIT, 'delivery')}")
    head.append(f"\n{_quote_answer(report.answer)}")
    tail: list[str] = []
    if report.costs is not None:
        tail.append(f"<details><summary>Cost: {report.costs.usd}, {report.costs.turns} turns</summary>\n\n"
                    f"{cost_table(report.costs)}\n\n</details>")
    footer = [part for part in (
        f"Session: {clip(report.session, _REASON_LIMIT, 'session')}" if report.session else "",
        f"[Run log]({report.run_url})" if report.run_url else "",
    ) if part]
    if footer:
        tail.append(" · ".join(footer))
    if report.marker:
        tail.append(report.marker)
    before = redact("\n".join(head))
    after = redact("\n\n".join(tail))
    if not report.patch:
        return fit_comment(f"{before}\n\n{after}".rstrip() + "\n", limit)
    stat = clip(redact(report.diff_stat), _REASON_LIMIT, "diff stat")
    note = clip(redact(report.patch_note), _REASON_LIMIT, "note")
    budget = limit - len(before) - len(after) - len(stat) - len(note) - len(report.patch_link) - _SLACK
    diff_block = _diff_block(redact(report.patch), stat, note, budget, report.patch_link)
    return fit_comment(f"{before}\n\n{diff_block}\n\n{after}".rstrip() + "\n", limit)


def _diff_block(patch: str, stat: str, note: str, budget: int, patch_link: str) -> str:
    shown, truncated_note = _truncate_lines(patch, max(budget, 0), patch_link)
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


def _truncate_lines(patch: str, budget: int, patch_link: str) -> tuple[str, str]:
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
    where = (f"The full patch is attached to the run: {patch_link}." if patch_link else
             "The full patch could not be attached to the run; the job log says why.")
    note = (f"\n_The diff is too long for a GitHub comment (limit {GITHUB_COMMENT_LIMIT:,} characters): "
            f"{omitted:,} of {len(lines):,} lines are not shown. {where}_\n")
    return "".join(kept), note


def summary_markdown(report: Report, title: str) -> str:
    """For `$GITHUB_STEP_SUMMARY`: the headline and the cost table."""
    parts = [f"### {title}", _HEADLINES[report.status]]
    if report.reason:
        parts.append(clip(report.reason, _REASON_LIMIT, "reason"))
    if report.costs is not None:
        parts.append(cost_table(report.costs))
    if report.session:
        parts.append(f"Session: {clip(report.session, _REASON_LIMIT, 'session')}")
    return "\n\n".join(parts) + "\n"
