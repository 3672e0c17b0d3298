"""The few GitHub REST calls the action makes, through PyGithub (imported lazily: it is slow to import).

Every failure becomes a `GitHubError` that says which call failed, the HTTP status and GitHub's message,
with secrets redacted. Retries are off: a run reports a failed call instead of sleeping through a rate
limit for an hour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from bot.action.events import PullRequest
from bot.action.redact import Redactor

if TYPE_CHECKING:
    from github import Github

T = TypeVar("T")

WRITE_ROLES = frozenset({"admin", "maintain", "write"})


class GitHubError(Exception):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Permission:
    permission: str  # legacy field: admin / write / read / none ("maintain" shows as "write")
    role_name: str  # admin / maintain / write / triage / read / custom role names

    @property
    def can_write(self) -> bool:
        return self.role_name in WRITE_ROLES or self.permission in ("admin", "write")


@dataclass(frozen=True)
class CommentRef:
    id: int
    html_url: str


@dataclass(frozen=True)
class PullFeedback:
    """What `/opi fix` should look at: failing checks on the head commit and the reviewers' comments."""

    failing_checks: tuple[str, ...] = ()
    review_comments: tuple[str, ...] = ()
    reviews: tuple[str, ...] = ()

    def markdown(self, limit: int = 12_000) -> str:
        sections = []
        if self.failing_checks:
            sections.append("Failing checks on the head commit:\n" + "\n".join(self.failing_checks))
        if self.reviews:
            sections.append("Reviews asking for changes:\n" + "\n".join(self.reviews))
        if self.review_comments:
            sections.append("Review comments:\n" + "\n".join(self.review_comments))
        text = "\n\n".join(sections)
        return text if len(text) <= limit else text[:limit] + "\n[... truncated]"


_FEEDBACK_ITEMS = 30
_FEEDBACK_TEXT = 800


def _clip(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= _FEEDBACK_TEXT else text[:_FEEDBACK_TEXT] + " [...]"


@dataclass(frozen=True)
class PullRef:
    number: int
    html_url: str


class GitHubClient:
    def __init__(self, token: str, repo: str, *, api_url: str = "https://api.github.com",
                 redact: Redactor | None = None, timeout: int = 30) -> None:
        from github import Auth, Github

        if not token:
            raise GitHubError("no GitHub token: set the `github_token` input (default: ${{ github.token }})")
        if "/" not in repo:
            raise GitHubError(f"repository must be OWNER/NAME, got {repo!r}")
        self.repo_name = repo
        self.redact = redact or Redactor([token])
        self.redact.add(token)
        self._gh: Github = Github(auth=Auth.Token(token), base_url=api_url, timeout=timeout, retry=None,
                                  lazy=True, seconds_between_requests=None, seconds_between_writes=None,
                                  user_agent="opi-bot")
        self._repo = self._gh.get_repo(repo)

    # -- calls -------------------------------------------------------------------------------------
    def permission(self, login: str) -> Permission:
        """The user's permission; someone who is not a collaborator has none (GitHub answers 404)."""
        from urllib.parse import quote

        def call() -> Permission:
            _, data = self._gh.requester.requestJsonAndCheck(
                "GET", f"/repos/{self.repo_name}/collaborators/{quote(login, safe='')}/permission")
            return Permission(permission=str(data.get("permission") or "none"),
                              role_name=str(data.get("role_name") or data.get("permission") or "none"))

        try:
            return self._call(f"read the permission of {login}", call)
        except GitHubError as exc:
            if exc.status == 404:
                return Permission(permission="none", role_name="none")
            raise

    def add_reaction(self, comment_kind: Literal["issue", "review"], comment_id: int, content: str = "eyes",
                     *, pull_number: int | None = None) -> None:
        def call() -> None:
            if comment_kind == "review":
                # Review comments live under /pulls/comments/{id}; the pull number is not part of the URL.
                self._repo.get_pull(pull_number or 0).get_review_comment(comment_id).create_reaction(content)
            else:
                self._repo.get_issue(0).get_comment(comment_id).create_reaction(content)

        self._call(f"react {content} to comment {comment_id}", call)

    def create_comment(self, number: int, body: str) -> CommentRef:
        def call() -> CommentRef:
            comment = self._repo.get_issue(number).create_comment(self.redact(body))
            return CommentRef(id=comment.id, html_url=comment.html_url)

        return self._call(f"comment on #{number}", call)

    def edit_comment(self, comment_id: int, body: str) -> None:
        self._call(f"edit comment {comment_id}",
                   lambda: self._repo.get_issue(0).get_comment(comment_id).edit(self.redact(body)))

    def get_pull(self, number: int) -> PullRequest:
        def call() -> PullRequest:
            pull = self._repo.get_pull(number)
            pull.update()  # lazy objects are fetched on demand; this is the one GET
            return PullRequest.model_validate(pull.raw_data)

        return self._call(f"read pull request #{number}", call)

    def pull_feedback(self, number: int, head_sha: str) -> PullFeedback:
        """Failing check runs of `head_sha`, change-requesting reviews and review comments of the PR."""

        def checks() -> tuple[str, ...]:
            failing = []
            for run in self._repo.get_commit(head_sha).get_check_runs():
                if run.conclusion in ("failure", "timed_out", "cancelled", "action_required"):
                    output = run.output
                    detail = _clip(" - ".join(part for part in (getattr(output, "title", None),
                                                                 getattr(output, "summary", None)) if part))
                    failing.append(f"- {run.name}: {run.conclusion}" + (f": {detail}" if detail else ""))
                if len(failing) >= _FEEDBACK_ITEMS:
                    break
            return tuple(failing)

        def comments() -> tuple[tuple[str, ...], tuple[str, ...]]:
            pull = self._repo.get_pull(number)
            found = []
            for comment in pull.get_review_comments():
                line = comment.line or comment.original_line
                where = f"{comment.path}:{line}" if line else comment.path
                found.append(f"- {where} (@{comment.user.login}): {_clip(comment.body)}")
                if len(found) >= _FEEDBACK_ITEMS:
                    break
            reviews = [f"- @{review.user.login}: {_clip(review.body)}" for review in pull.get_reviews()
                       if review.state == "CHANGES_REQUESTED" and (review.body or "").strip()]
            return tuple(found), tuple(reviews[:_FEEDBACK_ITEMS])

        failing = self._call(f"read the checks of {head_sha[:7]}", checks)
        review_comments, reviews = self._call(f"read the reviews of #{number}", comments)
        return PullFeedback(failing_checks=failing, review_comments=review_comments, reviews=reviews)

    def find_open_pull(self, head_branch: str, base: str) -> PullRef | None:
        owner = self.repo_name.split("/")[0]

        def call() -> PullRef | None:
            for pull in self._repo.get_pulls(state="open", head=f"{owner}:{head_branch}", base=base):
                return PullRef(number=pull.number, html_url=pull.html_url)
            return None

        return self._call(f"look for an open pull request from {head_branch}", call)

    def create_pull(self, *, title: str, body: str, head: str, base: str) -> PullRef:
        def call() -> PullRef:
            pull = self._repo.create_pull(title=self.redact(title), body=self.redact(body), head=head, base=base)
            return PullRef(number=pull.number, html_url=pull.html_url)

        return self._call(f"open a pull request from {head} into {base}", call)

    # -- errors ------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from github import GithubException, RateLimitExceededException

        try:
            return fn()
        except RateLimitExceededException as exc:
            reset = (exc.headers or {}).get("x-ratelimit-reset") or (exc.headers or {}).get("retry-after")
            when = f" (resets at epoch {reset})" if reset else ""
            raise GitHubError(f"could not {what}: GitHub rate limit exceeded{when}", status=exc.status) from None
        except GithubException as exc:
            raise GitHubError(self.redact(f"could not {what}: HTTP {exc.status}: {_message(exc.data)}"),
                              status=exc.status) from None
        except OSError as exc:  # connection refused, DNS, timeouts (requests wraps these as OSError)
            raise GitHubError(self.redact(f"could not {what}: {exc}")) from None


def _message(data: Any) -> str:
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e)
                                for e in errors)
            message = f"{message} ({details})" if message else details
        return message or str(data)
    return str(data)
