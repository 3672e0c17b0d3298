"""The few GitHub REST calls the action makes, through PyGithub (imported lazily: it is slow to import).

Every failure becomes a `GitHubError` that says which call failed, the HTTP status and GitHub's message,
with secrets redacted. Reads are not retried. Writes (comments, reactions, pull requests) are retried
with backoff on 5xx answers and on secondary rate limits (403/429 with `retry-after`, or
`x-ratelimit-remaining: 0` with a reset in the next minute), because losing the final report to a
transient error is worse than waiting a few seconds; a primary rate limit that resets later is
reported at once instead of slept through.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from bot.action.events import PullRequest, User
from bot.action.redact import Redactor
from bot.llm.http import parse_retry_after

if TYPE_CHECKING:
    from github import Github

T = TypeVar("T")

WRITE_ROLES = frozenset({"admin", "maintain", "write"})


class GitHubError(Exception):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        self.status = status
        # Seconds GitHub asked us to wait (secondary rate limits); None when it did not say.
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def rate_limited(self) -> bool:
        return self.status in (403, 429) and self.retry_after is not None


@dataclass(frozen=True)
class RetryPolicy:
    """How writes are retried: `attempts` in all, exponential backoff from `base_delay` for 5xx, GitHub's
    own wait for rate limits; a single wait longer than `max_wait` is not slept through."""

    attempts: int = 4
    base_delay: float = 1.0
    max_wait: float = 60.0


NO_RETRY = RetryPolicy(attempts=1)
_SECONDARY_DEFAULT_WAIT = 60.0  # GitHub: "otherwise, wait for at least one minute before retrying"
_SECONDARY_HINTS = ("secondary rate limit", "abuse detection")


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
    """What `/opi fix` should look at: failing checks on the head commit (names only: the CI context shows
    their output, fenced) and the reviewers' comments (fenced when they could break out of their item)."""

    failing_checks: tuple[str, ...] = ()
    review_comments: tuple[str, ...] = ()
    reviews: tuple[str, ...] = ()

    def markdown(self, limit: int = 12_000) -> str:
        """As prompt text of at most about `limit` characters, of whole items only: an item cut in two
        could leave its fence open."""
        text, left_out = "", 0
        for title, items in (("Failing checks on the head commit:", self.failing_checks),
                             ("Reviews asking for changes:", self.reviews), ("Review comments:", self.review_comments)):
            block = ""
            for item in items:
                addition = ("\n" if block else f"{title}\n") + item
                if len(text) + len(block) + len(addition) + 2 > limit:
                    left_out += 1
                    continue
                block += addition
            text += ("\n\n" if text and block else "") + block
        return text + (f"\n[... {left_out} more left out]" if left_out else "")


_FEEDBACK_ITEMS = 30
_FEEDBACK_TEXT = 800


def _clip(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= _FEEDBACK_TEXT else text[:_FEEDBACK_TEXT] + " [...]"


def _flat(text: str, limit: int = 120) -> str:
    """A name or path, safe on one markdown line: no breaks, controls or backticks."""
    flat = re.sub(r"[\x00-\x1f\x7f]", "", " ".join(text.split())).replace("`", "'")
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _feedback_item(lead: str, body: str | None) -> str:
    """`- lead: body`, the body clipped; on its own line in a fence longer than any backtick run inside
    when it has several lines or a backtick (a clipped ```suggestion block would stay open)."""
    text = _clip(body)
    if "\n" not in text and "`" not in text:
        return f"- {lead}: {text}"
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"- {lead}:\n{fence}text\n{text}\n{fence}"


@dataclass(frozen=True)
class PullRef:
    number: int
    html_url: str


@dataclass(frozen=True)
class CheckRun:
    """One check run of a commit, with what `ci_logs` needs to find its log or show its output."""

    id: int
    name: str
    status: str
    conclusion: str | None
    app_slug: str  # "github-actions" for GitHub Actions jobs
    details_url: str
    html_url: str
    output_title: str
    output_summary: str
    output_text: str

    @property
    def failed(self) -> bool:
        return self.conclusion in FAILING_CONCLUSIONS


FAILING_CONCLUSIONS = frozenset({"failure", "timed_out", "cancelled", "action_required", "startup_failure"})
_CHECK_RUN_PAGES = 5  # at most 500 check runs of one commit
_LOG_MAX_BYTES = 16 * 1024 * 1024  # a job log bigger than this keeps its tail, where failures are


PULL_COMMITS_LIMIT = 250  # GitHub lists at most this many commits of a pull request, the oldest


class PullDetails(PullRequest):
    """A pull request as `get_pull` reads it, with who opened it (the autofix guards need that)."""

    user: User | None = None  # None: a deleted account


@dataclass(frozen=True)
class PullCommit:
    sha: str
    author_login: str  # "" when GitHub cannot match the author to an account
    author_email: str
    committer_email: str
    message: str


class GitHubClient:
    def __init__(self, token: str, repo: str, *, api_url: str = "https://api.github.com",
                 redact: Redactor | None = None, timeout: int = 30, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from github import Auth, Github

        if not token:
            raise GitHubError("no GitHub token: set the `github_token` input (default: ${{ github.token }})")
        if "/" not in repo:
            raise GitHubError(f"repository must be OWNER/NAME, got {repo!r}")
        self.repo_name = repo
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._sleep = sleep
        self.redact = redact or Redactor([token])
        self.redact.add(token)
        self._gh: Github = Github(auth=Auth.Token(token), base_url=api_url, timeout=timeout, retry=None,
                                  lazy=True, seconds_between_requests=None, seconds_between_writes=None,
                                  user_agent="opi-bot")
        self._repo = self._gh.get_repo(repo)

    # -- calls -------------------------------------------------------------------------------------
    def permission(self, login: str) -> Permission:
        """The user's permission; someone who is not a collaborator has none (GitHub answers 404)."""

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

        self._write(f"react {content} to comment {comment_id}", call)

    def create_comment(self, number: int, body: str) -> CommentRef:
        def call() -> CommentRef:
            comment = self._repo.get_issue(number).create_comment(self.redact(body))
            return CommentRef(id=comment.id, html_url=comment.html_url)

        return self._write(f"comment on #{number}", call)

    def edit_comment(self, comment_id: int, body: str, *, retry: bool = True) -> None:
        """Edit an issue comment. `retry=False` is for progress edits: the caller backs off by itself
        (GitHubError.retry_after) instead of blocking here."""
        self._write(f"edit comment {comment_id}",
                    lambda: self._repo.get_issue(0).get_comment(comment_id).edit(self.redact(body)),
                    policy=self.retry if retry else NO_RETRY)

    def reply_to_review_comment(self, pull_number: int, comment_id: int, body: str) -> CommentRef:
        """Answer in the review thread of a line comment (the reply joins the thread of `comment_id`)."""

        def call() -> CommentRef:
            _, data = self._gh.requester.requestJsonAndCheck(
                "POST", f"/repos/{self.repo_name}/pulls/{pull_number}/comments/{comment_id}/replies",
                input={"body": self.redact(body)})
            return CommentRef(id=int(data["id"]), html_url=str(data.get("html_url") or ""))

        return self._write(f"reply to review comment {comment_id} on #{pull_number}", call)

    def edit_review_comment(self, comment_id: int, body: str, *, retry: bool = True) -> None:
        """Edit a pull request review comment (a reply posted by `reply_to_review_comment`)."""

        def call() -> None:
            self._gh.requester.requestJsonAndCheck(
                "PATCH", f"/repos/{self.repo_name}/pulls/comments/{comment_id}", input={"body": self.redact(body)})

        self._write(f"edit review comment {comment_id}", call, policy=self.retry if retry else NO_RETRY)

    def get_pull(self, number: int) -> PullDetails:
        def call() -> PullDetails:
            pull = self._repo.get_pull(number)
            pull.update()  # lazy objects are fetched on demand; this is the one GET
            return PullDetails.model_validate(pull.raw_data)

        return self._call(f"read pull request #{number}", call)

    def pull_feedback(self, number: int, head_sha: str) -> PullFeedback:
        """Failing check runs of `head_sha` (name and conclusion), change-requesting reviews and review
        comments of the PR."""

        def checks() -> tuple[str, ...]:
            failing = []
            for run in self._repo.get_commit(head_sha).get_check_runs():
                if run.conclusion in FAILING_CONCLUSIONS:
                    failing.append(f"- `{_flat(run.name)}`: {_flat(run.conclusion, 40)}")
                if len(failing) >= _FEEDBACK_ITEMS:
                    break
            return tuple(failing)

        def comments() -> tuple[tuple[str, ...], tuple[str, ...]]:
            pull = self._repo.get_pull(number)
            found = []
            for comment in pull.get_review_comments():
                line = comment.line or comment.original_line
                where = f"{_flat(comment.path or '', 200)}:{line}" if line else _flat(comment.path or "", 200)
                found.append(_feedback_item(f"{where} (@{_login(comment.user)})", comment.body))
                if len(found) >= _FEEDBACK_ITEMS:
                    break
            reviews = [_feedback_item(f"@{_login(review.user)}", review.body) for review in pull.get_reviews()
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

        return self._write(f"open a pull request from {head} into {base}", call)

    def check_runs(self, ref: str) -> list[CheckRun]:
        """Every check run of `ref` (latest attempt of each), at most 500."""

        def call() -> list[CheckRun]:
            runs: list[CheckRun] = []
            for page in range(1, _CHECK_RUN_PAGES + 1):
                _, data = self._gh.requester.requestJsonAndCheck(
                    "GET", f"/repos/{self.repo_name}/commits/{quote(ref, safe='')}/check-runs",
                    parameters={"filter": "latest", "per_page": 100, "page": page})
                batch = data.get("check_runs") or []
                runs.extend(_check_run(item) for item in batch)
                if len(batch) < 100 or len(runs) >= int(data.get("total_count") or 0):
                    break
            return runs

        return self._call(f"read the checks of {ref[:7]}", call)

    def job_log(self, job_id: int, *, max_bytes: int = _LOG_MAX_BYTES) -> str:
        """The plain-text log of a GitHub Actions job. GitHub answers 302 to a signed URL on another host;
        that URL is fetched without our Authorization header (it carries its own signature, and the token
        must never travel to a host we did not choose). Beyond `max_bytes` only the tail is kept."""
        what = f"download the log of job {job_id}"

        def locate() -> tuple[str, str]:
            """("redirect", URL), or ("text", the log) from a server that answers with the log itself."""
            from github import GithubException

            status, headers, body = self._gh.requester.requestJson(
                "GET", f"/repos/{self.repo_name}/actions/jobs/{job_id}/logs")
            location = {k.lower(): v for k, v in headers.items()}.get("location")
            if status in (301, 302, 303, 307, 308) and location:
                return "redirect", str(location)
            if status == 200:
                return "text", body[-max_bytes:]
            raise GithubException(status, _json_or_text(body), headers)

        kind, location = self._call(what, locate)
        if kind == "text":
            return location
        try:
            return _download_text(location, max_bytes=max_bytes, timeout=float(self.timeout))
        except _DownloadError as exc:
            raise GitHubError(self.redact(f"could not {what}: {exc}"), status=exc.status) from None

    def pull_commits(self, number: int) -> list[PullCommit]:
        """The commits of a pull request, in GitHub's order (by date, oldest first). GitHub lists at most
        `PULL_COMMITS_LIMIT`: a list that long may have been cut short, the newest commits missing."""

        def call() -> list[PullCommit]:
            commits: list[PullCommit] = []
            for page in range(1, PULL_COMMITS_LIMIT // 100 + 2):  # pages of 100 up to GitHub's cap
                _, data = self._gh.requester.requestJsonAndCheck(
                    "GET", f"/repos/{self.repo_name}/pulls/{number}/commits",
                    parameters={"per_page": 100, "page": page})
                commits.extend(_pull_commit(item) for item in data or [])
                if len(data or []) < 100:
                    break
            return commits

        return self._call(f"list the commits of #{number}", call)

    def pull_labels(self, number: int) -> tuple[str, ...]:
        def call() -> tuple[str, ...]:
            _, data = self._gh.requester.requestJsonAndCheck(
                "GET", f"/repos/{self.repo_name}/issues/{number}/labels", parameters={"per_page": 100})
            return tuple(str(label.get("name") or "") for label in data or [])

        return self._call(f"read the labels of #{number}", call)

    # -- errors ------------------------------------------------------------------------------------
    def _write(self, what: str, fn: Callable[[], T], *, policy: RetryPolicy | None = None) -> T:
        return call_with_retries(what, fn, redact=self.redact, policy=policy or self.retry, sleep=self._sleep)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retries(what, fn, redact=self.redact, policy=NO_RETRY, sleep=self._sleep)


def call_with_retries(what: str, fn: Callable[[], T], *, redact: Redactor, policy: RetryPolicy = NO_RETRY,
                      sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> T:
    """Run one PyGithub call; turn its failure into a GitHubError naming `what`; retry per `policy`."""
    attempt = 1
    while True:
        try:
            return _translate(what, fn, redact, clock)
        except GitHubError as exc:
            wait = _retry_wait(exc, attempt, policy)
            if wait is None:
                raise
            attempt += 1
            sleep(wait)


def _retry_wait(exc: GitHubError, attempt: int, policy: RetryPolicy) -> float | None:
    if attempt >= policy.attempts or exc.status is None:
        return None
    if exc.status >= 500:
        return min(policy.base_delay * 2.0 ** (attempt - 1), policy.max_wait)
    if exc.status in (403, 429) and exc.retry_after is not None and exc.retry_after <= policy.max_wait:
        return exc.retry_after
    return None


def _translate(what: str, fn: Callable[[], T], redact: Redactor, clock: Callable[[], float]) -> T:
    from github import GithubException

    try:
        return fn()
    except GithubException as exc:
        headers = {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
        wait = _rate_limit_wait(exc.status, headers, _message(exc.data), clock())
        if wait is not None and exc.status in (403, 429):
            reset = headers.get("x-ratelimit-reset")
            when = f" (resets at epoch {reset})" if reset else f" (retry after {wait:.0f}s)"
            raise GitHubError(f"could not {what}: GitHub rate limit exceeded{when}", status=exc.status,
                              retry_after=wait) from None
        raise GitHubError(redact(f"could not {what}: HTTP {exc.status}: {_message(exc.data)}"),
                          status=exc.status) from None
    except OSError as exc:  # connection refused, DNS, timeouts (requests wraps these as OSError)
        raise GitHubError(redact(f"could not {what}: {exc}")) from None


def _rate_limit_wait(status: int, headers: Mapping[str, str], message: str, now: float) -> float | None:
    """Seconds until GitHub lets us try again, or None when the answer is not a rate limit. Follows
    GitHub's guidance: `retry-after` first; else `x-ratelimit-remaining: 0` waits for
    `x-ratelimit-reset`; else a secondary limit (429, or a 403 that says so) waits a minute."""
    if status not in (403, 429):
        return None
    after = parse_retry_after(headers)
    if after is not None:
        return after
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(headers.get("x-ratelimit-reset", "")) - now)
        except ValueError:
            return _SECONDARY_DEFAULT_WAIT
    lowered = message.lower()
    if status == 429 or any(hint in lowered for hint in _SECONDARY_HINTS) or "rate limit" in lowered:
        return _SECONDARY_DEFAULT_WAIT
    return None


def _login(user: Any) -> str:
    """A comment's author (None: a deleted account, which GitHub shows as ghost)."""
    return _flat(str(getattr(user, "login", None) or "ghost"), 60)


def _check_run(item: Mapping[str, Any]) -> CheckRun:
    output = item.get("output") or {}
    app = item.get("app") or {}
    return CheckRun(
        id=int(item["id"]), name=str(item.get("name") or ""), status=str(item.get("status") or ""),
        conclusion=item.get("conclusion"), app_slug=str(app.get("slug") or ""),
        details_url=str(item.get("details_url") or ""), html_url=str(item.get("html_url") or ""),
        output_title=str(output.get("title") or ""), output_summary=str(output.get("summary") or ""),
        output_text=str(output.get("text") or ""),
    )


def _pull_commit(item: Mapping[str, Any]) -> PullCommit:
    commit = item.get("commit") or {}
    return PullCommit(
        sha=str(item.get("sha") or ""), author_login=str((item.get("author") or {}).get("login") or ""),
        author_email=str((commit.get("author") or {}).get("email") or ""),
        committer_email=str((commit.get("committer") or {}).get("email") or ""),
        message=str(commit.get("message") or ""),
    )


def _json_or_text(body: str) -> Any:
    import json

    try:
        return json.loads(body) if body else {}
    except ValueError:
        return {"message": body[:200]}


class _DownloadError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _download_text(url: str, *, max_bytes: int, timeout: float) -> str:
    """GET `url` with no credentials and no further redirects; keep at most the last `max_bytes`."""
    import httpx2

    if not url.startswith(("https://", "http://")):
        raise _DownloadError(f"GitHub redirected to an unsupported URL scheme: {url.split(':', 1)[0]!r}")
    try:
        with httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise _DownloadError(f"HTTP {response.status_code} from the log storage", response.status_code)
            kept = bytearray()
            for chunk in response.iter_bytes():
                kept += chunk
                if len(kept) > 2 * max_bytes:
                    del kept[:-max_bytes]
            data = bytes(kept[-max_bytes:])
    except httpx2.HTTPError as exc:
        raise _DownloadError(f"{type(exc).__name__}: {exc}") from None
    return data.decode("utf-8", errors="replace")


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
