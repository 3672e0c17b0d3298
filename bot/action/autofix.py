"""Automatic fix on a red build (opt-in): a `workflow_run` that completed with `failure` on a
same-repository pull request branch becomes a `/opi fix` task for that pull request.

Two stages of guards, both pure functions:
1. `route_workflow_run(payload, settings)`, over the webhook payload alone: the run completed and
   failed; its head repository is this repository (fork PRs never: GitHub also leaves `pull_requests`
   empty for them); its branch is not the default branch nor one of the bot's own `opi/` branches; it
   belongs to an open pull request whose head and base are both this repository. The result is the same
   `Task` as `events.route` gives for `/opi fix` on a PR (kind `pr_comment`, `is_fix=True`), or
   `Ignored` with the reason.
2. `decide(...)`, over the pull request data the broker reads afterwards: still not a fork nor the
   default branch; not the bot's own PR (its branch or its author); the failing commit is still the PR
   head (else a newer run decides); autofix is on for this PR (its label) or for the repository (an
   input); GitHub listed all the PR's commits (it lists at most 250) and the head among them, else
   nothing below can be trusted; fewer than `max_attempts` commits of the bot are on the PR; and the
   bot's head commit did not fail the same way (the failure signature it was made to fix, kept in its
   `Opi-Failure:` trailer, equals the current one).

Never fixing the bot's own pull requests is what bounds `mode: pr`: there a fix is a new PR from
`opi/pr-<n>` with one bot commit, so the attempt count of each new PR would start again at one.

The failure signature is a short hash of the failing checks and the failed test names
(`failure_signature`); the broker adds `signature_trailer(...)` to the message of every fix commit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.action.ci_logs import CiContext
from bot.action.events import EventError, Ignored, PullRequest, Repository, Task, User
from bot.action.github_api import PULL_COMMITS_LIMIT, GitHubClient, PullCommit

DEFAULT_LABEL = "opi-autofix"
BOT_BRANCH_PREFIX = "opi/"  # the bot's own branches (main.plan_branch: opi/pr-<n>, opi/issue-<n>, opi/maintenance)
DEFAULT_MAX_ATTEMPTS = 3
TRAILER = "Opi-Failure"
_TRAILER_LINE = re.compile(rf"^{TRAILER}: ([0-9a-f]{{16}})\s*$", re.MULTILINE)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RunRepo(_Payload):
    id: int
    name: str = ""


class RunBranch(_Payload):
    ref: str
    sha: str
    repo: RunRepo


class RunPull(_Payload):
    number: int
    head: RunBranch
    base: RunBranch


class HeadRepository(_Payload):
    id: int
    full_name: str


class WorkflowRun(_Payload):
    id: int
    name: str | None = None
    event: str = ""
    status: str | None = None
    conclusion: str | None = None
    head_branch: str | None = None
    head_sha: str
    html_url: str = ""
    path: str = ""
    run_attempt: int = 1
    display_title: str = ""
    pull_requests: list[RunPull] = []
    head_repository: HeadRepository | None = None


class FullRepository(Repository):
    id: int


class WorkflowRunEvent(_Payload):
    action: str
    workflow_run: WorkflowRun
    repository: FullRepository
    sender: User


@dataclass(frozen=True)
class AutofixSettings:
    enabled_for_repository: bool = False  # the `autofix` input: every same-repository PR
    label: str = DEFAULT_LABEL  # or only PRs carrying this label
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @staticmethod
    def from_inputs(enabled: str, label: str, max_attempts: str) -> AutofixSettings:
        """From the action's inputs `autofix`, `autofix_label`, `autofix_max_attempts`; bad values are
        named (ValueError)."""
        flag = enabled.strip().lower()
        if flag not in ("", "true", "false"):
            raise ValueError(f"input `autofix` must be true or false, got {enabled!r}")
        try:
            attempts = int(max_attempts.strip() or DEFAULT_MAX_ATTEMPTS)
        except ValueError:
            raise ValueError(f"input `autofix_max_attempts` must be a number, got {max_attempts!r}") from None
        if not 1 <= attempts <= 20:
            raise ValueError(f"input `autofix_max_attempts` must be between 1 and 20, got {attempts}")
        return AutofixSettings(enabled_for_repository=flag == "true", label=label.strip() or DEFAULT_LABEL,
                               max_attempts=attempts)


@dataclass(frozen=True)
class BotIdentity:
    """How the bot's commits are recognised: the app's bot login, or the configured commit email."""

    login: str = ""
    email: str = ""

    def made(self, commit: PullCommit) -> bool:
        if self.login and commit.author_login.lower() == self.login.lower():
            return True
        email = self.email.lower()
        return bool(email) and email in (commit.author_email.lower(), commit.committer_email.lower())

    def opened(self, author: str) -> bool:
        """Whether a pull request opened by `author` (a login) is the bot's."""
        return bool(self.login) and author.lower() == self.login.lower()


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str
    attempts: int = 0  # bot commits already on the PR


# -- stage 1: the payload ---------------------------------------------------------------------------
def parse_workflow_run(payload: Mapping[str, Any]) -> WorkflowRunEvent:
    try:
        return WorkflowRunEvent.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise EventError(f"the workflow_run payload is missing fields the action needs: {problems}") from exc


def route_workflow_run(payload: Mapping[str, Any]) -> Task | Ignored:
    """A `/opi fix` task for the pull request whose CI failed, or Ignored saying which guard stopped it.
    Raises EventError for a payload that is not a workflow_run."""
    event = parse_workflow_run(payload)
    run, repo = event.workflow_run, event.repository
    if event.action != "completed":
        return Ignored(f"workflow run was {event.action}, only completed runs are handled")
    if run.conclusion != "failure":
        return Ignored(f"workflow run concluded {run.conclusion!r}, only failures are fixed")
    if run.head_repository is None or run.head_repository.full_name != repo.full_name \
            or run.head_repository.id != repo.id:
        head = run.head_repository.full_name if run.head_repository else "a deleted repository"
        return Ignored(f"the run's code comes from {head}, not {repo.full_name}: fork PRs are never auto-fixed")
    if not run.head_branch:
        return Ignored("the run has no head branch")
    if run.head_branch == repo.default_branch:
        return Ignored(f"the run is on the default branch {repo.default_branch!r}, which is never auto-fixed")
    if run.head_branch.startswith(BOT_BRANCH_PREFIX):
        return Ignored(_own_branch(run.head_branch))
    pulls = sorted((pull for pull in run.pull_requests
                    if pull.head.ref == run.head_branch and pull.head.repo.id == repo.id
                    and pull.base.repo.id == repo.id), key=lambda pull: pull.number)
    if not pulls:
        return Ignored(f"branch {run.head_branch!r} has no open pull request in {repo.full_name}")
    number = pulls[0].number
    workflow = _one_line(run.name or run.path or "CI")
    instructions = (f"The CI workflow {workflow!r} failed on {run.head_sha[:7]} (run {run.html_url}). "
                    "Make the failing checks pass.")
    return Task(kind="pr_comment", event_name="workflow_run", repo=repo.full_name, instructions=instructions,
                is_fix=True, number=number, title=_one_line(run.display_title), html_url=_pull_url(repo, number),
                requester=event.sender, default_branch=repo.default_branch)


# -- stage 2: the pull request ----------------------------------------------------------------------
def decide(*, head_sha: str, pull: PullRequest, author: str, labels: Iterable[str],
           commits: Sequence[PullCommit], settings: AutofixSettings, bot: BotIdentity, default_branch: str,
           current_signature: str | None) -> Decision:
    """Whether to run the fix, from the failing run's head sha, the PR as GitHub returns it now and the
    login that opened it, its labels and commits, and the signature of the current failure (None when
    unknown)."""
    refusal = (_pull_refusal(head_sha, pull, author, bot, default_branch)
               or _switch_refusal(labels, settings) or _listing_refusal(head_sha, commits))
    if refusal:
        return Decision(False, refusal)
    attempts = sum(1 for commit in commits if bot.made(commit))
    if attempts >= settings.max_attempts:
        return Decision(False, f"the bot already made {attempts} commits on this pull request (the limit is "
                               f"{settings.max_attempts}); a person should look, or ask with /opi fix", attempts)
    # Found by sha (`_listing_refusal` made sure it is listed): GitHub orders a PR's commits by date, so
    # the head need not be the last one.
    head = next(commit for commit in commits if commit.sha == head_sha)
    if bot.made(head) and current_signature is not None and trailer_signature(head.message) == current_signature:
        return Decision(False, "the bot's last commit failed the same way as the failure it was made to fix; "
                               "stopping instead of trying the same again", attempts)
    return Decision(True, f"autofix attempt {attempts + 1} of {settings.max_attempts}", attempts)


def _pull_refusal(head_sha: str, pull: PullRequest, author: str, bot: BotIdentity,
                  default_branch: str) -> str | None:
    if pull.is_fork:
        return "the pull request comes from a fork: never auto-fixed"
    if pull.head.ref == default_branch:
        return f"the pull request's head is the default branch {default_branch!r}"
    if pull.head.ref.startswith(BOT_BRANCH_PREFIX):
        return _own_branch(pull.head.ref)
    if bot.opened(author):
        return f"the pull request was opened by the bot ({author}): the bot's own pull requests are never auto-fixed"
    if pull.head.sha != head_sha:
        return f"the pull request moved on to {pull.head.sha[:7]}; the run for that commit decides"
    return None


def _switch_refusal(labels: Iterable[str], settings: AutofixSettings) -> str | None:
    if settings.enabled_for_repository or settings.label in set(labels):
        return None
    return (f"autofix is off for this pull request (add the {settings.label!r} label, or set the `autofix` "
            "input for the repository)")


def _listing_refusal(head_sha: str, commits: Sequence[PullCommit]) -> str | None:
    """The attempt limit and the same-failure stop read the PR's commits; a list GitHub may have cut short
    would hide the bot's latest commits, so both would let every red build through: refuse instead."""
    if len(commits) >= PULL_COMMITS_LIMIT:
        return (f"the pull request has {PULL_COMMITS_LIMIT} commits or more and GitHub lists only the first "
                f"{PULL_COMMITS_LIMIT}, so the bot's earlier attempts cannot be counted; a person should look, "
                "or ask with /opi fix")
    if all(commit.sha != head_sha for commit in commits):
        return (f"the failing commit {head_sha[:7]} is not among the pull request's commits GitHub listed, so "
                "the bot's earlier attempts cannot be checked; the next run decides")
    return None


def _own_branch(branch: str) -> str:
    return (f"branch {branch!r} is one of opi's own ({BOT_BRANCH_PREFIX}…): the bot's own pull requests are "
            "never auto-fixed, since in `mode: pr` each fix would open another")


def check_autofix(client: GitHubClient, payload: Mapping[str, Any], task: Task, *, settings: AutofixSettings,
                  bot: BotIdentity, current_signature: str | None) -> Decision:
    """`decide` with the pull request, its labels and commits read from GitHub (three GETs)."""
    if task.number is None:
        return Decision(False, "no pull request")
    head_sha = parse_workflow_run(payload).workflow_run.head_sha
    pull = client.get_pull(task.number)
    return decide(head_sha=head_sha, pull=pull, author=pull.user.login if pull.user else "",
                  labels=client.pull_labels(task.number), commits=client.pull_commits(task.number),
                  settings=settings, bot=bot, default_branch=task.default_branch,
                  current_signature=current_signature)


# -- failure signatures -------------------------------------------------------------------------------
def failure_signature(failures: Iterable[tuple[str, Iterable[str]]]) -> str:
    """16 hex digits identifying a failure: which checks failed and which tests failed in each
    (order does not matter)."""
    canonical = sorted(f"{name}\x1f{chr(0x1e).join(sorted(set(tests)))}" for name, tests in failures)
    return hashlib.sha256("\x1d".join(canonical).encode()).hexdigest()[:16]


def signature_of(context: CiContext) -> str | None:
    """The signature of the failure `collect_ci_context` found; None when nothing failed."""
    if not context.failing_names:
        return None
    tests = {job.name: job.failed_tests for job in context.jobs}
    return failure_signature((name, tests.get(name, ())) for name in context.failing_names)


def signature_trailer(signature: str) -> str:
    """The git trailer the broker appends to a fix commit's message (after a blank line)."""
    if not re.fullmatch(r"[0-9a-f]{16}", signature):
        raise ValueError(f"not a failure signature: {signature!r}")
    return f"{TRAILER}: {signature}"


def trailer_signature(message: str) -> str | None:
    """The signature in a commit message's last `Opi-Failure:` trailer, or None."""
    found = _TRAILER_LINE.findall(message)
    return found[-1] if found else None


def _one_line(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _pull_url(repo: Repository, number: int) -> str:
    base = repo.html_url or f"https://github.com/{repo.full_name}"
    return f"{base}/pull/{number}"
