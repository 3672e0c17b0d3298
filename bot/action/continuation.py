"""Thread continuation: a follow-up `/opi` comment resumes the newest earlier session of its issue or PR.

The action calls, in order:

1. `restore_previous_session(..., bot_login=...)` before the agent starts. It reads the thread's comments
   newest first (two requests however long the thread) for the bot's last report, whose hidden marker
   (`marker(...)`) names the run, the artifact and the session; it fetches that one artifact by id. Only
   when no report carries a marker does it fall back to listing the repository's artifacts named
   `opi-session-<number>-*` (the newest 1,000). It skips expired ones, fork runs' and the current run's,
   downloads the zip and extracts its JSONL under RUNNER_TEMP. Any failure is a note for the log, never a
   failed run: the agent then starts fresh.
2. The runner opens the run's session as a fork of that file (`open_session(fork=...)`): a new file whose
   header names the earlier session as `parent_session` and which holds a copy of its active branch, so
   the agent's first request carries the earlier context (compaction summary and kept messages, or the
   whole conversation). The header also records repo, issue/PR number, run URL, head commit and model.
3. `publish_session(...)` after the run (and in the post step when the main step died): uploads the
   session as an artifact and renders the comment's "Session" section with the artifact link and the
   exact commands to resume it locally, plus the marker the next run looks for.

Markers are only trusted in comments authored by the bot's own login (anyone can type a marker into a
comment), and even then the artifact they point at must carry this thread's name and come from this
repository; its content stays untrusted input (it is checked to be a session, and becomes the agent's
context, never instructions to the action).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.action.artifacts import (
    ArtifactError,
    ArtifactExpired,
    ArtifactNotFound,
    Backoff,
    GitHubArtifacts,
    RemoteArtifact,
    UploadResult,
    extract_session,
    session_artifact_name,
    thread_prefix,
    upload_session,
)
from bot.agent.session import Session, SessionError, read_header

Log = Callable[[str], None]


# -- the report marker ------------------------------------------------------------------------------------

_SESSION_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
_MARKER = re.compile(rf"<!-- opi-report run_id=(?P<run>\d{{1,20}}) artifact_id=(?P<artifact>\d{{1,20}}|none) "
                     rf"session_id=(?P<session>{_SESSION_ID}) -->")


@dataclass(frozen=True)
class ReportMarker:
    """What the bot's report says about its run: the run, the session artifact (None when the container
    did not upload it) and the session id."""

    run_id: int
    artifact_id: int | None
    session_id: str


def marker(run_id: int | str, artifact_id: int | None, session_id: str) -> str:
    """The hidden HTML comment the final report carries, for the next run of the thread to find.
    Raises ValueError for values that could not be parsed back (or could close the HTML comment)."""
    run = str(run_id)
    if not run.isdigit() or len(run) > 20:
        raise ValueError(f"run id must be digits, got {run!r}")
    if artifact_id is not None and artifact_id < 0:
        raise ValueError(f"artifact id must not be negative, got {artifact_id}")
    if not re.fullmatch(_SESSION_ID, session_id):
        raise ValueError(f"session id must be letters, digits, '.', '_' or '-', got {session_id!r}")
    artifact = "none" if artifact_id is None else str(artifact_id)
    return f"<!-- opi-report run_id={run} artifact_id={artifact} session_id={session_id} -->"


def parse_marker(body: str) -> ReportMarker | None:
    """The last well-formed marker in a comment body, or None. The body is untrusted: only the strict
    format is accepted. Whether the comment itself is the bot's is for the caller to check."""
    found = None
    for match in _MARKER.finditer(body):
        found = match
    if found is None:
        return None
    artifact = found["artifact"]
    return ReportMarker(run_id=int(found["run"]), artifact_id=None if artifact == "none" else int(artifact),
                        session_id=found["session"])


def find_report_marker(api: GitHubArtifacts, number: int, bot_login: str | None = None, *,
                       own_comment_id: int | None = None,
                       exclude_run_id: int | None = None) -> ReportMarker | None:
    """The marker of the newest report of the thread that the bot itself posted, skipping the current
    run's. The bot is `bot_login` (e.g. `github-actions[bot]`), or else whoever wrote `own_comment_id`,
    the comment this run posted itself (its tracking comment), which is the bot by construction.
    Comments by anyone else are ignored, whatever they contain: a marker is easy to forge."""
    wanted = bot_login.casefold() if bot_login else None
    for comment in api.issue_comments_newest_first(number):
        user = comment.get("user")
        login = user.get("login") if isinstance(user, dict) else None
        if not isinstance(login, str):
            continue
        if wanted is None:  # still looking for our own comment, which tells who the bot is
            if own_comment_id is not None and comment.get("id") == own_comment_id:
                wanted = login.casefold()
            continue
        if login.casefold() != wanted:
            continue
        found = parse_marker(str(comment.get("body") or ""))
        if found is not None and found.run_id != exclude_run_id:
            return found
    return None


def artifact_for_marker(api: GitHubArtifacts, number: int, found: ReportMarker) -> RemoteArtifact:
    """The artifact a report marker points at, checked to be this thread's session of that run."""
    name = session_artifact_name(number, found.run_id)
    artifact = api.get(found.artifact_id) if found.artifact_id is not None else _run_artifact(api, found.run_id, name)
    if artifact.name != name or (artifact.run_id is not None and artifact.run_id != found.run_id):
        raise ArtifactError(f"artifact {artifact.id} ({artifact.name}) is not {name}: not this thread's session")
    if artifact.from_fork:
        raise ArtifactError(f"artifact {artifact.name} was uploaded by a fork's run; not continued")
    if artifact.expired:
        raise ArtifactExpired(f"artifact {artifact.name} has expired")
    return artifact


def _run_artifact(api: GitHubArtifacts, run_id: int, name: str) -> RemoteArtifact:
    """The workflow uploaded it (actions/upload-artifact): look in that one run."""
    for artifact in api.run_artifacts(run_id):
        if artifact.name == name:
            return artifact
    raise ArtifactNotFound(f"run {run_id} has no artifact {name}")


@dataclass
class PreviousSession:
    """The outcome of looking for an earlier session of the thread."""

    path: Path | None = None  # the downloaded JSONL, when one was found
    artifact: RemoteArtifact | None = None
    note: str = ""  # what happened, for the comment ("" when there was nothing to find): no internals
    detail: str = ""  # the failure itself (API error, exception), for the job log only

    @property
    def found(self) -> bool:
        return self.path is not None


def find_previous_session(api: GitHubArtifacts, number: int, *,
                          exclude_run_id: int | None = None) -> RemoteArtifact | None:
    """The newest non-expired session artifact of issue/PR `number` from another run, or None.

    Artifacts uploaded by fork pull-request runs are never continued: anyone can open a fork PR whose
    workflow uploads an artifact with a matching name, and its content would become the agent's context
    (a prompt injection running with this repository's write token)."""
    for artifact in api.list_artifacts(prefix=thread_prefix(number)):
        if artifact.expired or not artifact.known_same_repository:  # a fork's, or nothing says whose
            continue
        if exclude_run_id is not None and artifact.run_id == exclude_run_id:
            continue
        return artifact
    return None


def download_session(api: GitHubArtifacts, artifact: RemoteArtifact, dest_dir: Path) -> Path:
    """Download the artifact's zip and extract its session file into dest_dir."""
    data = api.download_zip(artifact)
    return extract_session(data, dest_dir, source=f"artifact {artifact.name}")


def restore_previous_session(repo: str, token: str, number: int | None, dest_dir: Path, *,
                             api_url: str = "https://api.github.com", server_url: str = "https://github.com",
                             run_id: int | None = None, log: Log | None = None,
                             backoff: Backoff | None = None, bot_login: str | None = None,
                             own_comment_id: int | None = None) -> PreviousSession:
    """Find and download the thread's newest earlier session. Never raises: a failure becomes a note.

    With `bot_login` (the login the action comments as, e.g. `github-actions[bot]`) or `own_comment_id`
    (this run's tracking comment, whose author is the bot) the thread's last report marker decides;
    without either, or when no report carries a marker, the repository's artifacts are listed."""
    log = log or (lambda _message: None)
    if number is None:
        return PreviousSession()  # scheduled runs belong to no thread
    found: ReportMarker | None = None
    artifact: RemoteArtifact | None = None
    try:
        api = GitHubArtifacts(repo, token, api_url=api_url, log=log, backoff=backoff)
        found = _marker_of_thread(api, number, bot_login, own_comment_id, run_id, log)
        artifact = (artifact_for_marker(api, number, found) if found is not None
                    else find_previous_session(api, number, exclude_run_id=run_id))
        if artifact is None:
            log(f"no earlier opi session found for #{number} (no report marker, and none among the "
                "repository's newest artifacts): starting a new one")
            return PreviousSession()
        path = download_session(api, artifact, dest_dir)
        _check_session(path, found)
    except (ArtifactError, SessionError) as exc:
        return _not_continued(number, str(exc), log, known=found is not None or artifact is not None)
    except Exception as exc:  # continuing is a bonus: a bug here must not cost the run
        return _not_continued(number, f"{type(exc).__name__}: {exc}", log,
                              known=found is not None or artifact is not None)
    log(f"continuing session from artifact {artifact.name} (run {artifact.run_id})")
    return PreviousSession(path=path, artifact=artifact,
                           note=f"Continues the session of [run {artifact.run_id}]"
                                f"({_run_link(repo, artifact.run_id, server_url)}) (`{artifact.name}`).")


def _not_continued(number: int, detail: str, log: Log, *, known: bool) -> PreviousSession:
    """`known`: a report or an artifact showed that an earlier session exists. Without either, the look-up
    itself failed (e.g. no `actions: read`), and a thread's first run must not be told of a session it
    never had."""
    if not known:
        log(f"could not look for an earlier session of #{number}: {detail}; starting a new one")
        return PreviousSession(note=f"opi could not look for an earlier session of #{number} (the job log says "
                                    "why), so this run started a new one.", detail=detail)
    log(f"could not continue the earlier session of #{number}: {detail}; starting a new one")
    return PreviousSession(note=f"The earlier session of #{number} could not be continued (the job log says "
                                "why), so this run started a new one.", detail=detail)


def _marker_of_thread(api: GitHubArtifacts, number: int, bot_login: str | None, own_comment_id: int | None,
                      run_id: int | None, log: Log) -> ReportMarker | None:
    if not bot_login and own_comment_id is None:
        return None
    try:
        found = find_report_marker(api, number, bot_login, own_comment_id=own_comment_id, exclude_run_id=run_id)
    except ArtifactError as exc:  # e.g. no `issues: read`: the listing below may still work
        log(f"could not read the comments of #{number} for the last report: {exc}")
        return None
    if found is None:
        who = bot_login or f"the author of comment {own_comment_id}"
        log(f"no earlier opi report by {who} with a session marker on #{number}; looking among the "
            "repository's artifacts")
    else:
        log(f"the last report on #{number} names run {found.run_id}, artifact {found.artifact_id}, "
            f"session {found.session_id}")
    return found


def _check_session(path: Path, found: ReportMarker | None) -> None:
    """Refuse something we could not resume, before the run depends on it; and a file that is not the
    session the report named."""
    Session.load(path)
    if found is not None:
        header = read_header(path) or {}
        if header.get("id") != found.session_id:
            raise ArtifactError(f"the artifact holds session {str(header.get('id'))[:100]!r}, not "
                                f"{found.session_id!r} as the report says")


def _run_link(repo: str, run_id: int | None, server: str) -> str:
    return f"{server}/{repo}/actions/runs/{run_id}" if run_id is not None else f"{server}/{repo}/actions"


# -- after the run ----------------------------------------------------------------------------------------

@dataclass
class Published:
    upload: UploadResult | None
    markdown: str  # the comment's "Session" section
    marker: str = ""  # the hidden marker for the report (`Report.marker`); "" outside Actions

    @property
    def artifact_id(self) -> int | None:
        return self.upload.artifact_id if self.upload is not None and self.upload.ok else None

    @property
    def artifact_url(self) -> str:
        return (self.upload.url or "") if self.upload is not None and self.upload.ok else ""


def publish_session(path: Path, session_id: str, env: Mapping[str, str], *, number: int | None,
                    log: Log | None = None, backoff: Backoff | None = None,
                    extras: Sequence[Path] = ()) -> Published:
    """Upload the session as `opi-session-<number>-<run id>` (when the runtime variables are there) and
    render where it is and how to resume it. Never raises; the local file is left in place."""
    run_id = env.get("GITHUB_RUN_ID") or "local"
    name = session_artifact_name(number, run_id)
    result = upload_session(path, name, env, backoff=backoff, log=log, extras=extras)
    if result is not None and log is not None:
        log(f"session artifact {name}: " + (
            ("already uploaded" if result.already_uploaded else
             f"uploaded ({result.size} bytes, sha256 {result.sha256})") if result.ok
            else f"upload failed: {result.error}"))
    return Published(result, session_markdown(path, session_id, env, name, result),
                     _marker_for(run_id, result, session_id))


def _marker_for(run_id: str, upload: UploadResult | None, session_id: str) -> str:
    artifact_id = upload.artifact_id if upload is not None and upload.ok else None
    try:
        return marker(run_id, artifact_id, session_id)
    except ValueError:  # a local run ("local") or an odd session id: nothing for a next run to find
        return ""


def session_markdown(path: Path, session_id: str, env: Mapping[str, str], name: str,
                     upload: UploadResult | None) -> str:
    """The comment's "Session" section. In Actions it names no path (the runner's paths mean nothing to a
    reader) and no internal error (the log has it): the resume command is `opi pull <URL>`."""
    repo = env.get("GITHUB_REPOSITORY", "OWNER/REPO")
    run_id = env.get("GITHUB_RUN_ID")
    if not re.fullmatch(_SESSION_ID, session_id):
        # The id comes from the session file, which the agent's process wrote: never let it shape Markdown.
        session_id = "SESSION_ID"
    if not run_id:  # a local run (`--dry-run`): the file is right here
        return f"`{session_id}` at `{path}`; resume it with `opi --resume {shlex.quote(str(path))}`."
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    run_url = f"{server}/{repo}/actions/runs/{run_id}"
    resume = f"opi --resume {session_id}"
    if upload is not None and upload.ok and upload.url:
        gh = f"gh run download {run_id} -R {repo} -n {name} -D ~/.local/share/opi/sessions"
        return (f"`{session_id}`, saved as artifact [{name}]({upload.url}). Resume it locally:\n\n"
                f"```sh\nopi pull {shlex.quote(upload.url)}\n{resume}\n```\n\n"
                f"(or `{gh}` then `{resume}`)")
    if upload is not None and not upload.ok:
        return (f"`{session_id}`: uploading it as artifact `{name}` failed (the job log says why). If the "
                f"workflow uploads the step's `session_path` output as `{name}`, resume it locally with "
                f"`opi pull {run_url}` then `{resume}`.")
    return (f"`{session_id}` is the step's `session_path` output; once the workflow uploads it with "
            f"`actions/upload-artifact` as `{name}`, resume it locally with `opi pull {run_url}` then "
            f"`{resume}`.")
