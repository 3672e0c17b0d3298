"""`opi action`: the GitHub Action's entrypoint (and `--post`, its post-entrypoint; `--dry-run` offline).

One run: route the event, check the commenter may write, react 👀 and post a tracking comment, check
out the right branch, run the agent, then deliver (commit and push, open a PR, or post the patch) and
edit the tracking comment into the final report. Every path out, including crashes, ends with a final
comment and the outputs written; what the main step cannot finish, the post step does.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bot.action import comment as render
from bot.action.events import EventError, Ignored, Task, load_event, route
from bot.action.github_api import GitHubError
from bot.action.gitops import Changes, GitError, Identity, PushRejected, Repo, coauthor_trailer
from bot.action.inputs import (
    ActionInputs,
    InputError,
    RunnerContext,
    host_relative_path,
    read_context,
    read_inputs,
)
from bot.action.redact import Redactor
from bot.action.secret_env import reexec_without_secrets, restore_secrets
from bot.action.workflow import RunState, append_summary, publish_state_path, state_path, write_output

if TYPE_CHECKING:
    from bot.action.continuation import PreviousSession, Published
    from bot.action.github_api import GitHubClient
    from bot.agent.loop import RunResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

OUTPUT_NAMES = ("conclusion", "session_path", "session_relpath", "artifact_url", "cost_usd", "turns", "branch",
                "commit_sha", "pr_url")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opi action", description="Run opi as a GitHub Action step.")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GitHub calls and no push: run the agent in the current checkout and print "
                             "the comment that would be posted")
    parser.add_argument("--event", metavar="PATH", help="the event payload (default: $GITHUB_EVENT_PATH)")
    parser.add_argument("--event-name", metavar="NAME",
                        help="the event name (default: $GITHUB_EVENT_NAME, else guessed from the payload)")
    parser.add_argument("--model", help="override the `model` input, e.g. replay:SESSION.jsonl")
    parser.add_argument("--post", action="store_true", help="the post step: finalise an unfinished run")
    return parser


def run_action(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not restore_secrets() and os.environ.get("GITHUB_ACTIONS") == "true" and not args.post:
        reexec_without_secrets(argv)  # in CI only: it replaces this process, and a test's with it
    redact = Redactor.from_env()
    if args.post:
        from bot.action.post import run_post

        return run_post(redact)
    try:
        inputs = read_inputs()
        context = read_context(cwd=Path.cwd() if args.dry_run else None)
        run = ActionRun(inputs, context, redact, dry_run=args.dry_run, model_override=args.model)
        return run.execute(event_path=args.event, event_name=args.event_name)
    except (InputError, EventError) as exc:
        log_error(redact(str(exc)))
        return EXIT_USAGE
    except GitHubError as exc:
        # Before the tracking comment exists (permission check, first comment) there is nowhere to report.
        log_error(redact(str(exc)))
        return EXIT_FAILED


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def log_error(message: str) -> None:
    # `::error::` makes the runner show it as an annotation; newlines must be escaped in that syntax.
    flat = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    print(f"::error::{flat}" if os.environ.get("GITHUB_ACTIONS") else f"opi action: {message}",
          file=sys.stderr, flush=True)


def guess_event_name(payload: dict[str, Any]) -> str:
    if "comment" in payload and "issue" in payload:
        return "issue_comment"
    if "comment" in payload and "pull_request" in payload:
        return "pull_request_review_comment"
    if "workflow" in payload and "inputs" in payload:
        return "workflow_dispatch"
    if "schedule" in payload:
        return "schedule"
    raise EventError("cannot tell which event this payload belongs to: pass --event-name")


@dataclass
class BranchPlan:
    """Where the work happens and how it is delivered."""

    checkout: str  # "pr_head" | "pull_ref" | "new_branch" | "current"
    branch: str  # the local branch the agent works on
    push_to: str | None = None  # remote branch to push, None: patch only
    open_pr_into: str | None = None  # base of the PR to open or update
    start_from: str | None = None  # remote branch a new branch starts from
    patch_only_reason: str = ""


@dataclass
class Delivery:
    status: render.Status
    reason: str = ""
    delivery: str = ""
    patch_note: str = ""
    commit_sha: str = ""
    branch: str = ""
    pr_url: str = ""


@dataclass
class AgentRun:
    result: RunResult | None
    session_path: Path | None
    model: str
    error: str = ""


@dataclass
class ActionRun:
    inputs: ActionInputs
    context: RunnerContext
    redact: Redactor
    dry_run: bool = False
    model_override: str | None = None
    state: RunState = field(default_factory=RunState)
    started: float = field(default_factory=time.monotonic)
    _state_file: Path | None = None
    _github: GitHubClient | None = None
    _delivered: Delivery | None = None
    _agent_run: AgentRun | None = None
    _previous: PreviousSession | None = None  # the thread's earlier session this run continues
    _published: Published | None = None  # the session artifact upload and its comment section
    _patch_path: Path | None = None  # the run's patch under RUNNER_TEMP, also put in the artifact

    # -- entry -------------------------------------------------------------------------------------
    def execute(self, *, event_path: str | None = None, event_name: str | None = None) -> int:
        self._register_secrets()
        task = self._load_task(event_path, event_name)
        if isinstance(task, Ignored):
            log(f"opi: nothing to do: {task.reason}")
            self._output("conclusion", "skipped")
            return EXIT_OK
        log(f"opi: {task.kind} on {task.repo or self.context.repository}"
            f"{f' #{task.number}' if task.number else ''}: {self.redact(task.instructions)[:200]!r}")
        if self.dry_run:
            return self._execute_dry_run(task)
        github = self._client(task)
        if not self._authorised(github, task):
            self._output("conclusion", "unauthorized")
            return EXIT_OK
        self._start_progress(github, task)
        return self._finish(task, self._work_safely(task))

    def _register_secrets(self) -> None:
        # Inputs holding secrets are already masked in the log by the runner; they only need registering.
        for value in (self.inputs.github_token, *self.inputs.provider_keys.values()):
            if value:
                self.redact.add(value)
        # Providers read their keys from the environment; tool subprocesses never see these names.
        for name, value in self.inputs.provider_keys.items():
            os.environ[name] = value

    def _load_task(self, event_path: str | None, event_name: str | None) -> Task | Ignored:
        path = Path(event_path) if event_path else self.context.event_path
        if path is None:
            raise EventError("no event: GITHUB_EVENT_PATH is not set (use --event PATH with --dry-run)")
        payload = load_event(path)
        name = event_name or self.context.event_name or guess_event_name(payload)
        task = route(name, payload, trigger=self.inputs.trigger, prompt=self.inputs.prompt)
        if isinstance(task, Task) and not task.repo and self.context.repository:
            task = dataclasses.replace(task, repo=self.context.repository)
        return task

    def _client(self, task: Task) -> GitHubClient:
        from bot.action.github_api import GitHubClient

        repo = task.repo or self.context.repository
        self._github = GitHubClient(self.inputs.github_token, repo, api_url=self.context.api_url,
                                    redact=self.redact)
        return self._github

    # -- authorisation and progress ------------------------------------------------------------------
    def _authorised(self, github: GitHubClient, task: Task) -> bool:
        if task.kind == "scheduled" or task.requester is None:
            return True  # only people with write access can dispatch; schedules run as the repo
        permission = github.permission(task.requester.login)
        if permission.can_write:
            return True
        log(f"opi: @{task.requester.login} has {permission.role_name} permission; replying and stopping")
        if task.number is not None:
            github.create_comment(task.number, render.unauthorised_body(task.requester.login,
                                                                        permission.role_name))
        return False

    def _start_progress(self, github: GitHubClient, task: Task) -> None:
        self._state_file = state_path(self.context.temp_dir, self.context.run_id)
        self.state = RunState(phase="started", repo=task.repo, number=task.number, run_url=self.context.run_url)
        self._save_state()
        publish_state_path(self.context.state_file, self._state_file)
        if task.comment_id is not None and task.comment_kind is not None:
            try:
                github.add_reaction(task.comment_kind, task.comment_id, "eyes", pull_number=task.number)
            except GitHubError as exc:  # a missing reaction is cosmetic; the tracking comment matters
                log(f"opi: warning: {exc}")
        if task.number is not None:
            tracking = github.create_comment(task.number, render.tracking_body(task, self.context.run_url))
            self.state.tracking_comment_id = tracking.id
            self._save_state()

    def _save_state(self) -> None:
        if self._state_file is not None:
            self.state.save(self._state_file)

    # -- the work ----------------------------------------------------------------------------------------
    def _work_safely(self, task: Task) -> render.Report:
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            return self._work(task)
        except KeyboardInterrupt:
            return render.Report(status="cancelled", reason="The run was cancelled. Nothing was pushed.")
        except Exception as exc:  # every failure still ends in a final comment
            return render.Report(status="error", reason=f"{type(exc).__name__}: {exc}")
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _work(self, task: Task) -> render.Report:
        repo = Repo(self.context.workspace, redact=self.redact, token=self.inputs.github_token,
                    server_url=self.context.server_url, identity=self._identity())
        repo.ensure_repo()
        plan = self._plan(task)
        base_sha = self._checkout(repo, plan, task)
        agent_run = self._run_agent(task, plan, base_sha)
        changes = repo.changes_since(base_sha)
        self._keep_patch(changes, task)
        try:
            delivered = self._deliver(repo, task, plan, base_sha, agent_run, changes)
        except (GitError, GitHubError) as exc:  # the answer, diff and costs must still reach the comment
            delivered = Delivery(status="error", reason=f"The agent finished, but delivering its work failed: "
                                                        f"{exc}. Nothing is lost: the patch is below.",
                                 patch_note="Not delivered; apply it with `git apply`.")
        return self._report(task, agent_run, changes, delivered)

    def _plan(self, task: Task) -> BranchPlan:
        mode = self.inputs.mode
        if self.dry_run:
            return BranchPlan(checkout="current", branch="", patch_only_reason="Dry run: nothing is pushed.")
        if task.on_pull_request:
            pull = task.pull or self._require_github().get_pull(task.number or 0)
            if pull.is_fork:
                return BranchPlan(checkout="pull_ref", branch=f"opi/pr-{pull.number}",
                                  patch_only_reason="This pull request comes from a fork, and opi never pushes "
                                                    "to forks with the repository token.")
            if mode == "comment":
                return BranchPlan(checkout="pr_head", branch=pull.head.ref,
                                  patch_only_reason="`mode: comment`: the patch is posted, not pushed.")
            if mode == "pr":
                return BranchPlan(checkout="new_branch", branch=f"opi/pr-{pull.number}", start_from=pull.head.ref,
                                  push_to=f"opi/pr-{pull.number}", open_pr_into=pull.head.ref)
            return BranchPlan(checkout="pr_head", branch=pull.head.ref, push_to=pull.head.ref)
        base = self.inputs.base_branch or task.default_branch
        branch = f"opi/issue-{task.number}" if task.kind == "issue_comment" else "opi/maintenance"
        if mode == "comment":
            return BranchPlan(checkout="new_branch", branch=branch, start_from=base,
                              patch_only_reason="`mode: comment`: the patch is posted, not pushed.")
        return BranchPlan(checkout="new_branch", branch=branch, start_from=base, push_to=branch,
                          open_pr_into=base)

    def _checkout(self, repo: Repo, plan: BranchPlan, task: Task) -> str:
        if plan.checkout == "current":
            return repo.head_sha()
        if plan.checkout == "pull_ref":
            return repo.checkout_pull_head(task.number or 0, plan.branch)
        if plan.checkout == "pr_head":
            return repo.checkout_remote_branch(plan.branch)
        # A branch left by an earlier run continues from where it is, so the push fast-forwards.
        if plan.push_to and repo.remote_branch_sha(plan.branch) is not None:
            return repo.checkout_remote_branch(plan.branch)
        try:
            return repo.create_branch(plan.branch, start=plan.start_from)
        except GitError as exc:
            raise GitError(f"{exc} (the base branch comes from the `base_branch` input, else the "
                           "repository's default branch)") from None

    def _require_github(self) -> GitHubClient:
        if self._github is None:
            raise RuntimeError("GitHub client used in a dry run")
        return self._github

    def _run_agent(self, task: Task, plan: BranchPlan, base_sha: str) -> AgentRun:
        from bot.action.runner import run_agent

        self.state.phase = "running"
        self._save_state()

        def on_session(path: Path) -> None:
            self.state.session_path = str(path)
            self._save_state()

        self._previous = self._restore_previous_session(task)
        outcome = run_agent(task, self.inputs, self.context, self.redact, plan_branch=plan.branch,
                            model_override=self.model_override, on_session=on_session, log=log,
                            head_sha=base_sha, previous_session=self._previous.path,
                            feedback=self._pull_feedback(task, base_sha))
        if outcome.session_path is not None:
            self.redact.file_jsonl(outcome.session_path)
        return AgentRun(outcome.result, outcome.session_path, outcome.model, outcome.error)

    def _pull_feedback(self, task: Task, head_sha: str) -> str:
        """For `/opi fix` on a PR: its failing checks and review feedback, as prompt context."""
        if self.dry_run or not (task.is_fix and task.on_pull_request) or task.number is None:
            return ""
        try:
            return self._require_github().pull_feedback(task.number, head_sha).markdown()
        except GitHubError as exc:  # context is a help, not a precondition
            log(f"opi: warning: {exc}")
            return ""

    def _restore_previous_session(self, task: Task) -> PreviousSession:
        """A follow-up `/opi` on the same issue or PR continues the newest earlier session of the thread."""
        from bot.action.continuation import PreviousSession, restore_previous_session

        if self.dry_run or task.number is None or task.kind == "scheduled":
            return PreviousSession()
        run_id = int(self.context.run_id) if self.context.run_id.isdigit() else None
        return restore_previous_session(task.repo or self.context.repository, self.inputs.github_token,
                                        task.number, self.context.temp_dir / "opi-previous-session",
                                        api_url=self.context.api_url, server_url=self.context.server_url,
                                        run_id=run_id, log=log)

    def _keep_patch(self, changes: Changes, task: Task) -> None:
        """The patch also goes to RUNNER_TEMP, so a failed push or comment never loses the work."""
        if changes.empty:
            return
        name = f"opi-{task.number or 'maintenance'}-{self.context.run_id or 'local'}.patch"
        path = self.context.temp_dir / name
        try:
            # Redacted like the comment's diff: the file also travels in the session artifact.
            path.write_text(self.redact(changes.patch), encoding="utf-8")
            self._patch_path = path
            log(f"opi: the patch is saved at {path}")
        except OSError as exc:
            log(f"opi: warning: could not save the patch to {path}: {exc}")

    # -- delivery ----------------------------------------------------------------------------------------
    def _deliver(self, repo: Repo, task: Task, plan: BranchPlan, base_sha: str, agent_run: AgentRun,
                 changes: Changes) -> Delivery:
        from bot.agent.loop import Outcome

        result = agent_run.result
        finished = result is not None and result.outcome is Outcome.COMPLETED
        not_done = _not_done_status(result, agent_run.error)
        if changes.empty:
            if finished:
                return Delivery(status="no_changes", reason="The agent made no changes to the repository.")
            return Delivery(status=not_done, reason=self._stop_reason(result, agent_run.error))
        if not finished:
            return Delivery(status=not_done, reason=self._stop_reason(result, agent_run.error),
                            patch_note="These partial changes were **not pushed**, because the agent did not "
                                       "finish. Apply them with `git apply` if they are useful.")
        if plan.push_to is None:
            return Delivery(status="success", patch_note=f"{plan.patch_only_reason} Apply it with `git apply`.")
        message = self._commit_message(task, result.final_text if result else "")
        sha = repo.commit_all(base_sha, message, self._identity())
        commit_url = f"{self.context.server_url}/{task.repo}/commit/{sha}"
        try:
            repo.push(plan.push_to)
        except PushRejected as exc:
            log(f"opi: {exc}")
            return Delivery(status="rejected", commit_sha=sha, branch=plan.push_to,
                            reason=f"`{plan.push_to}` moved on while opi was working (someone pushed), so "
                                   f"the commit `{sha[:7]}` could not be pushed. Nothing is lost: the patch is "
                                   "below; pull the branch and apply it with `git apply`, or ask again.",
                            patch_note="Not pushed: the branch moved on.")
        delivery = f"Pushed [`{sha[:7]}`]({commit_url}) to `{plan.push_to}`."
        pr_url = ""
        if plan.open_pr_into:
            try:
                pr_url = self._open_or_find_pr(task, plan, result.final_text if result else "")
            except GitHubError as exc:
                return Delivery(status="error", delivery=delivery, commit_sha=sha, branch=plan.push_to,
                                reason=f"The commit was pushed, but opening the pull request failed: {exc}. "
                                       f"Open it from `{plan.push_to}` by hand.")
            delivery += f" Pull request: {pr_url}"
        return Delivery(status="success", delivery=delivery, commit_sha=sha, branch=plan.push_to, pr_url=pr_url)

    def _identity(self) -> Identity:
        return Identity(self.inputs.bot_name, self.inputs.bot_email)

    def _open_or_find_pr(self, task: Task, plan: BranchPlan, answer: str) -> str:
        github = self._require_github()
        assert plan.push_to is not None and plan.open_pr_into is not None
        existing = github.find_open_pull(plan.push_to, plan.open_pr_into)
        if existing is not None:
            return existing.html_url
        if task.kind == "issue_comment":
            title, link = f"opi: {task.title}", f"Resolves #{task.number}."
        elif task.on_pull_request:
            title, link = f"opi: changes for #{task.number}", f"Follow-up to #{task.number}."
        else:
            title, link = f"opi: {task.instructions.splitlines()[0][:60]}", f"From the {task.event_name} run."
        body = f"{link}\n\n{answer.strip()}\n\n{self.context.run_url}".strip()
        return github.create_pull(title=title, body=body, head=plan.push_to, base=plan.open_pr_into).html_url

    def _commit_message(self, task: Task, answer: str) -> str:
        subject = (task.instructions.splitlines()[0] if task.instructions else
                   ("fix" if task.is_fix else task.title) or "changes")[:60]
        where = f" for #{task.number}" if task.number else ""
        lines = [f"opi: {subject}{where}", ""]
        first_paragraph = answer.strip().split("\n\n")[0][:1000]
        if first_paragraph:
            lines += [first_paragraph, ""]
        if task.comment_url:
            lines += [f"Requested in {task.comment_url}", ""]
        if task.requester is not None and not task.requester.is_bot:
            lines.append(coauthor_trailer(task.requester.login, task.requester.id))
        return "\n".join(lines).strip() + "\n"

    @staticmethod
    def _stop_reason(result: RunResult | None, error: str) -> str:
        if result is None:
            return f"The agent could not start: {error}"
        return f"Stopped ({result.outcome.value}): {result.error or error or 'no details'}"

    # -- reporting -----------------------------------------------------------------------------------------
    def _report(self, task: Task, agent_run: AgentRun, changes: Changes, delivered: Delivery) -> render.Report:
        result = agent_run.result
        costs = None
        if result is not None:
            costs = render.CostSummary(usage=result.usage, cost=result.cost, turns=result.turns,
                                       compactions=result.compactions, duration_seconds=result.duration_seconds,
                                       model=agent_run.model)
        report = render.Report(
            status=delivered.status, reason=delivered.reason, answer=result.final_text if result else "",
            diff_stat=changes.stat, patch=changes.patch, patch_note=delivered.patch_note,
            delivery=delivered.delivery, costs=costs, run_url=self.context.run_url,
            session=self._session_note(task, agent_run.session_path),
        )
        self._delivered = delivered
        self._agent_run = agent_run
        return report

    def _session_note(self, task: Task, path: Path | None) -> str:
        from bot.action.continuation import publish_session
        from bot.agent.session import read_header

        if path is None:
            return "not saved"
        header = read_header(path) or {}
        # A dry run stays local: no upload even where a runner's variables are set.
        env = {} if self.dry_run else os.environ
        extras = [self._patch_path] if self._patch_path is not None and self._patch_path.is_file() else []
        self._published = publish_session(path, str(header.get("id") or path.stem), env,
                                          number=task.number, log=log, extras=extras)
        previous = self._previous.note if self._previous is not None and self._previous.note else ""
        return f"{previous}\n\n{self._published.markdown}".strip()

    def _finish(self, task: Task, report: render.Report) -> int:
        self._log_conclusion(report)
        body = render.render_report(report, self.redact)
        github = self._require_github()
        posted = True
        should_comment = task.number is not None and task.kind != "scheduled"
        try:
            if self.state.tracking_comment_id is not None:
                github.edit_comment(self.state.tracking_comment_id, body)
            elif should_comment:
                github.create_comment(task.number or 0, body)
        except GitHubError as exc:
            posted = False
            log_error(f"could not post the final comment: {exc}")
            log(body)
        self._write_outputs(report)
        append_summary(self.context.summary_file, render.summary_markdown(report, "opi"), self.redact)
        self.state.phase = "finished" if posted else "running"
        self.state.conclusion = report.status
        self._save_state()
        return EXIT_OK if report.status in ("success", "no_changes") and posted else EXIT_FAILED

    def _log_conclusion(self, report: render.Report) -> None:
        message = f"opi: {report.status}" + (f": {self.redact(report.reason)}" if report.reason else "")
        if report.status == "error":
            log_error(message)
        else:
            log(message)

    def _write_outputs(self, report: render.Report) -> None:
        delivered, agent_run = self._delivered, self._agent_run
        costs = report.costs
        values = {
            "conclusion": report.status,
            "session_path": str(agent_run.session_path) if agent_run and agent_run.session_path else "",
            "session_relpath": host_relative_path(agent_run.session_path)
            if agent_run and agent_run.session_path else "",
            "artifact_url": self._artifact_url(),
            "cost_usd": "" if costs is None or costs.cost.total is None else f"{costs.cost.total:.6f}",
            "turns": str(costs.turns) if costs else "0",
            "branch": delivered.branch if delivered else "",
            "commit_sha": delivered.commit_sha if delivered else "",
            "pr_url": delivered.pr_url if delivered else "",
        }
        for name in OUTPUT_NAMES:
            self._output(name, values[name])

    def _artifact_url(self) -> str:
        upload = self._published.upload if self._published is not None else None
        return (upload.url or "") if upload is not None and upload.ok else ""

    def _output(self, name: str, value: str) -> None:
        write_output(self.context.output_file, name, value, self.redact)

    # -- dry run -------------------------------------------------------------------------------------------
    def _execute_dry_run(self, task: Task) -> int:
        report = self._work_safely(task)
        self._log_conclusion(report)
        body = render.render_report(report, self.redact)
        print(body)
        self._write_outputs(report)
        return EXIT_OK if report.status in ("success", "no_changes") else EXIT_FAILED


def _not_done_status(result: RunResult | None, error: str) -> render.Status:
    from bot.agent.loop import Outcome

    if result is None or result.outcome is Outcome.ERROR:
        return "error"
    if result.outcome in (Outcome.ABORTED,):
        return "cancelled"
    return "limit" if result.outcome in (Outcome.MAX_TURNS, Outcome.MAX_COST, Outcome.TIMEOUT) else "error"


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # The runner stops a cancelled job with SIGTERM; the agent treats KeyboardInterrupt as an abort.
    raise KeyboardInterrupt(f"received signal {signum}")


