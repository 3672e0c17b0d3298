"""`opi action --post`, the post-entrypoint: it runs after the main step whatever happened to it.

When the main step finished, there is nothing to do. When it died (cancelled, timed out, crashed, killed),
the tracking comment still says "working on it": edit it to say the run stopped and where the session
is, redact the session file, and expose its path as the `session_path` output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bot.action.comment import Report, render_report
from bot.action.inputs import host_relative_path, read_context, read_inputs
from bot.action.redact import Redactor
from bot.action.workflow import STATE_KEY, RunState, state_path, write_output


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


def run_post(redact: Redactor) -> int:
    path = find_state_file()
    state = RunState.load(path) if path is not None else None
    if state is None:
        _log("opi post: no run state found (the main step stopped before starting work); nothing to finalise")
        return 0
    if state.phase == "finished":
        _log(f"opi post: the run finished ({state.conclusion}); nothing to finalise")
        return 0
    inputs = read_inputs()
    redact.add(inputs.github_token)
    context = read_context()
    session = Path(state.session_path) if state.session_path else None
    session_note = f"`{session.name}` (kept by the post step)" if session is not None else "not saved"
    if session is not None and session.exists():
        redact.file_jsonl(session)
        write_output(context.output_file, "session_path", str(session), redact)
        write_output(context.output_file, "session_relpath", host_relative_path(session), redact)
        session_note = _publish_session(session, state.number, context.output_file, redact)
    write_output(context.output_file, "conclusion", "cancelled", redact)
    if state.tracking_comment_id is None or not state.repo:
        _log("opi post: the run did not finish and there is no tracking comment to update")
        return 0
    report = Report(
        status="cancelled",
        reason="The run stopped before opi could finish: it was cancelled, timed out or crashed. "
               "Nothing was pushed. See the run log for details.",
        answer="",
        session=session_note,
        run_url=state.run_url,
    )
    code = _edit(state, inputs.github_token, context.api_url, render_report(report, redact), redact)
    if code == 0 and path is not None:
        state.save(path)  # a second post run (re-run) then leaves the comment alone
    return code


def _publish_session(session: Path, number: int | None, output_file: Path | None, redact: Redactor) -> str:
    """The session artifact happens even when the main step died: upload it and say how to resume it."""
    from bot.action.continuation import publish_session
    from bot.agent.session import read_header

    header = read_header(session) or {}
    published = publish_session(session, str(header.get("id") or session.stem), os.environ, number=number,
                                log=_log)
    if published.upload is not None and published.upload.ok and published.upload.url:
        write_output(output_file, "artifact_url", published.upload.url, redact)
    return published.markdown


def _edit(state: RunState, token: str, api_url: str, body: str, redact: Redactor) -> int:
    from bot.action.github_api import GitHubClient, GitHubError

    assert state.tracking_comment_id is not None
    try:
        GitHubClient(token, state.repo, api_url=api_url, redact=redact).edit_comment(
            state.tracking_comment_id, body)
    except GitHubError as exc:
        _log(f"opi post: could not update the tracking comment: {exc}")
        return 1
    state.phase = "finished"
    state.conclusion = "cancelled"
    _log("opi post: marked the unfinished run as stopped")
    return 0
