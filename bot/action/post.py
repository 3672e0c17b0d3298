"""`opi action --post`, the post-entrypoint: it runs after the main step whatever happened to it.

The main step records each delivery fact in the run state the moment it happens (`RunState.record`):
the push, the PR, the artifact, the rendered final report and whether it was posted. From those facts the
post step finishes what the main step could not:

- the final report was rendered but could not be posted (a 502 on the last edit, a kill right after):
  post that report, unchanged;
- the run never got that far (cancelled, timed out, killed): upload the session unless it already was,
  and replace the "working on it" comment with a report that says exactly what happened, e.g. "cancelled
  after pushing `abc1234` to `feature`", and what it cost, from the session file;
- the run finished and its report is on GitHub: nothing to do.

It never says "Nothing was pushed" when a push was recorded, and when a push had started but its result
was not recorded, it says so instead of guessing.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bot.action.comment import Report, cost_output, final_answer, render_report, run_costs, summary_markdown
from bot.action.inputs import InputError, RunnerContext, host_relative_path, read_context, read_inputs
from bot.action.redact import Redactor
from bot.action.workflow import STATE_KEY, RunState, append_summary, state_path, write_output


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_state_file() -> Path | None:
    # The runner hands `$GITHUB_STATE` entries to the post step as STATE_<name>.
    saved = os.environ.get(f"STATE_{STATE_KEY}", "").strip()
    if saved:
        return Path(saved)
    context = read_context()
    fallback = state_path(context.temp_dir, context.run_id)
    return fallback if fallback.exists() else None


def run_post(redact: Redactor, *, token: str | None = None) -> int:
    """The post step. `token` is what to call GitHub with (e.g. a freshly minted app token); by default
    the `github_token` input."""
    path = find_state_file()
    state = RunState.load(path) if path is not None else None
    if state is None:
        _log("opi post: no run state found (the main step stopped before starting work); nothing to finalise")
        return 0
    _give_back_locked_dirs(state)
    if not state.needs_post_step:
        _log(f"opi post: the run finished ({state.conclusion or 'no conclusion'}) and its report is posted; "
             "nothing to finalise")
        return 0
    token = token if token is not None else _input_token()
    redact.add(token)
    context = read_context()
    if state.report_body:
        return _post_held_report(state, token, context, redact)
    if state.phase == "finished":  # posting failed, but nothing was held to post again
        _log(f"opi post: the run finished ({state.conclusion}) but its report was not posted "
             f"({redact(state.report_error) or 'no reason recorded'}), and no report was kept to post again")
        return 1
    return _finalise_stopped_run(state, token, context, redact)


def _give_back_locked_dirs(state: RunState) -> None:
    """The main step locks the runner's directories against the agent while it runs (and lends a
    root-owned workspace to the agent's uid); killed meanwhile, it could not give them back, and the job's
    later steps need them."""
    from bot.action.sandbox import unlock

    locked = state.extra.get("locked_dirs") or []
    saved = []
    for entry in locked:
        try:
            path, uid, gid, mode = str(entry[0]), int(entry[1]), int(entry[2]), int(entry[3])
        except (TypeError, ValueError, IndexError):
            continue
        saved.append((Path(path), os.stat_result((mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))))
    if saved:
        unlock(saved)
        _log(f"opi post: gave back {len(saved)} directories the main step had locked against the agent")
    lent = state.extra.get("lent_workspace")
    if isinstance(lent, list) and len(lent) == 3:
        from bot.action.sandbox import chown_tree

        try:
            chown_tree(Path(str(lent[0])), int(lent[1]), int(lent[2]))
            _log(f"opi post: gave the workspace {lent[0]} back to uid {lent[1]}")
        except (OSError, ValueError) as exc:
            _log(f"opi post: could not give the workspace back: {exc}")


def _input_token() -> str:
    try:
        return read_inputs().github_token
    except InputError as exc:  # the main step refused the same inputs; the token may still be usable
        _log(f"opi post: {exc}")
        return os.environ.get("INPUT_GITHUB_TOKEN", "").strip() or os.environ.get("GITHUB_TOKEN", "")


# -- the main step rendered its report but could not post it --------------------------------------------

def _post_held_report(state: RunState, token: str, context: RunnerContext, redact: Redactor) -> int:
    why = f" ({redact(state.report_error)})" if state.report_error else ""
    _log(f"opi post: the main step could not post its final report{why}; posting it now")
    error = _publish(state, token, context.api_url, state.report_body, redact)
    _write_fact_outputs(state, context, redact, conclusion=state.conclusion or "error")
    _summarise(state, context, redact, error, conclusion=state.conclusion or "error")
    if error:
        return 1
    state.record(report_posted=True, report_error="", phase="finished")
    return 0


# -- the main step died before it had a report ------------------------------------------------------------

@dataclass
class _Session:
    markdown: str = "not saved"
    marker: str = ""
    artifact_url: str = ""


def _finalise_stopped_run(state: RunState, token: str, context: RunnerContext, redact: Redactor) -> int:
    session_path = Path(state.session_path) if state.session_path else None
    session = _Session()
    costs = None
    answer = ""
    if session_path is not None and session_path.exists():
        redact.file_jsonl(session_path)
        session = _session_section(state, session_path)
        costs = run_costs(session_path, duration_seconds=_duration(state))
        answer = redact(final_answer(session_path))  # the agent may have answered before the step died
    report = Report(status="cancelled", reason=stopped_reason(state), delivery=delivery_line(state, context),
                    answer=answer, costs=costs, session=session.markdown, run_url=state.run_url,
                    marker=session.marker)
    state.record(conclusion="cancelled", report_body=render_report(report, redact))
    error = _publish(state, token, context.api_url, state.report_body, redact) if _has_thread(state) else ""
    if not _has_thread(state):
        _log("opi post: the run did not finish and there is no thread to report to")
    _write_fact_outputs(state, context, redact, conclusion="cancelled", session_path=session_path,
                        cost_usd=cost_output(costs.cost if costs else None))
    append_summary(context.summary_file, summary_markdown(report, "opi (finished by the post step)"), redact)
    _summarise(state, context, redact, error, conclusion="cancelled")
    if error:
        return 1
    state.record(report_posted=True if _has_thread(state) else None, phase="finished")
    return 0


def _duration(state: RunState) -> float | None:
    """From the start the main step recorded to now; None (shown as unknown) without a usable record."""
    now, started = time.time(), state.started_at
    if not isinstance(started, int | float) or isinstance(started, bool) or started > now:
        return None
    return now - started


def stopped_reason(state: RunState) -> str:
    """What happened, from the recorded facts only."""
    base = "The run stopped before opi could finish: it was cancelled, timed out or crashed (the run log says which)."
    return f"{base} {push_sentence(state)}".rstrip()


def push_sentence(state: RunState) -> str:
    """What became of the push, from the recorded facts only: "" when it landed (`delivery_line` says
    where), and never "Nothing was pushed" when a push had started without a recorded result."""
    if state.pushed:
        return ""
    if state.pushing_branch:
        return (f"It was pushing to `{state.pushing_branch}` when it stopped; look at the branch to see whether "
                "that push landed.")
    return "Nothing was pushed."


def delivery_line(state: RunState, context: RunnerContext) -> str:
    if not state.pushed:
        return ""
    sha, repo = state.pushed_sha, state.repo or context.repository
    line = f"It had pushed [`{sha[:7]}`]({context.server_url}/{repo}/commit/{sha}) to `{state.pushed_branch}`."
    if state.pr_url:
        line += f" Pull request: {state.pr_url}"
    return line


def outcome_sentence(state: RunState, conclusion: str, post_error: str) -> str:
    """One line for the log and the step summary: "cancelled after pushing abc1234 to feature; the report
    could not be posted: ..."."""
    sentence = conclusion or "stopped"
    if state.pushed:
        sentence += f" after pushing {state.pushed_sha[:7]} to {state.pushed_branch}"
        if state.pr_url:
            sentence += f" (pull request {state.pr_url})"
    elif state.pushing_branch:
        sentence += f" while pushing to {state.pushing_branch} (whether it landed is unknown)"
    else:
        sentence += "; nothing was pushed"
    if post_error:
        sentence += f"; the report could not be posted: {post_error}"
    elif _has_thread(state):
        sentence += "; the report is posted"
    return sentence


def _session_section(state: RunState, session_path: Path) -> _Session:
    """Upload the session unless the main step already did (then its recorded link is used)."""
    from bot.action.artifacts import UploadResult
    from bot.action.continuation import marker, publish_session, session_markdown
    from bot.agent.session import read_header

    header = read_header(session_path) or {}
    session_id = state.session_id or str(header.get("id") or session_path.stem)
    if state.artifact_id is not None and state.artifact_url:
        name = state.artifact_name or session_path.name
        upload = UploadResult(name, ok=True, artifact_id=state.artifact_id, url=state.artifact_url,
                              already_uploaded=True)
        run_id = os.environ.get("GITHUB_RUN_ID", "")
        try:
            found = marker(run_id, state.artifact_id, session_id)
        except ValueError:
            found = ""
        return _Session(session_markdown(session_path, session_id, os.environ, name, upload), found,
                        state.artifact_url)
    published = publish_session(session_path, session_id, os.environ, number=state.number, log=_log)
    if published.artifact_id is not None:
        state.record(artifact_id=published.artifact_id, artifact_url=published.artifact_url,
                     artifact_name=published.upload.name if published.upload else "")
    return _Session(published.markdown, published.marker, published.artifact_url)


def _has_thread(state: RunState) -> bool:
    return bool(state.repo) and (state.tracking_comment_id is not None or state.number is not None)


# -- GitHub, outputs, log --------------------------------------------------------------------------------

def _publish(state: RunState, token: str, api_url: str, body: str, redact: Redactor) -> str:
    """Edit the tracking comment (or comment on the thread when there is none). Returns "" on success, else
    the error (for the log only)."""
    from bot.action.github_api import GitHubClient, GitHubError

    try:
        github = GitHubClient(token, state.repo, api_url=api_url, redact=redact)
        if state.tracking_comment_id is not None and state.extra.get("tracking_kind") == "review":
            github.edit_review_comment(state.tracking_comment_id, body)  # the reply in a review thread
        elif state.tracking_comment_id is not None:
            github.edit_comment(state.tracking_comment_id, body)
        elif state.number is not None:
            comment = github.create_comment(state.number, body)
            state.record(tracking_comment_id=comment.id)
    except GitHubError as exc:
        return redact(str(exc))
    return ""


def _write_fact_outputs(state: RunState, context: RunnerContext, redact: Redactor, *, conclusion: str,
                        session_path: Path | None = None, cost_usd: str | None = None) -> None:
    values = {"conclusion": conclusion, "commit_sha": state.pushed_sha, "branch": state.pushed_branch,
              "pr_url": state.pr_url, "artifact_url": state.artifact_url}
    if session_path is not None and session_path.exists():
        values["session_path"] = str(session_path)
        values["session_relpath"] = host_relative_path(session_path)
    if cost_usd is not None:
        values["cost_usd"] = cost_usd
    for name, value in values.items():
        write_output(context.output_file, name, value, redact)


def _summarise(state: RunState, context: RunnerContext, redact: Redactor, error: str, *, conclusion: str) -> None:
    sentence = outcome_sentence(state, conclusion, error)
    _log(f"opi post: {redact(sentence)}")
    append_summary(context.summary_file, f"opi post step: {sentence}", redact)
