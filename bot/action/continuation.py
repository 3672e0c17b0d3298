"""Thread continuation: a follow-up `/opi` comment resumes the newest earlier session of its issue or PR.

The action calls, in order:

1. `restore_previous_session(...)` before the agent starts: it lists the repository's artifacts named
   `opi-session-<number>-*`, skips expired ones and the current run's, downloads the newest zip and
   extracts its JSONL under RUNNER_TEMP. Any failure is a note for the comment, never a failed run: the
   agent then starts fresh.
2. The runner opens the run's session as a fork of that file (`open_session(fork=...)`): a new file whose
   header names the earlier session as `parent_session` and which holds a copy of its active branch, so
   the agent's first request carries the earlier context (compaction summary and kept messages, or the
   whole conversation). The header also records repo, issue/PR number, run URL, head commit and model.
3. `publish_session(...)` after the run (and in the post step when the main step died): uploads the
   session as an artifact and renders the comment's "Session" section with the artifact link and the
   exact commands to resume it locally.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.action.artifacts import (
    ArtifactError,
    Backoff,
    GitHubArtifacts,
    RemoteArtifact,
    UploadResult,
    extract_session,
    session_artifact_name,
    thread_prefix,
    upload_session,
)
from bot.agent.session import Session, SessionError

Log = Callable[[str], None]


@dataclass
class PreviousSession:
    """The outcome of looking for an earlier session of the thread."""

    path: Path | None = None  # the downloaded JSONL, when one was found
    artifact: RemoteArtifact | None = None
    note: str = ""  # what happened, for the log and the comment ("" when there was nothing to find)

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
        if artifact.expired or artifact.from_fork:
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
                             backoff: Backoff | None = None) -> PreviousSession:
    """Find and download the thread's newest earlier session. Never raises: a failure becomes a note."""
    log = log or (lambda _message: None)
    if number is None:
        return PreviousSession()  # scheduled runs belong to no thread
    try:
        api = GitHubArtifacts(repo, token, api_url=api_url, log=log, backoff=backoff)
        artifact = find_previous_session(api, number, exclude_run_id=run_id)
        if artifact is None:
            log(f"no earlier opi session for #{number}: starting a new one")
            return PreviousSession()
        path = download_session(api, artifact, dest_dir)
        Session.load(path)  # refuse something we could not resume, before the run depends on it
    except (ArtifactError, SessionError) as exc:
        note = f"could not continue the earlier session of #{number}: {exc}; starting a new one"
        log(note)
        return PreviousSession(note=note)
    except Exception as exc:  # continuing is a bonus: a bug here must not cost the run
        note = f"could not continue the earlier session of #{number} ({type(exc).__name__}: {exc})"
        log(note)
        return PreviousSession(note=note)
    log(f"continuing session from artifact {artifact.name} (run {artifact.run_id})")
    return PreviousSession(path=path, artifact=artifact,
                           note=f"Continues the session of [run {artifact.run_id}]"
                                f"({_run_link(repo, artifact.run_id, server_url)}) (`{artifact.name}`).")


def _run_link(repo: str, run_id: int | None, server: str) -> str:
    return f"{server}/{repo}/actions/runs/{run_id}" if run_id is not None else f"{server}/{repo}/actions"


# -- after the run ----------------------------------------------------------------------------------------

@dataclass
class Published:
    upload: UploadResult | None
    markdown: str  # the comment's "Session" section


def publish_session(path: Path, session_id: str, env: Mapping[str, str], *, number: int | None,
                    log: Log | None = None, backoff: Backoff | None = None,
                    extras: Sequence[Path] = ()) -> Published:
    """Upload the session as `opi-session-<number>-<run id>` (when the runtime variables are there) and
    render where it is and how to resume it. Never raises; the local file is left in place."""
    run_id = env.get("GITHUB_RUN_ID") or "local"
    name = session_artifact_name(number, run_id)
    result = upload_session(path, name, env, backoff=backoff, log=log, extras=extras)
    if result is not None and log is not None:
        log(f"session artifact {name}: " + (f"uploaded ({result.size} bytes, sha256 {result.sha256})"
                                             if result.ok else f"upload failed: {result.error}"))
    return Published(result, session_markdown(path, session_id, env, name, result))


def session_markdown(path: Path, session_id: str, env: Mapping[str, str], name: str,
                     upload: UploadResult | None) -> str:
    repo = env.get("GITHUB_REPOSITORY", "OWNER/REPO")
    run_id = env.get("GITHUB_RUN_ID")
    if not run_id:  # a local run (`--dry-run`): the file is right here
        return f"`{session_id}` at `{path}`; resume it with `opi --resume {shlex.quote(str(path))}`."
    gh = f"gh run download {run_id} -R {repo} -n {name} -D ~/.local/share/opi/sessions"
    resume = f"opi --resume {session_id}"
    if upload is not None and upload.ok and upload.url:
        return (f"`{session_id}`, saved as artifact [{name}]({upload.url}). Resume it locally:\n\n"
                f"```sh\nopi pull {shlex.quote(upload.url)}\n{resume}\n```\n\n"
                f"(or `{gh}` then `{resume}`)")
    if upload is not None and not upload.ok:
        return (f"`{session_id}` at `{path}` on the runner; uploading it as artifact `{name}` "
                f"failed: {upload.error}. The workflow can still upload the `session_path` output with "
                "`actions/upload-artifact`.")
    return (f"`{session_id}` at `{path}` (output `session_path`); upload it with "
            f"`actions/upload-artifact` as `{name}`, then resume it locally with `{gh}` and `{resume}`.")
