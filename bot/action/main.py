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
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bot.action import comment as render
from bot.action.app_auth import AppAuthError
from bot.action.events import EventError, Ignored, PullRequest, Task, load_event, route
from bot.action.github_api import GitHubError
from bot.action.gitops import (
    Changes,
    GitError,
    Identity,
    PushRejected,
    Repo,
    Snapshot,
    StartPoint,
    WorkflowPushRefused,
    WorkspaceGuard,
    coauthor_trailer,
    give_back,
)
from bot.action.inputs import (
    ActionInputs,
    InputError,
    Mode,
    RunnerContext,
    host_relative_path,
    read_context,
    read_inputs,
)
from bot.action.post import delivery_line, push_sentence
from bot.action.redact import Redactor
from bot.action.secret_env import reexec_without_secrets, restore_secrets
from bot.action.workflow import (
    RunState,
    append_summary,
    publish_state_path,
    state_path,
    write_file_atomically,
    write_output,
)
from bot.llm.messages import Cost, Usage
from bot.tools.base import is_secret_env_name
from bot.tools.proc import harden_current_process

if TYPE_CHECKING:
    from bot.action.ci_logs import CiContext
    from bot.action.continuation import PreviousSession, Published
    from bot.action.github_api import GitHubClient
    from bot.action.progress import ProgressReporter
    from bot.agent.worker import WorkerResult

DOCS_URL = "https://github.com/opi-bot/opi-bot/blob/main/docs"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

OUTPUT_NAMES = ("conclusion", "session_path", "session_relpath", "artifact_url", "cost_usd", "turns", "branch",
                "commit_sha", "pr_url")


def build_parser() -> argparse.ArgumentParser:
    # Flags spelled out in full, as everywhere in opi (`--dry` is an error, not `--dry-run`).
    parser = argparse.ArgumentParser(prog="opi action", description="Run opi as a GitHub Action step.",
                                     allow_abbrev=False)
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
    # Before any secret is read: no process of our uid may read this one's memory or environment.
    harden_current_process()
    if not restore_secrets() and os.environ.get("GITHUB_ACTIONS") == "true" and not args.post:
        reexec_without_secrets(argv)  # in CI only: it replaces this process, and a test's with it
    redact = Redactor.from_env()
    if args.post:
        from bot.action.post import run_post

        return run_post(redact, token=_post_step_app_token(redact))
    context = read_context(cwd=Path.cwd() if args.dry_run else None)
    try:
        inputs = read_inputs()
        run = ActionRun(inputs, context, redact, dry_run=args.dry_run, model_override=args.model)
        return run.execute(event_path=args.event, event_name=args.event_name)
    except (InputError, EventError) as exc:
        log_error(redact(str(exc)))
        return _failed_early(context, redact, EXIT_USAGE)
    except (GitHubError, AppAuthError) as exc:
        # Before the tracking comment exists (bad credentials, the permission check) there is nowhere to
        # report but the log; the outputs and the state still say how it ended.
        log_error(redact(str(exc)))
        return _failed_early(context, redact, EXIT_FAILED)


def _post_step_app_token(redact: Redactor) -> str | None:
    """With app inputs the post step mints its own installation token (the main step's is not kept)."""
    from bot.action.app_auth import mint_installation_token

    try:
        inputs = read_inputs()
    except InputError:
        return None
    if not inputs.uses_app:
        return None
    context = read_context()
    try:
        return mint_installation_token(inputs.app_id, inputs.app_private_key, context.repository,
                                       installation_id=inputs.app_installation_id, api_url=context.api_url,
                                       redact=redact).token
    except AppAuthError as exc:
        log_error(str(exc))
        return None


def _failed_early(context: RunnerContext, redact: Redactor, code: int) -> int:
    write_output(context.output_file, "conclusion", "error", redact)
    path = state_path(context.temp_dir, context.run_id)
    state = RunState.load(path) if path.exists() else None
    state = state or RunState(run_url=context.run_url)
    state.phase, state.conclusion = "finished", "error"
    try:
        state.save(path)
        publish_state_path(context.state_file, path)
    except OSError as exc:
        log(f"opi: warning: could not save the run state: {exc}")
    return code


def log(message: str, redact: Redactor | None = None) -> None:
    print(redact(message) if redact else message, file=sys.stderr, flush=True)


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


class RunProblem(Exception):
    """A problem the maintainer can fix (a missing base branch); its message is written for the thread."""


@dataclass
class BranchPlan:
    """Where the work happens and how it is delivered."""

    checkout: str  # "pr_head" | "pull_ref" | "new_branch" | "current"
    branch: str  # the local branch the agent works on
    push_to: str | None = None  # remote branch to push, None: patch only
    open_pr_into: str | None = None  # base of the PR to open or update
    start_from: str | None = None  # remote branch a new branch starts from
    patch_only_reason: str = ""
    # The tip of `push_to` that the push replaces when the work does not start from it (checked to be an
    # ancestor of where it starts): the broker's shallow copy does not hold it.
    replaces: str = ""


def plan_branch(task: Task, pull: PullRequest | None, *, mode: Mode, base_branch: str = "",
                dry_run: bool = False) -> BranchPlan:
    """Where the work happens and how it is delivered: a pure function of the task, its pull request
    (None unless the task is on one), the `mode` and `base_branch` inputs."""
    if dry_run:
        return BranchPlan(checkout="current", branch="", patch_only_reason="Dry run: nothing is pushed.")
    if task.on_pull_request:
        if pull is None:
            raise ValueError("a task on a pull request needs the pull request")
        return _plan_on_pull(pull, mode)
    base = base_branch or task.ref or task.default_branch
    branch = f"opi/issue-{task.number}" if task.kind == "issue_comment" else "opi/maintenance"
    if mode == "comment":
        return BranchPlan(checkout="new_branch", branch=branch, start_from=base,
                          patch_only_reason="`mode: comment`: the patch is posted, not pushed.")
    return BranchPlan(checkout="new_branch", branch=branch, start_from=base, push_to=branch, open_pr_into=base)


def _plan_on_pull(pull: PullRequest, mode: Mode) -> BranchPlan:
    if pull.is_fork:
        return BranchPlan(checkout="pull_ref", branch=f"opi/pr-{pull.number}",
                          patch_only_reason="This pull request comes from a fork, and opi never pushes to forks "
                                            "with the repository token.")
    if mode == "comment":
        return BranchPlan(checkout="pr_head", branch=pull.head.ref,
                          patch_only_reason="`mode: comment`: the patch is posted, not pushed.")
    if mode == "pr":
        return BranchPlan(checkout="new_branch", branch=f"opi/pr-{pull.number}", start_from=pull.head.ref,
                          push_to=f"opi/pr-{pull.number}", open_pr_into=pull.head.ref)
    return BranchPlan(checkout="pr_head", branch=pull.head.ref, push_to=pull.head.ref)


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
    result: WorkerResult | None  # what the worker reported: untrusted data, already validated
    session_path: Path | None
    model: str
    error: str = ""
    previous_note: str = ""  # which earlier session of the thread this run continued
    # The recording a `replay:PATH` model played back, from the broker's own settings: never a path the
    # worker reported (its `model` is untrusted and names the replayed model, not the file).
    replay_source: Path | None = None


@dataclass(frozen=True)
class Remote:
    """The GitHub side of a run: the client (None in a dry run) and the tracking comment's live progress
    (None without a thread)."""

    github: GitHubClient | None = None
    progress: ProgressReporter | None = None

    def require(self) -> GitHubClient:
        if self.github is None:
            raise RuntimeError("GitHub client used in a dry run")
        return self.github


@dataclass(frozen=True)
class CiInfo:
    """The failing CI of the head commit: prompt context, and the full logs lent to the agent's `ci_log`."""

    context: CiContext
    logs: Path | None = None


@dataclass
class RunOutcome:
    """Everything a run produced, handed from the work to the report, the comment and the outputs."""

    report: render.Report
    delivered: Delivery | None = None
    agent_run: AgentRun | None = None
    published: Published | None = None
    patch_path: Path | None = None  # the run's patch under RUNNER_TEMP, also put in the artifact


@dataclass
class ActionRun:
    """One run of the broker. Its steps hand values to each other (`Remote`, `CiInfo`, `BranchPlan`,
    `AgentRun`, `Delivery`, `RunOutcome`); what it keeps is its configuration, the secrets it registered,
    the run's `state` (the file the post step reads, saved at every fact), what the stop-signal handler
    needs (`cancel`, `_agent_running`) and the finished agent's run for a cancel's report (`_agent_run`)."""

    inputs: ActionInputs
    context: RunnerContext
    redact: Redactor
    dry_run: bool = False
    model_override: str | None = None
    state: RunState = field(default_factory=RunState)
    started: float = field(default_factory=time.monotonic)
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value; never leaves this process
    cancel: threading.Event = field(default_factory=threading.Event)
    _agent_running: bool = False
    _agent_run: AgentRun | None = None

    # -- entry -------------------------------------------------------------------------------------
    def execute(self, *, event_path: str | None = None, event_name: str | None = None) -> int:
        self._register_secrets()
        task, payload = self._load_task(event_path, event_name)
        if isinstance(task, Ignored):
            log(f"opi: nothing to do: {task.reason}")
            self._output("conclusion", "skipped")
            return EXIT_OK
        log(f"opi: {task.kind} on {task.repo or self.context.repository}"
            f"{f' #{task.number}' if task.number else ''}: {self.redact(task.instructions)[:200]!r}")
        if self.dry_run:
            return self._execute_dry_run(task)
        self._authenticate(task)
        github = self._client(task)
        if not self._authorised(github, task):
            self._output("conclusion", "unauthorized")
            return EXIT_OK
        ci = None
        if task.event_name == "workflow_run":
            wanted, ci = self._autofix_wanted(github, task, payload)
            if not wanted:
                self._output("conclusion", "skipped")
                return EXIT_OK
        remote = Remote(github, self._start_progress(github, task))
        return self._finish(task, self._work_safely(task, remote, ci), remote)

    def _authenticate(self, task: Task) -> None:
        """With `app_id`/`app_private_key`: an installation token for this repository only, used for every
        REST call and for git, and the app's bot user as the commit identity. Fails before any work."""
        if not self.inputs.uses_app:
            return
        from bot.action.app_auth import mint_installation_token

        app = mint_installation_token(self.inputs.app_id, self.inputs.app_private_key,
                                      task.repo or self.context.repository,
                                      installation_id=self.inputs.app_installation_id,
                                      allow_workflows=self.inputs.allow_workflow_edits,
                                      api_url=self.context.api_url, redact=self.redact)
        self.secrets["GITHUB_APP_TOKEN"] = app.token
        if os.environ.get("GITHUB_ACTIONS") == "true":
            self.redact.mask(app.token)
        inputs = dataclasses.replace(self.inputs, github_token=app.token)
        if inputs.identity_is_default:  # the defaults mean "the app's own bot user"
            inputs = dataclasses.replace(inputs, bot_name=app.bot_name, bot_email=app.bot_email)
        self.inputs = inputs
        log(f"opi: authenticated as the GitHub App `{app.app_slug}` (installation {app.installation_id}); "
            f"committing as {self.inputs.bot_name}")

    def _autofix_wanted(self, github: GitHubClient, task: Task,
                        payload: dict[str, Any]) -> tuple[bool, CiInfo | None]:
        """A red build's automatic fix runs only within its guards (same-repository PR, not the default
        branch, switched on, attempts left, not the same failure as the bot's last commit)."""
        from bot.action.autofix import (
            AutofixSettings,
            BotIdentity,
            check_autofix,
            parse_workflow_run,
            signature_of,
        )

        try:
            settings = AutofixSettings.from_inputs(self.inputs.autofix, self.inputs.autofix_label,
                                                   self.inputs.autofix_max_attempts)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        ci = self._ci_context_for(github, parse_workflow_run(payload).workflow_run.head_sha)
        if ci is not None and ci.context.failing_checks == 0:
            log("opi: automatic fix skipped: no check of the failing commit fails any more (a re-run passed, "
                "or one is still running)")
            return False, None
        bot = BotIdentity(login=self.inputs.bot_name, email=self.inputs.bot_email)
        decision = check_autofix(github, payload, task, settings=settings, bot=bot,
                                 current_signature=signature_of(ci.context) if ci else None)
        log(f"opi: automatic fix {'runs' if decision.run else 'skipped'}: {decision.reason}")
        if not decision.run and ci is not None and ci.logs is not None:
            shutil.rmtree(ci.logs, ignore_errors=True)
        return decision.run, ci

    def _register_secrets(self) -> None:
        """Every secret this run holds, by name: the inputs' token and keys and the runner's credentials
        (`ACTIONS_*`, anything secret-named). They stay in this process; the agent gets none of them."""
        found = {name: value for name, value in os.environ.items() if is_secret_env_name(name) and value}
        found.update({name: value for name, value in self.inputs.provider_keys.items() if value})
        if self.inputs.github_token:
            found["GITHUB_TOKEN"] = self.inputs.github_token
        self.secrets = found
        for value in found.values():
            self.redact.add(value)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            # The runner masks inputs it knows are secrets, not their encoded forms nor ACTIONS_* values.
            for command in self.redact.mask_commands():
                print(command, flush=True)

    def _load_task(self, event_path: str | None, event_name: str | None) -> tuple[Task | Ignored, dict[str, Any]]:
        path = Path(event_path) if event_path else self.context.event_path
        if path is None:
            raise EventError("no event: GITHUB_EVENT_PATH is not set (use --event PATH with --dry-run)")
        payload = load_event(path)
        name = event_name or self.context.event_name or guess_event_name(payload)
        if name == "workflow_run":
            from bot.action.autofix import route_workflow_run

            task = route_workflow_run(payload)
        else:
            task = route(name, payload, trigger=self.inputs.trigger, prompt=self.inputs.prompt)
        if isinstance(task, Task) and not task.repo and self.context.repository:
            task = dataclasses.replace(task, repo=self.context.repository)
        return task, payload

    def _client(self, task: Task) -> GitHubClient:
        from bot.action.github_api import GitHubClient

        repo = task.repo or self.context.repository
        return GitHubClient(self.inputs.github_token, repo, api_url=self.context.api_url, redact=self.redact)

    # -- authorisation and progress ------------------------------------------------------------------
    def _authorised(self, github: GitHubClient, task: Task) -> bool:
        if task.kind == "scheduled" or task.requester is None or task.event_name == "workflow_run":
            # Only people with write access can dispatch; schedules run as the repository; a red build's
            # fix is guarded by `_autofix_wanted` (its sender is often the bot itself).
            return True
        permission = github.permission(task.requester.login)
        if permission.can_write:
            return True
        log(f"opi: @{task.requester.login} has {permission.role_name} permission; replying and stopping")
        if task.number is not None:
            github.create_comment(task.number, render.unauthorised_body(task.requester.login,
                                                                        permission.role_name))
        return False

    def _start_progress(self, github: GitHubClient, task: Task) -> ProgressReporter | None:
        """The run's state file, 👀 on the comment, and the tracking comment with its live progress."""
        path = state_path(self.context.temp_dir, self.context.run_id)
        self.state = RunState(phase="started", repo=task.repo, number=task.number, run_url=self.context.run_url,
                              started_at=time.time())
        self.state.save(path)  # from now on `state.record` saves it
        publish_state_path(self.context.state_file, path)
        if task.comment_id is not None and task.comment_kind is not None:
            try:
                github.add_reaction(task.comment_kind, task.comment_id, "eyes", pull_number=task.number)
            except GitHubError as exc:  # a missing reaction is cosmetic; the tracking comment matters
                log(f"opi: warning: {exc}")
        if task.number is not None:
            body = render.tracking_body(task, self.context.run_url)
            if task.comment_kind == "review" and task.comment_id is not None:
                # A line comment in a review is answered in its own thread.
                tracking = github.reply_to_review_comment(task.number, task.comment_id, body)
                self.state.extra["tracking_kind"] = "review"
            else:
                tracking = github.create_comment(task.number, body)
            self.state.record(tracking_comment_id=tracking.id)
            progress = self._progress_reporter(github, task)
            progress.start()
            return progress
        return None

    def _edit_tracking(self, github: GitHubClient, body: str, *, retry: bool = True) -> None:
        comment_id = self.state.tracking_comment_id or 0
        if self.state.extra.get("tracking_kind") == "review":
            github.edit_review_comment(comment_id, body, retry=retry)
        else:
            github.edit_comment(comment_id, body, retry=retry)

    def _progress_reporter(self, github: GitHubClient, task: Task) -> ProgressReporter:
        from bot.action.progress import ProgressReporter

        run = f" · [follow the run]({self.context.run_url})" if self.context.run_url else ""
        return ProgressReporter(lambda body: self._edit_tracking(github, body, retry=False),
                                header=render.tracking_body(task, self.context.run_url).split("\n\n")[0],
                                footer=f"_This comment is updated as opi works{run}._", log=log)

    # -- the work ----------------------------------------------------------------------------------------
    def _work_safely(self, task: Task, remote: Remote, ci: CiInfo | None = None) -> RunOutcome:
        handlers = {sig: signal.signal(sig, self._on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._work(task, remote, ci)
        except KeyboardInterrupt:
            return self._cancelled_outcome()
        except RunProblem as exc:  # something a maintainer can fix, said in words meant for the thread
            return RunOutcome(render.Report(status="error", reason=self.redact(str(exc))))
        except Exception as exc:  # every failure still ends in a final comment; the details in the log only
            log_error(f"{type(exc).__name__}: {self.redact(str(exc))}")
            return RunOutcome(render.Report(status="error",
                                            reason=render.internal_failure("finish the run", self.context.run_url)))
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _cancelled_outcome(self) -> RunOutcome:
        """A cancel outside the agent's run abandons the work where it is, which may be after the push (opening
        the pull request, uploading the session): the report and the outputs say what the recorded facts say,
        with the answer and the costs of an agent that had finished."""
        state, agent_run = self.state, self._agent_run
        delivered = Delivery(status="cancelled", reason=f"The run was cancelled. {push_sentence(state)}".rstrip(),
                             delivery=delivery_line(state, self.context), commit_sha=state.pushed_sha,
                             branch=state.pushed_branch, pr_url=state.pr_url)
        result = agent_run.result if agent_run is not None else None
        report = render.Report(status="cancelled", reason=delivered.reason, delivery=delivered.delivery,
                               answer=self.redact(result.final_text) if result else "",
                               costs=self._costs(agent_run) if agent_run is not None else None,
                               session=agent_run.previous_note if agent_run is not None else "",
                               run_url=self.context.run_url)
        return RunOutcome(report, delivered, agent_run)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # While the agent runs, a cancel stops it (it saves its partial answer) and the report follows;
        # at any other moment the work is abandoned where it is.
        self.cancel.set()
        if not self._agent_running:
            raise KeyboardInterrupt(f"received signal {signum}")

    def _work(self, task: Task, remote: Remote, ci: CiInfo | None) -> RunOutcome:
        """Check out, snapshot, run the agent, restore `.git`, read the change, deliver, report."""
        repo = Repo(self.context.workspace, redact=self.redact, token=self.inputs.github_token,
                    server_url=self.context.server_url, identity=self._identity())
        repo.ensure_repo()
        plan = self._plan(task, remote)
        start_name = repo.start_point()
        base_sha = self._checkout(repo, plan, task)
        start = repo.resolve_start(start_name)  # now, before the agent can move a ref
        if ci is None and task.is_fix and task.on_pull_request and remote.github is not None:
            ci = self._ci_context_for(remote.github, base_sha)
        with tempfile.TemporaryDirectory(prefix="opi-broker-") as private:
            guard = WorkspaceGuard(repo.git_dir_path())
            for removed in guard.strip_credentials():
                log(f"opi: removed the checkout's persisted credential ({removed}) from .git/config for the "
                    "agent's run; it is put back afterwards")
            snapshot = Snapshot.take(repo, Path(private) / "snapshot", start=start, redact=self.redact,
                                     token=self.inputs.github_token, server_url=self.context.server_url,
                                     identity=self._identity())
            try:
                agent_run = self._agent_run = self._run_agent(task, plan, base_sha, remote, ci)
            finally:
                git_intact = guard.restore()
                if ci is not None and ci.logs is not None:
                    shutil.rmtree(ci.logs, ignore_errors=True)
                if not git_intact:
                    log_error("the agent replaced the workspace's .git directory; it was left as it is, and "
                              "later steps must not run git in this workspace")
            changes = snapshot.changes()
            patch_path = self._keep_patch(changes, task)
            try:
                delivered = self._deliver(snapshot, task, plan, agent_run, changes, remote, ci, patch_path)
            except (GitError, GitHubError) as exc:  # the answer, diff and costs must still reach the comment
                log_error(f"delivering the work failed: {self.redact(str(exc))}")
                delivered = Delivery(status="error", reason=render.internal_failure(
                    "deliver the agent's work", self.context.run_url) + " Nothing is lost: the patch is below.",
                    patch_note="Not delivered; apply it with `git apply`.")
            if git_intact and not self.dry_run:
                self._return_workspace(snapshot, guard, start)
        self._hand_back_outputs(agent_run.session_path, patch_path)
        return self._report(task, agent_run, changes, delivered, patch_path)

    def _hand_back_outputs(self, session: Path | None, patch: Path | None) -> None:
        from bot.action.sandbox import give_to_owner_of

        paths = [p for p in (session, session.parent if session else None, patch) if p is not None]
        give_to_owner_of(self.context.temp_dir, paths)

    def _return_workspace(self, snapshot: Snapshot, guard: WorkspaceGuard, start: StartPoint) -> None:
        """The work tree and HEAD back where the job had them, written by the broker's own repository and as
        files: no git runs in the workspace's `.git` after the agent (it could rewrite any of it)."""
        where = start.branch or start.sha[:7]
        try:
            written = snapshot.reset_workspace(start)
            guard.point_at(start, snapshot.index_of(start.sha))
            owner = self.context.workspace.lstat()
            give_back(self.context.workspace, written, (owner.st_uid, owner.st_gid))
            log(f"opi: the workspace is back on `{where}`")
        except (GitError, OSError) as exc:  # later steps may be surprised, but the report still goes out
            log(f"opi: warning: could not put the workspace back on `{where}`: {exc}")

    def _plan(self, task: Task, remote: Remote) -> BranchPlan:
        pull = None
        if task.on_pull_request and not self.dry_run:
            pull = task.pull or remote.require().get_pull(task.number or 0)
        return plan_branch(task, pull, mode=self.inputs.mode, base_branch=self.inputs.base_branch,
                           dry_run=self.dry_run)

    def _checkout(self, repo: Repo, plan: BranchPlan, task: Task) -> str:
        if plan.checkout == "current":
            return repo.head_sha()
        if plan.checkout == "pull_ref":
            return repo.checkout_pull_head(task.number or 0, plan.branch)
        if plan.checkout == "pr_head":
            return repo.checkout_remote_branch(plan.branch)
        # A branch left by an earlier run continues from where it is, so the push fast-forwards.
        left = repo.remote_branch_sha(plan.branch) if plan.push_to else None
        if left is not None and task.on_pull_request:
            return self._from_pull_head(repo, plan, left)
        if left is not None:
            return repo.checkout_remote_branch(plan.branch)
        try:
            return repo.create_branch(plan.branch, start=plan.start_from)
        except GitError as exc:
            if "does not exist" not in str(exc):
                raise
            raise RunProblem(f"{exc} (the base branch comes from the `base_branch` input, else the "
                             "repository's default branch)") from None

    def _from_pull_head(self, repo: Repo, plan: BranchPlan, left: str) -> str:
        """`mode: pr` with `opi/pr-<n>` left by an earlier fix: the work starts from the pull request's head,
        the code its checks and reviews are about. The push fast-forwards when the earlier fix is in that
        head (its pull request was merged); when it is not, a new commit could not be pushed without
        dropping it, so the run stops and says why."""
        repo.fetch_branch(plan.branch)
        head = repo.create_branch(plan.branch, start=plan.start_from)
        if repo.run("merge-base", "--is-ancestor", left, head, check=False).returncode == 0:
            plan.replaces = left
            return head
        raise RunProblem(f"`{plan.branch}`, left by an earlier fix, has commits that `{plan.start_from}` does "
                         f"not: merge its pull request into `{plan.start_from}`, or delete the branch "
                         f"`{plan.branch}`, then ask again.")

    def _run_agent(self, task: Task, plan: BranchPlan, base_sha: str, remote: Remote,
                   ci: CiInfo | None) -> AgentRun:
        from bot.action.launch import AgentRunSpec, run_isolated
        from bot.action.runner import build_prompt, session_dir, session_metadata, settings_for

        self.state.phase = "running"
        self.state.record()
        previous = self._restore_previous_session(task)
        settings = settings_for(self.inputs, self.context, model_override=self.model_override)
        spec = AgentRunSpec(
            settings=settings, workspace=self.context.workspace, session_dir=session_dir(self.context),
            prompt=self.redact(build_prompt(task, branch=plan.branch,
                                            feedback=self._pull_feedback(task, base_sha, remote, ci))),
            metadata=session_metadata(task, self.context, plan.branch, base_sha), fork=previous.path,
            ci_logs=ci.logs if ci else None,
        )
        self._agent_running = True
        try:
            launched = run_isolated(spec, secrets=self.secrets, redact=self.redact,
                                    on_event=self._agent_event_handler(remote.progress), log=log,
                                    cancelled=self.cancel, on_locked=self._record_locked, on_lent=self._record_lent)
        finally:
            self._agent_running = False
            given_back = [self.state.extra.pop(key, None) for key in ("locked_dirs", "lent_workspace")]
            if any(entry is not None for entry in given_back):
                self.state.record()
        if launched.session_path is not None:
            self.state.session_path = str(launched.session_path)
            self.state.record()
        result = launched.result
        if result is not None:
            log(f"opi: agent finished: {result.outcome} after {result.turns} turns")
        replay_source = Path(settings.model.split(":", 1)[1]) if settings.model.startswith("replay:") else None
        return AgentRun(result, launched.session_path, launched.model, self.redact(launched.error),
                        previous_note=previous.note or "", replay_source=replay_source)

    def _record_lent(self, entry: list[Any]) -> None:
        """A root-owned workspace lent to the agent's dedicated uid: the post step hands it back if this
        process is killed before it does."""
        self.state.extra["lent_workspace"] = entry
        self.state.record()

    def _record_locked(self, locked: list[tuple[Path, os.stat_result]]) -> None:
        """Should this process be killed while the runner's directories are locked, the post step gives
        them back from this record."""
        self.state.extra["locked_dirs"] = [[str(path), info.st_uid, info.st_gid, info.st_mode & 0o7777]
                                           for path, info in locked]
        self.state.record()

    def _agent_event_handler(self, progress: ProgressReporter | None) -> Callable[[dict[str, Any]], None]:
        """The agent's events, as it works: progress for the tracking comment, and the lines print mode
        shows (`→ bash command=…`). Everything in them is model output: redacted, and one line each, so
        none can pose as a workflow command."""
        from bot.agent.events import human_line, shown_event

        def on_event(event: dict[str, Any]) -> None:
            if progress is not None:
                progress.feed(event)
            if event.get("type") == "worker_session":  # the broker's mirror: the post step finds it there
                self.state.session_path = str(event.get("path"))
                self.state.record()
                return
            shown = shown_event(event)
            line = human_line(shown) if shown is not None else None
            if line is not None:
                log(line, self.redact)

        return on_event

    def _pull_feedback(self, task: Task, head_sha: str, remote: Remote, ci: CiInfo | None) -> str:
        """For `/opi fix` on a PR: its failing checks with the failing part of their CI logs, and review
        feedback, as prompt context."""
        if self.dry_run or not (task.is_fix and task.on_pull_request) or task.number is None:
            return ""
        try:
            feedback = remote.require().pull_feedback(task.number, head_sha).markdown()
        except GitHubError as exc:  # context is a help, not a precondition
            log(f"opi: warning: {exc}")
            feedback = ""
        return "\n\n".join(part for part in (feedback, ci.context.markdown if ci else "") if part)

    def _ci_context_for(self, github: GitHubClient, head_sha: str) -> CiInfo | None:
        """The failing CI of `head_sha`; full logs go to a directory the agent reads through its `ci_log`
        tool. None when the checks cannot be read (context is a help, not a precondition)."""
        from bot.action.ci_logs import collect_ci_context

        logs = Path(tempfile.mkdtemp(prefix="opi-ci-logs-"))
        try:
            context = collect_ci_context(github, head_sha, logs, redact=self.redact)
        except GitHubError as exc:
            log(f"opi: warning: could not read the checks of {head_sha[:7]}: {exc}")
            shutil.rmtree(logs, ignore_errors=True)
            return None
        if not context.has_logs:
            shutil.rmtree(logs, ignore_errors=True)
        return CiInfo(context, logs if context.has_logs else None)

    def _restore_previous_session(self, task: Task) -> PreviousSession:
        """A follow-up `/opi` on the same issue or PR continues the newest earlier session of the thread."""
        from bot.action.continuation import PreviousSession, restore_previous_session

        if self.dry_run or task.number is None or task.kind == "scheduled":
            return PreviousSession()
        run_id = int(self.context.run_id) if self.context.run_id.isdigit() else None
        return restore_previous_session(task.repo or self.context.repository, self.inputs.github_token,
                                        task.number, self.context.temp_dir / "opi-previous-session",
                                        api_url=self.context.api_url, server_url=self.context.server_url,
                                        run_id=run_id, log=log, own_comment_id=self.state.tracking_comment_id)

    def _keep_patch(self, changes: Changes, task: Task) -> Path | None:
        """The patch also goes to RUNNER_TEMP, so a failed push or comment never loses the work."""
        if changes.empty:
            return None
        name = f"opi-{task.number or 'maintenance'}-{self.context.run_id or 'local'}.patch"
        path = self.context.temp_dir / name
        try:
            # Redacted like the comment's diff: the file also travels in the session artifact. Written as
            # a new file that replaces whatever is there (a link is never followed).
            write_file_atomically(path, self.redact(changes.patch).encode("utf-8"), mode=0o644)
        except OSError as exc:
            log(f"opi: warning: could not save the patch to {path}: {exc}")
            return None
        log(f"opi: the patch is saved at {path}")
        return path

    # -- delivery ----------------------------------------------------------------------------------------
    def _deliver(self, snapshot: Snapshot, task: Task, plan: BranchPlan, agent_run: AgentRun,
                 changes: Changes, remote: Remote, ci: CiInfo | None, patch_path: Path | None) -> Delivery:
        result = agent_run.result
        finished = result is not None and result.outcome == "completed"
        not_done = _not_done_status(result, agent_run.error)
        if changes.empty:
            if finished:
                return Delivery(status="no_changes", reason="The agent made no changes to the repository.")
            return Delivery(status=not_done, reason=self._stop_reason(agent_run))
        if not finished:
            return Delivery(status=not_done, reason=self._stop_reason(agent_run),
                            patch_note="These partial changes were **not pushed**, because the agent did not "
                                       f"finish. {self._how_to_apply(patch_path, partial=True)}")
        if plan.push_to is None:
            return Delivery(status="success",
                            patch_note=f"{plan.patch_only_reason} {self._how_to_apply(patch_path)}")
        # Texts opi writes are redacted; file contents cannot be, so a secret in them blocks the push.
        message = self.redact(self._commit_message(task, result.final_text if result else "", ci))
        leaks = self._leaks(snapshot, changes, message, self.redact(result.final_text if result else ""))
        if leaks:
            return Delivery(status="error", reason=f"Nothing was pushed: {leaks}",
                            patch_note="Not pushed: it holds a secret of this run.")
        sha = snapshot.commit(message, self._identity())
        commit_url = f"{self.context.server_url}/{task.repo}/commit/{sha}"
        self.state.record(pushing_branch=plan.push_to)
        try:
            snapshot.push(sha, plan.push_to, replaces=plan.replaces)
        except PushRejected as exc:
            log(f"opi: {exc}")
            self.state.record(pushing_branch="")  # git said so: nothing landed
            return Delivery(status="rejected",
                            reason=f"`{plan.push_to}` moved on while opi was working (someone pushed), so "
                                   f"the commit `{sha[:7]}` could not be pushed. Nothing is lost: the patch is "
                                   "below; pull the branch and apply it with `git apply`, or ask again.",
                            patch_note="Not pushed: the branch moved on.")
        except WorkflowPushRefused as exc:
            log(f"opi: {exc}")
            self.state.record(pushing_branch="")  # git said so: nothing landed
            explanation = render.workflow_push_refusal(exc.stderr, app=self.inputs.uses_app) or str(exc)
            return Delivery(status="error", reason=f"{explanation} Nothing is lost: the patch is below.",
                            patch_note="Not pushed: it changes a workflow file.")
        self.state.record(pushed_sha=sha, pushed_branch=plan.push_to)
        delivery = f"Pushed [`{sha[:7]}`]({commit_url}) to `{plan.push_to}`.{self._ci_note()}"
        pr_url = ""
        if plan.open_pr_into:
            try:
                pr_url = self._open_or_find_pr(remote.require(), task, plan, result.final_text if result else "")
            except GitHubError as exc:
                return Delivery(status="error", delivery=delivery, commit_sha=sha, branch=plan.push_to,
                                reason=f"The commit was pushed, but opening the pull request failed: {exc}. "
                                       f"Open it from `{plan.push_to}` by hand.")
            self.state.record(pr_url=pr_url)
            delivery += f" Pull request: {pr_url}"
        return Delivery(status="success", delivery=delivery, commit_sha=sha, branch=plan.push_to, pr_url=pr_url)

    def _leaks(self, snapshot: Snapshot, changes: Changes, message: str, answer: str) -> str:
        """Scan everything a push would publish for this run's secrets, in every encoding; the notice
        names where, never what."""
        from bot.action.leakscan import Item, describe, scan

        items = [Item(kind="file", name=name, data=content) for name, content in snapshot.blobs(changes.files)]
        items += [Item(kind="commit message", name="commit message", data=message.encode()),
                  Item(kind="pull request body", name="pull request body", data=answer.encode())]
        hits = scan(self.secrets, items)
        return describe(hits) if hits else ""

    def _ci_note(self) -> str:
        """GitHub starts no workflow for a push made with the workflow's own token (a `ghs_` token not
        minted by this action is that, or an app token minted by an earlier step: the note says which)."""
        if self.inputs.uses_app or not self.inputs.github_token.startswith("ghs_"):
            return ""
        return (" If `github_token` is the workflow's own token, GitHub runs no CI on this push: "
                f"[use a GitHub App]({DOCS_URL}/action.md#use-a-github-app-so-ci-runs-on-the-bots-pushes).")

    def _identity(self) -> Identity:
        return Identity(self.inputs.bot_name, self.inputs.bot_email)

    def _open_or_find_pr(self, github: GitHubClient, task: Task, plan: BranchPlan, answer: str) -> str:
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
        body = f"{link}\n\n{render.defang(answer.strip())}\n\n{self.context.run_url}".strip()
        return github.create_pull(title=title, body=body, head=plan.push_to, base=plan.open_pr_into).html_url

    def _commit_message(self, task: Task, answer: str, ci: CiInfo | None) -> str:
        subject = (task.instructions.splitlines()[0] if task.instructions else
                   ("fix" if task.is_fix else task.title) or "changes")[:60]
        where = f" for #{task.number}" if task.number else ""
        # The subject may be the title, which anyone can write: as unsafe as the answer.
        lines = [f"opi: {render.defang(subject)}{where}", ""]
        first_paragraph = render.defang(answer.strip().split("\n\n")[0][:1000])
        if first_paragraph:
            lines += [first_paragraph, ""]
        if task.comment_url:
            lines += [f"Requested in {task.comment_url}", ""]
        if task.requester is not None and not task.requester.is_bot:
            lines.append(coauthor_trailer(task.requester.login, task.requester.id))
        signature = _failure_signature(ci)
        if signature:  # lets a later automatic fix see that this commit met the same failure
            from bot.action.autofix import signature_trailer

            lines.append(signature_trailer(signature))
        return "\n".join(lines).strip() + "\n"


    def _how_to_apply(self, patch_path: Path | None, *, partial: bool = False) -> str:
        """A dry run leaves the change in the working tree, where `git apply` of its patch would fail."""
        if self.dry_run:
            saved = f"; the patch is saved at `{patch_path}`" if patch_path is not None else ""
            return f"{'They are' if partial else 'The change is'} already in the working tree{saved}."
        return "Apply them with `git apply` if they are useful." if partial else "Apply it with `git apply`."

    def _stop_reason(self, agent_run: AgentRun) -> str:
        """Why the agent did not finish. Without a result it may still have worked for turns (its worker was
        killed, or did not stop at a hard time limit or a cancel): only a setup failure, or no result and no
        session, means it never started."""
        result, error = agent_run.result, agent_run.error
        if result is None and agent_run.session_path is None:
            return f"The agent could not start: {self.redact(error or 'no details')}"
        if result is None:
            return f"The agent stopped without reporting a result: {self.redact(error or 'no details')}"
        if result.setup_failed:
            return f"The agent could not start: {self.redact(error or result.error)}"
        return f"Stopped ({result.outcome}): {self.redact(result.error or error or 'no details')}"

    # -- reporting -----------------------------------------------------------------------------------------
    def _report(self, task: Task, agent_run: AgentRun, changes: Changes, delivered: Delivery,
                patch_path: Path | None) -> RunOutcome:
        result = agent_run.result
        published = self._publish_session(task, agent_run.session_path, patch_path)
        session = published.markdown if published is not None else "not saved"
        report = render.Report(
            status=delivered.status, reason=delivered.reason, answer=self.redact(result.final_text) if result else "",
            diff_stat=changes.stat, patch=changes.patch, patch_note=delivered.patch_note,
            delivery=delivered.delivery, costs=self._costs(agent_run), run_url=self.context.run_url,
            session=f"{agent_run.previous_note}\n\n{session}".strip(),
        )
        if published is not None:
            report.marker = published.marker
            if patch_path is not None and published.artifact_url:
                report.patch_link = f"[{published.upload.name if published.upload else 'the artifact'}]" \
                                    f"({published.artifact_url})"
        return RunOutcome(report, delivered, agent_run, published, patch_path)

    def _costs(self, agent_run: AgentRun) -> render.CostSummary | None:
        """What the run spent: the worker's figures, or (cancelled before it reported) the session's; a
        replay shows what the recording cost, never $0."""
        result = agent_run.result
        costs: render.CostSummary | None
        if result is not None and not result.setup_failed:
            costs = render.CostSummary(usage=Usage.model_validate(result.usage), cost=Cost.model_validate(result.cost),
                                       turns=result.turns, compactions=result.compactions,
                                       duration_seconds=result.duration_seconds, model=agent_run.model)
        elif agent_run.session_path is not None:
            costs = render.run_costs(agent_run.session_path, model=agent_run.model,
                                     duration_seconds=time.monotonic() - self.started)
        else:
            return None
        if costs is not None and agent_run.replay_source is not None:
            costs.recorded_cost = render.recorded_cost(agent_run.replay_source)
        return costs

    def _publish_session(self, task: Task, path: Path | None, patch_path: Path | None) -> Published | None:
        """Upload the session (and the patch with it) as the thread's artifact; None without a session."""
        from bot.action.continuation import publish_session
        from bot.agent.session import read_header

        if path is None:
            return None
        header = read_header(path) or {}
        # A dry run stays local: no upload even where a runner's variables are set.
        env = {} if self.dry_run else os.environ
        extras = [patch_path] if patch_path is not None and patch_path.is_file() else []
        session_id = str(header.get("id") or path.stem)
        published = publish_session(path, session_id, env, number=task.number, log=log, extras=extras)
        self.state.record(session_id=session_id, artifact_id=published.artifact_id,
                          artifact_url=published.artifact_url,
                          artifact_name=published.upload.name if published.upload else "")
        return published

    def _finish(self, task: Task, outcome: RunOutcome, remote: Remote) -> int:
        report = outcome.report
        self._log_conclusion(report)
        body = render.render_report(report, self.redact)
        github = remote.require()
        should_comment = task.number is not None and task.kind != "scheduled"
        # Held in the state first: if posting fails, or this process dies, the post step posts it.
        self.state.record(report_body=body if should_comment else "", conclusion=report.status)
        posted: bool | None = None
        error = ""
        try:
            if remote.progress is not None:
                remote.progress.stop()  # the report replaces the progress, with the write retries below
            if self.state.tracking_comment_id is not None:
                self._edit_tracking(github, body)
                posted = True
            elif should_comment:
                github.create_comment(task.number or 0, body)
                posted = True
        except GitHubError as exc:
            posted, error = False, self.redact(str(exc))
            log_error(f"could not post the final comment (the post step tries again): {error}")
            log(body)
        self._write_outputs(outcome)
        append_summary(self.context.summary_file, render.summary_markdown(report, "opi"), self.redact)
        if posted is False:
            self.state.record(report_posted=False, report_error=error, phase="finished")
        else:
            self.state.record(report_posted=posted, phase="finished")
        return EXIT_OK if report.status in ("success", "no_changes") and posted is not False else EXIT_FAILED

    def _log_conclusion(self, report: render.Report) -> None:
        message = report.status + (f": {self.redact(report.reason)}" if report.reason else "")
        if report.status == "error":
            log_error(message)  # prefixed once, by the runner's `::error::` or by `opi action: `
        else:
            log(f"opi: {message}")

    def _write_outputs(self, outcome: RunOutcome) -> None:
        delivered, agent_run, costs = outcome.delivered, outcome.agent_run, outcome.report.costs
        session = agent_run.session_path if agent_run else None
        upload = outcome.published.upload if outcome.published is not None else None
        values = {
            "conclusion": outcome.report.status,
            "session_path": str(session) if session else "",
            "session_relpath": host_relative_path(session) if session else "",
            "artifact_url": (upload.url or "") if upload is not None and upload.ok else "",
            "cost_usd": render.cost_output(costs.cost if costs else None),
            "turns": str(costs.turns) if costs else "0",
            "branch": delivered.branch if delivered else "",
            "commit_sha": delivered.commit_sha if delivered else "",
            "pr_url": delivered.pr_url if delivered else "",
        }
        for name in OUTPUT_NAMES:
            self._output(name, values[name])

    def _output(self, name: str, value: str) -> None:
        write_output(self.context.output_file, name, value, self.redact)

    # -- dry run -------------------------------------------------------------------------------------------
    def _execute_dry_run(self, task: Task) -> int:
        outcome = self._work_safely(task, Remote())
        report = outcome.report
        self._log_conclusion(report)
        print(render.render_report(report, self.redact))
        self._write_outputs(outcome)
        if outcome.patch_path is not None:
            log(f"opi: dry run: nothing was pushed; the change is already in the working tree "
                f"({self.context.workspace}), and the patch is saved at {outcome.patch_path}")
        return EXIT_OK if report.status in ("success", "no_changes") else EXIT_FAILED


def _failure_signature(ci: CiInfo | None) -> str | None:
    from bot.action.autofix import signature_of

    return signature_of(ci.context) if ci is not None else None


def _not_done_status(result: WorkerResult | None, error: str) -> render.Status:
    if result is None or result.outcome == "error":
        return "error"
    if result.outcome == "aborted":
        return "cancelled"
    return "limit" if result.outcome in ("max_turns", "max_cost", "timeout") else "error"
