"""GitHub event payloads and routing: which events start a run, and what the run is asked to do.

The models name only the fields the action uses and ignore the rest, so a payload from a newer GitHub
still parses. `route()` turns (event name, payload) into either a `Task` or an `Ignored` with the reason
logged; it never talks to GitHub (the PR head of an `issue_comment` is looked up later).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

# Every comment the bot writes carries this, so a run never reacts to the bot's own words.
BOT_MARKER = "<!-- opi-bot -->"

SUPPORTED_EVENTS = ("issue_comment", "pull_request_review_comment", "schedule", "workflow_dispatch")


class EventError(Exception):
    """The event file is missing, unreadable or not a payload of the named event."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(_Payload):
    login: str
    id: int
    type: str = "User"

    @property
    def is_bot(self) -> bool:
        return self.type == "Bot" or self.login.endswith("[bot]")

    @property
    def noreply_email(self) -> str:
        return f"{self.id}+{self.login}@users.noreply.github.com"


class Repository(_Payload):
    full_name: str
    default_branch: str = "main"
    html_url: str = ""
    fork: bool = False


class IssuePullRequestLink(_Payload):
    url: str | None = None
    html_url: str | None = None


class Issue(_Payload):
    number: int
    title: str
    body: str | None = None
    html_url: str = ""
    user: User | None = None
    # Present exactly when the issue is a pull request.
    pull_request: IssuePullRequestLink | None = None


class IssueComment(_Payload):
    id: int
    body: str
    user: User
    html_url: str = ""


class ReviewComment(_Payload):
    id: int
    body: str
    user: User
    path: str
    diff_hunk: str
    line: int | None = None
    original_line: int | None = None
    start_line: int | None = None
    side: str | None = None
    commit_id: str | None = None
    html_url: str = ""


class BranchRepo(_Payload):
    full_name: str


class Branch(_Payload):
    ref: str
    sha: str
    # null when the head repository of a fork PR was deleted.
    repo: BranchRepo | None = None


class PullRequest(_Payload):
    number: int
    title: str
    body: str | None = None
    html_url: str = ""
    head: Branch
    base: Branch

    @property
    def is_fork(self) -> bool:
        head_repo = self.head.repo.full_name if self.head.repo else None
        base_repo = self.base.repo.full_name if self.base.repo else None
        return head_repo != base_repo


class IssueCommentEvent(_Payload):
    action: str
    issue: Issue
    comment: IssueComment
    repository: Repository
    sender: User


class ReviewCommentEvent(_Payload):
    action: str
    comment: ReviewComment
    pull_request: PullRequest
    repository: Repository
    sender: User


class DispatchEvent(_Payload):
    inputs: dict[str, Any] | None = None
    ref: str | None = None
    repository: Repository | None = None
    sender: User | None = None


# -- routing -----------------------------------------------------------------------------------------

TaskKind = Literal["pr_comment", "issue_comment", "review_comment", "scheduled"]


@dataclass(frozen=True)
class ReviewContext:
    path: str
    line: int | None
    start_line: int | None
    side: str | None
    diff_hunk: str


@dataclass(frozen=True)
class Task:
    """One unit of work for the agent, with everything known before any GitHub call."""

    kind: TaskKind
    event_name: str
    repo: str
    instructions: str  # what follows the trigger (may be empty)
    is_fix: bool  # the first word after the trigger is "fix"
    number: int | None = None  # issue or PR number; None for scheduled runs
    title: str = ""
    body: str = ""
    html_url: str = ""
    requester: User | None = None
    comment_id: int | None = None
    comment_url: str = ""
    comment_kind: Literal["issue", "review"] | None = None
    review: ReviewContext | None = None
    pull: PullRequest | None = None  # known from the payload for review comments only
    default_branch: str = "main"

    @property
    def on_pull_request(self) -> bool:
        return self.kind in ("pr_comment", "review_comment")


@dataclass(frozen=True)
class Ignored:
    reason: str


def load_event(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventError(f"cannot read the event file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"the event file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventError(f"the event file {path} holds a JSON {type(data).__name__}, not an object")
    return data


def parse_trigger(body: str, trigger: str) -> str | None:
    """The text after the first line that starts with the trigger, or None when no line does.

    The trigger must be a whole word at the start of a line ("/opi" does not match "/opinion"), so
    quoting or mentioning it mid-sentence never starts a run. Lines after the trigger line are kept:
    they are part of the instructions.
    """
    pattern = re.compile(rf"^[ \t]*{re.escape(trigger)}(?=\s|$)(?P<rest>.*)", re.MULTILINE | re.DOTALL)
    match = pattern.search(body.replace("\r\n", "\n"))
    return None if match is None else match.group("rest").strip()


def route(event_name: str, payload: dict[str, Any], *, trigger: str = "/opi", prompt: str = "") -> Task | Ignored:
    try:
        if event_name == "issue_comment":
            return _route_issue_comment(IssueCommentEvent.model_validate(payload), event_name, trigger)
        if event_name == "pull_request_review_comment":
            return _route_review_comment(ReviewCommentEvent.model_validate(payload), event_name, trigger)
        if event_name in ("schedule", "workflow_dispatch"):
            return _route_scheduled(DispatchEvent.model_validate(payload), event_name, prompt)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise EventError(f"the {event_name} payload is missing fields the action needs: {problems}") from exc
    return Ignored(f"event {event_name!r} is not handled (supported: {', '.join(SUPPORTED_EVENTS)})")


def _comment_filter(action: str, body: str, author: User, sender: User, trigger: str) -> str | Ignored:
    if action != "created":
        return Ignored(f"comment was {action}, only new comments are handled")
    if sender.is_bot or author.is_bot:
        return Ignored(f"comment by bot {sender.login if sender.is_bot else author.login} is ignored")
    if BOT_MARKER in body:
        return Ignored("comment carries the bot's own marker")
    instructions = parse_trigger(body, trigger)
    if instructions is None:
        return Ignored(f"no line of the comment starts with {trigger!r}")
    return instructions


def _split_fix(instructions: str) -> tuple[bool, str]:
    match = re.match(r"fix(?=[\s:]|$):?\s*(?P<rest>.*)", instructions, re.IGNORECASE | re.DOTALL)
    return (True, match.group("rest").strip()) if match else (False, instructions)


def _route_issue_comment(event: IssueCommentEvent, event_name: str, trigger: str) -> Task | Ignored:
    checked = _comment_filter(event.action, event.comment.body, event.comment.user, event.sender, trigger)
    if isinstance(checked, Ignored):
        return checked
    is_fix, instructions = _split_fix(checked)
    issue = event.issue
    return Task(
        kind="pr_comment" if issue.pull_request is not None else "issue_comment",
        event_name=event_name, repo=event.repository.full_name, instructions=instructions, is_fix=is_fix,
        number=issue.number, title=issue.title, body=issue.body or "", html_url=issue.html_url,
        requester=event.comment.user, comment_id=event.comment.id, comment_url=event.comment.html_url,
        comment_kind="issue", default_branch=event.repository.default_branch,
    )


def _route_review_comment(event: ReviewCommentEvent, event_name: str, trigger: str) -> Task | Ignored:
    checked = _comment_filter(event.action, event.comment.body, event.comment.user, event.sender, trigger)
    if isinstance(checked, Ignored):
        return checked
    is_fix, instructions = _split_fix(checked)
    comment, pull = event.comment, event.pull_request
    review = ReviewContext(path=comment.path, line=comment.line or comment.original_line,
                          start_line=comment.start_line, side=comment.side, diff_hunk=comment.diff_hunk)
    return Task(
        kind="review_comment", event_name=event_name, repo=event.repository.full_name,
        instructions=instructions, is_fix=is_fix, number=pull.number, title=pull.title,
        body=pull.body or "", html_url=pull.html_url, requester=comment.user, comment_id=comment.id,
        comment_url=comment.html_url, comment_kind="review", review=review, pull=pull,
        default_branch=event.repository.default_branch,
    )


def _route_scheduled(event: DispatchEvent, event_name: str, prompt: str) -> Task | Ignored:
    # A dispatch may carry its own `prompt` input; the action's `prompt` input is the fallback.
    dispatched = str((event.inputs or {}).get("prompt") or "").strip()
    text = dispatched or prompt.strip()
    if not text:
        return Ignored(f"{event_name} run without a prompt: set the action's `prompt` input")
    repo = event.repository.full_name if event.repository else ""
    return Task(kind="scheduled", event_name=event_name, repo=repo, instructions=text, is_fix=False,
                requester=event.sender, default_branch=event.repository.default_branch if event.repository
                else "main")
